"""Peer for bench/generate.ts: Hugging Face transformers on the same weights.

  make-model DIR        GPT-2 124M-shaped random model (HF init, seed 0) saved to DIR
  generate DIR PROMPTS  batched sampling with model.generate (fp32, CPU, KV cache) on any causal LM
                        in DIR; PROMPTS is a JSON file {"prompts": [[ids]...], "new_tokens": N,
                        "threads": T, "pad_id": P}: shorter prompts are padded on the left (masked
                        out), EOS is ignored (min_new_tokens = N); prints {"seconds": ..., "tokens": ...}
"""
import json
import sys
import time

import torch
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel


def make_model(out):
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12,
                     bos_token_id=50256, eos_token_id=50256)
    GPT2LMHeadModel(cfg).save_pretrained(out)


def generate(model_dir, spec_file):
    spec = json.load(open(spec_file))
    torch.set_num_threads(spec["threads"])
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    width = max(len(p) for p in spec["prompts"])
    ids = torch.tensor([[spec["pad_id"]] * (width - len(p)) + p for p in spec["prompts"]])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in spec["prompts"]])
    n = spec["new_tokens"]
    torch.manual_seed(0)
    seconds = float("inf")
    # The best of spec["repeats"] timings, as the bench keeps for every path.
    with torch.inference_mode():
        for _ in range(spec["repeats"]):
            start = time.perf_counter()
            out = model.generate(ids, attention_mask=mask, do_sample=True, temperature=1.0,
                                 top_p=1.0, top_k=0, max_new_tokens=n, min_new_tokens=n,
                                 pad_token_id=spec["pad_id"])
            seconds = min(seconds, time.perf_counter() - start)
    tokens = (out.shape[1] - ids.shape[1]) * out.shape[0]
    print(json.dumps({"seconds": seconds, "tokens": tokens}))


if __name__ == "__main__":
    if sys.argv[1] == "make-model":
        make_model(sys.argv[2])
    elif sys.argv[1] == "generate":
        generate(sys.argv[2], sys.argv[3])
    else:
        sys.exit(f"unknown command {sys.argv[1]}; use make-model or generate")
