// A tiny random GPT-2 in Hugging Face layout, made by transformers (save_pretrained) so that
// engine tests compare against an independent implementation, plus the tiny tokenizer files.
// Weights use a wide init (std 0.3) so greedy outputs vary from token to token.
import { execFileSync } from 'node:child_process';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { writeTinyTokenizer } from './tiny-tokenizer.ts';

export const REPO = join(import.meta.dirname, '..', '..');
export const PYTHON = join(REPO, '.venv', 'bin', 'python');
export const ENGINE = join(REPO, 'engine', 'build', 'opsr-engine');

interface TinySpec {
  nEmbd?: number;
  nLayer?: number;
  nHead?: number;
  nPositions?: number;
  seed?: number;
}

const MAKE_MODEL = `
import sys, json, torch
from transformers import GPT2Config, GPT2LMHeadModel
s = json.loads(sys.argv[2])
torch.manual_seed(s["seed"])
cfg = GPT2Config(vocab_size=s["vocab"], n_positions=s["pos"], n_embd=s["embd"], \
n_layer=s["layer"], n_head=s["head"],
                 bos_token_id=s["vocab"] - 1, eos_token_id=s["vocab"] - 1)
m = GPT2LMHeadModel(cfg)
with torch.no_grad():
    for n, p in m.named_parameters():
        if n.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")): p.normal_(1.0, 0.1)
        else: p.normal_(0.0, 0.3)
m.save_pretrained(sys.argv[1])
`;

/**
 * Writes config.json, model.safetensors, generation_config.json and the tokenizer files into dir.
 */
export async function makeTinyModel(dir: string, spec: TinySpec = {}): Promise<void> {
  const vocab = await writeTinyTokenizer(dir);
  const s = {
    vocab,
    pos: spec.nPositions ?? 64,
    embd: spec.nEmbd ?? 32,
    layer: spec.nLayer ?? 2,
    head: spec.nHead ?? 4,
    seed: spec.seed ?? 0,
  };
  execFileSync(PYTHON, ['-c', MAKE_MODEL, dir, JSON.stringify(s)], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
}

/**
 * A tiny GPT-2 made by the engine itself (`opsr-engine init`, Hugging Face's initialization) with
 * the chat-template tokenizer: the model the sampler tests serve. Returns the vocabulary size.
 */
export async function initTinyGpt2(dir: string, spec: TinySpec = {}): Promise<number> {
  const vocab = await writeTinyTokenizer(dir, { chatTemplate: true });
  const cfg = `${dir}.init-config.json`;
  await writeFile(
    cfg,
    JSON.stringify({
      n_embd: spec.nEmbd ?? 32,
      n_layer: spec.nLayer ?? 2,
      n_head: spec.nHead ?? 2,
      n_positions: spec.nPositions ?? 256,
      vocab_size: vocab,
      layer_norm_epsilon: 1e-5,
      n_inner: null,
      activation_function: 'gelu_new',
    }),
  );
  execFileSync(ENGINE, ['init', '--config', cfg, '--out', dir, '--seed', String(spec.seed ?? 0)], {
    stdio: 'pipe',
  });
  await rm(cfg);
  return vocab;
}

const GREEDY = `
import json, sys, torch
from transformers import AutoModelForCausalLM
m = AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.float32).eval()
m.generation_config.eos_token_id = None
m.generation_config.pad_token_id = 0
out = []
for p in json.loads(sys.argv[2]):
    ids = torch.tensor([p])
    with torch.no_grad():
        g = m.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=int(sys.argv[3]), \
do_sample=False,
                       output_logits=True, return_dict_in_generate=True)
    toks = g.sequences[0, len(p):].tolist()
    out.append({"tokens": toks, "logprobs": [torch.log_softmax(l[0].float(), -1)[t].item() for l, \
t in zip(g.logits, toks)]})
print(json.dumps(out))
`;

/** Hugging Face transformers' greedy generate (no EOS stop) for each prompt, any architecture. */
export function transformersGreedy(
  dir: string,
  prompts: number[][],
  maxNewTokens: number,
): { tokens: number[]; logprobs: number[] }[] {
  const out = execFileSync(
    PYTHON,
    ['-c', GREEDY, dir, JSON.stringify(prompts), String(maxNewTokens)],
    {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  return JSON.parse(out);
}
