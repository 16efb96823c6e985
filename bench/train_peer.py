"""PyTorch peer of `npm run bench:train`: the same DPO step as bench/train_step.c, written plainly
in PyTorch eager fp32 (transformers' GPT2LMHeadModel, full logits, log_softmax, gather, mask).

  train_peer.py PAIRS PROMPT_LEN RESPONSE_LEN STEPS THREADS   -> one JSON line
"""
import json
import sys
import time

import torch
import torch.nn.functional as F
from transformers import GPT2Config, GPT2LMHeadModel


def main():
    pairs, plen, rlen, steps, threads = (int(x) for x in sys.argv[1:6])
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = GPT2LMHeadModel(cfg).float().train()
    B, T = 2 * pairs, plen + rlen
    ids = torch.randint(0, cfg.vocab_size, (B, T))
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
                      "torch": torch.__version__}))


if __name__ == "__main__":
    main()
