// The dimensions of a Hugging Face checkpoint (config.json) that opsr checks work against before
// spending it: the context every sequence must fit, and the memory training needs. GPT-2 names
// its fields n_positions / n_embd / n_layer, Llama, Mistral and Qwen2 max_position_embeddings /
// hidden_size / num_hidden_layers.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';

interface ModelDims {
  file: string; // <modelDir>/config.json
  context: number; // the longest sequence the model takes
  contextField: string; // the config.json field it comes from
  nEmbd: number;
  nLayer: number;
  vocabSize: number;
  intermediate: number | null; // the MLP width where config.json names it (Llama family)
}

// Reads config.json; null when it is missing or lacks a dimension (the model directory check and
// the engine name what is wrong).
export async function readModelDims(modelDir: string): Promise<ModelDims | null> {
  const file = join(modelDir, 'config.json');
  let cfg: Record<string, unknown>;
  try {
    cfg = JSON.parse(await readFile(file, 'utf8')) as Record<string, unknown>;
  } catch {
    return null;
  }
  if (!cfg || typeof cfg !== 'object') return null;
  const dim = (...keys: string[]): [number, string] | null => {
    for (const k of keys)
      if (Number.isSafeInteger(cfg[k]) && (cfg[k] as number) > 0) return [cfg[k] as number, k];
    return null;
  };
  const context = dim('n_positions', 'max_position_embeddings');
  const nEmbd = dim('n_embd', 'hidden_size');
  const nLayer = dim('n_layer', 'num_hidden_layers');
  const vocab = dim('vocab_size');
  if (!context || !nEmbd || !nLayer || !vocab) return null;
  return {
    file,
    context: context[0],
    contextField: context[1],
    nEmbd: nEmbd[0],
    nLayer: nLayer[0],
    vocabSize: vocab[0],
    intermediate: dim('intermediate_size')?.[0] ?? null,
  };
}

// A floor under the parameter count: embeddings plus, per block, attention (4 d^2) and the MLP
// (GPT-2's 8 d^2, or the Llama family's 3 d x intermediate).
function parameterCount(d: ModelDims): number {
  const mlp = d.intermediate === null ? 8 * d.nEmbd * d.nEmbd : 3 * d.nEmbd * d.intermediate;
  return d.vocabSize * d.nEmbd + d.nLayer * (4 * d.nEmbd * d.nEmbd + mlp);
}

// fp32 weights, gradients and AdamW's two moments: a floor under what training allocates.
export const trainingBytes = (d: ModelDims) => 16 * parameterCount(d);
