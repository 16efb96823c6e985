# Engine <-> transformers checkpoint interop (used by test/engine/safetensors.test.ts).
#   make DIR: DIR/src (a random fp32 GPT-2 saved by transformers), DIR/src-bf16-sharded (the same
#             model in bf16, sharded with a small max_shard_size), DIR/data.bin (one sft record).
#   compare DIR NAME=KIND...: loads each engine-written DIR/NAME with transformers and prints, per
#             name, whether every tensor is bit-identical to the expected one (KIND: f32, bf16 or
#             f16 = the fp32 source cast by torch; from-bf16 = the bf16 source upcast to fp32) and
#             the max |logit difference| against that expected model.
import json, struct, sys
import torch
from safetensors.torch import load_file
from transformers import GPT2Config, GPT2LMHeadModel

def make(d):
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=64, n_positions=32, n_embd=32, n_layer=2, n_head=4, bos_token_id=63, eos_token_id=63)
    m = GPT2LMHeadModel(cfg)
    with torch.no_grad():  # wide weights so bf16 and f16 rounding shows in the logits
        for _, p in m.named_parameters():
            p.normal_(0.0, 0.3)
        # Rounding ties (bf16, f16), f16 subnormals and their ties, an f32 subnormal: saving must
        # round each to nearest-even exactly as torch does.
        special = [1 + 2**-8, 1 + 3 * 2**-8, -(1 + 3 * 2**-8), 1 + 2**-11, 1 + 3 * 2**-11, 2**-25, 3 * 2**-25,
                   5 * 2**-26, -3 * 2**-25, 2**-15, 1e-40, 0.1]
        m.transformer.wte.weight[0, :len(special)] = torch.tensor(special)
    m.save_pretrained(f"{d}/src")
    m.to(torch.bfloat16).save_pretrained(f"{d}/src-bf16-sharded", max_shard_size="20KB")
    with open(f"{d}/data.bin", "wb") as f:
        f.write(b"OPSRDATA" + struct.pack("<4I", 1, 1, 1, 0) + struct.pack("<5I", 2, 1, 1, 2, 3))

def weights(d):
    import glob, os
    out = {}
    for f in sorted(glob.glob(os.path.join(d, "*.safetensors"))):
        out.update(load_file(f))
    return out

def compare(d, specs):
    src = GPT2LMHeadModel.from_pretrained(f"{d}/src").eval()
    ids = torch.tensor([[1, 5, 9, 13, 40, 63, 0, 7]])
    res = {}
    for spec in specs:
        name, kind = spec.split("=")
        if kind == "from-bf16":
            ref = GPT2LMHeadModel.from_pretrained(f"{d}/src-bf16-sharded", dtype=torch.bfloat16).float()
        else:
            ref = GPT2LMHeadModel.from_pretrained(f"{d}/src").to({"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}[kind])
        got = GPT2LMHeadModel.from_pretrained(f"{d}/{name}", dtype="auto").eval()
        want = {k: v for k, v in ref.state_dict().items() if not k.endswith((".attn.bias", ".masked_bias")) and k != "lm_head.weight"}
        saved = weights(f"{d}/{name}")
        exact = sorted(saved) == sorted(want) and all(
            saved[k].dtype == want[k].dtype and torch.equal(saved[k].view(-1).view(torch.uint8) if saved[k].numel() else saved[k],
                                                           want[k].contiguous().view(-1).view(torch.uint8) if want[k].numel() else want[k])
            for k in want)
        with torch.no_grad():
            diff = (got(ids).logits.float() - ref.eval()(ids).logits.float()).abs().max().item()
        res[name] = {"exact": exact, "dtype": str(got.dtype), "logit_diff": diff, "tensors": len(saved)}
    print(json.dumps(res))

if __name__ == "__main__":
    make(sys.argv[2]) if sys.argv[1] == "make" else compare(sys.argv[2], sys.argv[3:])
