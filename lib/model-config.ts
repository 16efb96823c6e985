// The dimensions of a Hugging Face GPT-2 checkpoint (config.json) that opsr checks work against
// before spending it: the context every sequence must fit, and the memory training needs.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';

export interface ModelDims {
  file: string;      // <modelDir>/config.json
  context: number;   // n_positions: the longest sequence the model takes
  nEmbd: number;
  nLayer: number;
  vocabSize: number;
}

// Reads config.json; null when it is missing or lacks a dimension (the engine names what is wrong).
export async function readModelDims(modelDir: string): Promise<ModelDims | null> {
  const file = join(modelDir, 'config.json');
  let cfg: Record<string, unknown>;
  try {
    cfg = JSON.parse(await readFile(file, 'utf8')) as Record<string, unknown>;
  } catch {
    return null;
  }
  const dim = (k: string) => (Number.isSafeInteger(cfg?.[k]) && (cfg[k] as number) > 0 ? (cfg[k] as number) : null);
  const [context, nEmbd, nLayer, vocabSize] = ['n_positions', 'n_embd', 'n_layer', 'vocab_size'].map(dim);
  if (context === null || nEmbd === null || nLayer === null || vocabSize === null) return null;
  return { file, context, nEmbd, nLayer, vocabSize };
}

// GPT-2's parameter count: embeddings, 12 d^2 + 13 d per block, the final layer norm.
export function parameterCount(d: ModelDims): number {
  return (d.vocabSize + d.context) * d.nEmbd + d.nLayer * (12 * d.nEmbd * d.nEmbd + 13 * d.nEmbd) + 2 * d.nEmbd;
}

// fp32 weights, gradients and AdamW's two moments: a floor under what training allocates.
export const trainingBytes = (d: ModelDims) => 16 * parameterCount(d);
