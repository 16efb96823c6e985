// Tiny random models of the Llama family in Hugging Face layout, made by transformers
// (save_pretrained), with the tiny tokenizer files: llama (GQA, untied head, llama3 RoPE
// scaling), qwen2 (q/k/v biases, tied head), mistral (a sliding window of 8 tokens). Weights use a
// wide init so greedy outputs vary from token to token.
import { execFileSync } from 'node:child_process';
import { writeTinyTokenizer } from './tiny-tokenizer.ts';
import { PYTHON } from './tiny-gpt2.ts';

export type LlamaArch = 'llama' | 'qwen2' | 'mistral';

const MAKE_MODEL = `
import sys, json, torch
from transformers import (LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM,
                          MistralConfig, MistralForCausalLM)
s = json.loads(sys.argv[2])
torch.manual_seed(s["seed"])
common = dict(vocab_size=s["vocab"], max_position_embeddings=s["pos"], hidden_size=48,
              intermediate_size=80,
              num_hidden_layers=2, num_attention_heads=6, num_key_value_heads=2, rms_norm_eps=1e-5,
              bos_token_id=s["vocab"] - 1, eos_token_id=s["vocab"] - 1)
if s["arch"] == "llama":
    m = LlamaForCausalLM(LlamaConfig(**common, tie_word_embeddings=False, rope_parameters={
        "rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 32}))
elif s["arch"] == "qwen2":
    m = Qwen2ForCausalLM(Qwen2Config(**common, tie_word_embeddings=True,
                                     rope_parameters={"rope_type": "default", "rope_theta": 1e6}))
else:
    m = MistralForCausalLM(MistralConfig(**common, sliding_window=8, tie_word_embeddings=False))
with torch.no_grad():
    for n, p in m.named_parameters():
        if n.endswith("norm.weight"): p.normal_(1.0, 0.1)
        else: p.normal_(0.0, 0.3)
m.save_pretrained(sys.argv[1])
`;

/** Writes config.json, model.safetensors, generation_config.json and the tokenizer files. */
export async function makeTinyLlama(
  dir: string,
  arch: LlamaArch,
  nPositions = 128,
  seed = 0,
): Promise<void> {
  const vocab = await writeTinyTokenizer(dir);
  const s = { arch, vocab, pos: nPositions, seed };
  execFileSync(PYTHON, ['-c', MAKE_MODEL, dir, JSON.stringify(s)], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
}
