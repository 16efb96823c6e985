"""transformers' answers on a real model directory, for the engine and server tests.
Usage: smollm2_reference.py DIR REQUEST_JSON [DIR ...], where the request has
  logprobs: [{"prompt": [ids], "response": [ids]}]  -> sum of log p(response token | before)
  greedy: {"prompts": [[ids]], "max_new_tokens": N}  -> greedy continuation ids (EOS included)
Prints JSON {"logprobs": [...], "greedy": [[ids]], "logprobs_per_dir": [[...] per DIR]}: the
log-probs for every DIR given (one process: torch and transformers load once), greedy for the
first."""
import json
import sys

import torch
from transformers import AutoModelForCausalLM, GenerationConfig

torch.manual_seed(0)
# One thread: the tests share two cores with the engine and the server.
torch.set_num_threads(1)


def logprobs(d, cases):
    model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
    out = []
    with torch.no_grad():
        for case in cases:
            ids = torch.tensor([case["prompt"] + case["response"]])
            logp = torch.log_softmax(model(ids).logits[0].double(), dim=-1)
            p = len(case["prompt"])
            targets = ids[0, p:]
            out.append(float(logp[p - 1:-1].gather(1, targets[:, None]).sum()))
    return out


def main():
    d, req = sys.argv[1], json.loads(sys.argv[2])
    out = {"logprobs_per_dir": [logprobs(m, req.get("logprobs", [])) for m in [d] + sys.argv[3:]],
           "greedy": []}
    out["logprobs"] = out["logprobs_per_dir"][0]
    g = req.get("greedy")
    if g:
        # Greedy runs before its test starts the server, so it has both cores (one thread took
        # over 5 minutes on CI for these 20 x 32 tokens).
        torch.set_num_threads(2)
        model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
        with torch.no_grad():
            gen = GenerationConfig.from_pretrained(d)
            for prompt in g["prompts"]:
                ids = torch.tensor([prompt])
                res = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                     max_new_tokens=g["max_new_tokens"],
                                     eos_token_id=gen.eos_token_id, pad_token_id=gen.eos_token_id)
                out["greedy"].append(res[0, len(prompt):].tolist())
    print(json.dumps(out))


main()
