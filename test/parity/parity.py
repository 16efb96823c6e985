"""PyTorch side of the engine parity test (test/engine/parity.test.ts), for each architecture.

  make DIR ARCH  a random model (fp32, dropout 0) of ARCH saved to DIR/model, preference and SFT
                 data files in the engine's format, reference log-probs DIR/ref.bin. ARCH:
                 gpt2; llama (GQA, untied head, attention and MLP biases, llama3 RoPE scaling,
                 head_dim != hidden/heads); mistral (GQA with one KV head, tied, a sliding window
                 shorter than the sequences); qwen2 (q/k/v biases, tied, GQA)
  compare DIR    reads the engine's dumps (DIR/engine/, its parameter table in meta.json) and
                 trained models (DIR/train-<loss>/final), recomputes everything in PyTorch and
                 prints one JSON object of relative errors

Relative error of a tensor: max|engine - torch| / max(max|torch|, 1e-30).
"""
import json
import struct
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import (AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM,
                          MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM)

V, P, L, C, NH = 101, 64, 2, 64, 4
SEED = 1234
# name, kind, beta, gamma, label smoothing (TRL semantics, see engine/src/losses.h)
LOSSES = [("dpo", "dpo", 0.1, 0, 0), ("dpo_ls", "dpo", 0.5, 0, 0.2), ("simpo", "simpo", 2.0, 0.5, 0),
          ("simpo_ls", "simpo", 2.0, 0.5, 0.1), ("ipo", "ipo", 0.1, 0, 0), ("hinge", "hinge", 0.1, 0, 0),
          ("sft", "sft", 0, 0, 0)]
# runs of `opsr-engine train` for 3 AdamW steps, each step over all records: "loss" names the
# LOSSES entry PyTorch trains with (one full batch per step); micro/accum split the engine's step
# into micro-batches with gradient accumulation, which must give the same update
TRAIN = [{"name": "sft", "loss": "sft"}, {"name": "dpo", "loss": "dpo"},
         {"name": "dpo_accum", "loss": "dpo", "micro": 2, "accum": 2},
         {"name": "simpo", "loss": "simpo"}, {"name": "ipo", "loss": "ipo"}, {"name": "hinge", "loss": "hinge"},
         # decay as a large part of the update: lr * wd * |w| is up to ~the Adam step itself, so an
         # engine that skipped decay (or decayed other tensors) fails both the weights and the change
         {"name": "sft_wd", "loss": "sft", "weight_decay": 10.0}]
LR, WD, CLIP, STEPS = 1e-3, 0.1, 1.0, 3
def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-30))


def write_data(path, kind, records):
    body = []
    for r in records:
        body += [len(x) for x in r]
        for x in r:
            body += x
    with open(path, "wb") as f:
        f.write(b"OPSRDATA" + struct.pack("<4I", 1, kind, len(records), 0))
        f.write(struct.pack(f"<{len(body)}I", *body))


def dataset(seed):
    g = np.random.default_rng(seed)
    ids = lambda n: [int(x) for x in g.integers(0, V, n)]
    pref = [(ids(int(g.integers(2, 11))), ids(int(g.integers(2, 13))), ids(int(g.integers(2, 13))))
            for _ in range(4)]
    sft = [(ids(int(g.integers(2, 11))), ids(int(g.integers(3, 15)))) for _ in range(4)]
    return pref, sft


def build_model(arch):
    torch.manual_seed(SEED)
    if arch == "gpt2":
        cfg = GPT2Config(vocab_size=V, n_positions=P, n_embd=C, n_layer=L, n_head=NH, resid_pdrop=0.0,
                         embd_pdrop=0.0, attn_pdrop=0.0, layer_norm_epsilon=1e-5,
                         activation_function="gelu_new", attn_implementation="eager",
                         bos_token_id=V - 1, eos_token_id=V - 1)
        model = GPT2LMHeadModel(cfg)
    else:
        common = dict(vocab_size=V, max_position_embeddings=P, hidden_size=C, intermediate_size=96,
                      num_hidden_layers=L, num_attention_heads=NH, attn_implementation="eager",
                      bos_token_id=V - 1, eos_token_id=V - 1)
        if arch == "llama":
            cfg = LlamaConfig(**common, num_key_value_heads=2, head_dim=24, rms_norm_eps=1e-5,
                              attention_bias=True, mlp_bias=True, tie_word_embeddings=False,
                              rope_parameters={"rope_type": "llama3", "rope_theta": 500.0, "factor": 8.0,
                                               "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                               "original_max_position_embeddings": 16})
            model = LlamaForCausalLM(cfg)
        elif arch == "mistral":
            cfg = MistralConfig(**common, num_key_value_heads=1, rms_norm_eps=1e-5, sliding_window=6,
                                tie_word_embeddings=True, rope_parameters={"rope_type": "default", "rope_theta": 1e4})
            model = MistralForCausalLM(cfg)
        else:
            cfg = Qwen2Config(**common, num_key_value_heads=2, rms_norm_eps=1e-6, tie_word_embeddings=True,
                              rope_parameters={"rope_type": "default", "rope_theta": 1e6})
            model = Qwen2ForCausalLM(cfg)
        with torch.no_grad():  # weights larger than the 0.02 init, so every tensor moves the logits
            for p in model.parameters():
                if p.dim() == 2:
                    p.mul_(5.0)
    with torch.no_grad():  # non-trivial norm weights and biases, as after some training
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    return model


def load_model(d):
    model = AutoModelForCausalLM.from_pretrained(d, attn_implementation="eager", dtype=torch.float32)
    model.eval()
    return model


def seq_logps(model, prompt, resp):
    """Per-position logits and the summed response log-prob (positions predicting resp)."""
    ids = torch.tensor([prompt + resp])
    logits = model(ids[:, :-1]).logits[0]
    lp = F.log_softmax(logits, dim=-1)
    tgt = ids[0, 1:]
    pos = torch.arange(len(prompt) - 1, len(prompt) + len(resp) - 1)
    return logits, lp[pos, tgt[pos]].sum(), len(resp)


def pref_logps(model, pref):
    pc, pr, nc, nr, logits = [], [], [], [], []
    for side, out_lp, out_n in ((1, pc, nc), (2, pr, nr)):
        for r in pref:
            lg, s, n = seq_logps(model, r[0], r[side])
            logits.append(lg); out_lp.append(s); out_n.append(n)
    return torch.stack(pc), torch.stack(pr), torch.tensor(nc, dtype=torch.float32), \
        torch.tensor(nr, dtype=torch.float32), logits


def logsig(x):
    return F.logsigmoid(x)


def pref_loss(kind, beta, gamma, ls, pc, pr, nc, nr, rc, rr):
    if kind in ("simpo", "ipo"):
        pc, pr = pc / nc, pr / nr
        rc, rr = rc / nc, rr / nr
    if kind == "simpo":
        z = beta * (pc - pr) - gamma
        return (-(1 - ls) * logsig(z) - ls * logsig(-z)).mean()
    h = (pc - rc) - (pr - rr)
    if kind == "dpo":
        return (-(1 - ls) * logsig(beta * h) - ls * logsig(-beta * h)).mean()
    if kind == "ipo":
        return ((h - 1 / (2 * beta)) ** 2).mean()
    return torch.relu(1 - beta * h).mean()


def sft_loss(model, sft):
    total, n = 0, 0
    for p, r in sft:
        _, s, k = seq_logps(model, p, r)
        total, n = total + s, n + k
    return -total / n


def loss_of(model, spec, pref, sft, ref):
    name, kind, beta, gamma, ls = spec
    if kind == "sft":
        return sft_loss(model, sft)
    pc, pr, nc, nr, _ = pref_logps(model, pref)
    if ref is None:  # simpo has no reference
        ref = torch.zeros(2 * len(pref))
    return pref_loss(kind, beta, gamma, ls, pc, pr, nc, nr, ref[:len(pref)], ref[len(pref):])


def flat_tensors(state, tensors):
    """Engine-ordered tensors (its table: [HF name with %d for the layer, per-layer]) from an HF
    state dict: {name: np.array flattened}."""
    out = {}
    for name, per_layer in tensors:
        parts = [state[name % i] for i in range(L)] if per_layer else [state[name]]
        out[name] = np.concatenate([p.detach().float().numpy().ravel() for p in parts])
    return out


def make(d, arch):
    d = Path(d)
    model = build_model(arch)
    model.save_pretrained(d / "model", safe_serialization=True)
    pref, sft = dataset(SEED)
    write_data(d / "pref.bin", 2, pref)
    write_data(d / "sft.bin", 1, sft)
    with torch.no_grad():  # reference log-probs that differ from the policy's, so h != 0
        pc, pr, _, _, _ = pref_logps(load_model(d / "model"), pref)
    ref = torch.cat([pc, pr]) - torch.linspace(0.5, 2.0, 2 * len(pref))
    ref.numpy().astype("<f4").tofile(d / "ref.bin")
    for run in TRAIN:  # the engine flags of each run
        spec = next(x for x in LOSSES if x[0] == run["loss"])
        run.update({"kind": spec[1], "beta": spec[2], "gamma": spec[3], "weight_decay": run.get("weight_decay", WD)})
    json.dump({"arch": arch, "losses": [list(x) for x in LOSSES], "train": TRAIN, "lr": LR, "weight_decay": WD,
               "grad_clip": CLIP, "steps": STEPS, "pairs": len(pref), "sft_records": len(sft)},
              open(d / "spec.json", "w"))


def train_torch(model_dir, spec, pref, sft, wd):
    model = load_model(model_dir)
    ref = None
    if spec[1] in ("dpo", "ipo", "hinge"):  # the engine's default: a pre-pass with the start weights
        with torch.no_grad():
            pc, pr, _, _, _ = pref_logps(model, pref)
        ref = torch.cat([pc, pr])
    params = list(model.parameters())  # tied lm_head appears once
    decay = [p for p in params if p.dim() == 2]
    rest = [p for p in params if p.dim() != 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": wd}, {"params": rest, "weight_decay": 0.0}],
                            lr=LR, betas=(0.9, 0.999), eps=1e-8, foreach=False)
    for _ in range(STEPS):
        opt.zero_grad()
        loss_of(model, spec, pref, sft, ref).backward()
        torch.nn.utils.clip_grad_norm_(params, CLIP)
        opt.step()
    return model


def compare(d):
    d = Path(d)
    e = d / "engine"
    meta = json.load(open(e / "meta.json"))
    tensors = meta["tensors"]
    pref, sft = dataset(SEED)
    model = load_model(d / "model")
    ref = torch.from_numpy(np.fromfile(d / "ref.bin", "<f4"))
    res = {"logits": 0.0, "logps": {}, "loss": {}, "grads": {}, "weights": {}, "updates": {}, "no_decay": {}}

    # logits and log-probs: engine padded batches [B, T, V], valid prefix of each row compared
    with torch.no_grad():
        pc, pr, nc, nr, logits = pref_logps(model, pref)
        B, T = 2 * len(pref), meta["pref_T"]
        el = np.fromfile(e / "logits_pref.bin", "<f4").reshape(B, T, V)
        res["logits"] = max(rel(el[b, :lg.shape[0]], lg.numpy()) for b, lg in enumerate(logits))
        res["logps"]["pref"] = rel(np.fromfile(e / "logp_pref.bin", "<f4"), torch.cat([pc, pr]).numpy())
        sl = [seq_logps(model, p, r)[1] for p, r in sft]
        res["logps"]["sft"] = rel(np.fromfile(e / "logp_sft.bin", "<f4"), torch.stack(sl).numpy())
        # shared-prompt path: chosen and rejected interleaved
        res["logps"]["pairs"] = rel(np.fromfile(e / "logp_pairs.bin", "<f4"), torch.stack([pc, pr], 1).reshape(-1).numpy())

    for spec in LOSSES:
        name = spec[0]
        model.zero_grad()
        loss = loss_of(model, spec, pref, sft, ref)
        loss.backward()
        res["loss"][name] = rel([meta["loss"][name]], [loss.item()])
        grads = flat_tensors({n: p.grad for n, p in model.named_parameters()}, tensors)
        eg = np.fromfile(e / f"grad_{name}.bin", "<f4")
        res["grads"][name], off = {}, 0
        for short in grads:
            n = grads[short].size
            res["grads"][name][short] = rel(eg[off:off + n], grads[short])
            off += n
        if off != eg.size:
            raise SystemExit(f"grad_{name}.bin: {eg.size} floats, expected {off}")
        if name == "dpo":  # the shared-prompt path (gpt2_forward_pairs) against the same loss
            eg, res["grads"]["dpo_pairs"], off = np.fromfile(e / "grad_dpo_pairs.bin", "<f4"), {}, 0
            for short in grads:
                n = grads[short].size
                res["grads"]["dpo_pairs"][short] = rel(eg[off:off + n], grads[short])
                off += n

    start = flat_tensors(load_file(d / "model" / "model.safetensors"), tensors)
    for run in TRAIN:
        name = run["name"]
        spec = next(s for s in LOSSES if s[0] == run["loss"])
        want = flat_tensors(dict(train_torch(d / "model", spec, pref, sft, run.get("weight_decay", WD)).named_parameters()),
                            tensors)
        got = flat_tensors(load_file(d / f"train-{name}" / "final" / "model.safetensors"), tensors)
        res["weights"][name] = {k: rel(got[k], want[k]) for k in want}
        res["updates"][name] = {k: rel(got[k] - start[k], want[k] - start[k]) for k in want}
        if run.get("weight_decay", WD) != WD:  # how far the same run without decay lands: the
            # errors an engine that dropped decay would show, so the tolerances above can catch it
            nod = flat_tensors(dict(train_torch(d / "model", spec, pref, sft, 0.0).named_parameters()), tensors)
            res["no_decay"][name] = {"weights": max(rel(nod[k], want[k]) for k in want),
                                     "updates": max(rel(nod[k] - start[k], want[k] - start[k]) for k in want)}
    print(json.dumps(res))


if __name__ == "__main__":
    torch.set_num_threads(1)
    if sys.argv[1] == "make":
        make(sys.argv[2], sys.argv[3])
    else:
        compare(sys.argv[2])
