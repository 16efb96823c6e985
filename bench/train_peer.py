"""PyTorch peer of `npm run bench:train`: the same DPO step as bench/train_step.c, written plainly
in PyTorch eager fp32 (full logits, log_softmax, gather, mask): transformers' GPT2LMHeadModel with
random weights (MODEL gpt2) or the LlamaForCausalLM of an HF directory's real weights.

  train_peer.py gpt2|MODEL_DIR PAIRS PROMPT_LEN RESPONSE_LEN STEPS THREADS ATTN   -> one JSON line
ATTN: the attention implementation, eager or sdpa. peak_rss_mb is the process's VmHWM after the
steps (the interpreter, torch and transformers included, as the engine's count its whole process).
"""
import json
import sys
import time

import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel


def status_mb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    return -1.0


def load(name, attn):
    if name == "gpt2":
        torch.manual_seed(0)
        cfg = GPT2Config(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12,
                         resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                         attn_implementation=attn)
        return GPT2LMHeadModel(cfg).float()
    return AutoModelForCausalLM.from_pretrained(name, dtype=torch.float32, attn_implementation=attn)


def main():
    name = sys.argv[1]
    pairs, plen, rlen, steps, threads = (int(x) for x in sys.argv[2:7])
    torch.set_num_threads(threads)
    model = load(name, sys.argv[7]).train()
    loaded_mb = status_mb("VmRSS")
    torch.manual_seed(0)
    B, T, V = 2 * pairs, plen + rlen, model.config.vocab_size
    ids = torch.randint(0, V, (B, T))
    ids[pairs:, :plen] = ids[:pairs, :plen]  # chosen and rejected share the prompt
    mask = torch.zeros(B, T - 1)
    mask[:, plen - 1:] = 1.0  # positions predicting the response
    ref = torch.full((B,), -10.8 * rlen)  # precomputed reference log-probs
    beta = 0.1
    times, loss = [], None
    for it in range(steps + 1):  # iteration 0 warms up
        t0 = time.perf_counter()
        model.zero_grad(set_to_none=False)
        logits = model(ids[:, :-1]).logits
        logp = torch.gather(F.log_softmax(logits, dim=-1), 2, ids[:, 1:, None]).squeeze(2)
        seq = (logp * mask).sum(-1)
        h = (seq[:pairs] - ref[:pairs]) - (seq[pairs:] - ref[pairs:])
        loss = -F.logsigmoid(beta * h).mean()
        loss.backward()
        if it > 0:
            times.append(time.perf_counter() - t0)
    step_s = sum(times) / len(times)
    print(json.dumps({"step_s": step_s, "best_step_s": min(times), "tokens_per_s": B * T / step_s,
                      "loss": loss.item(), "threads": torch.get_num_threads(),
                      "attn_implementation": model.config._attn_implementation,
                      "torch": torch.__version__, "loaded_rss_mb": loaded_mb,
                      "peak_rss_mb": status_mb("VmHWM")}))


if __name__ == "__main__":
    main()
