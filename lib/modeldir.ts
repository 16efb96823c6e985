// What opsr accepts as a model directory: a Hugging Face checkpoint (config.json plus
// model.safetensors, or model.safetensors.index.json and its shards) of an architecture the engine
// trains, not quantized. Checked by `opsr validate`, `opsr run` and prepareRun before anything is
// sampled; each refusal names the file and what is allowed.
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';

const SUPPORTED_MODEL_TYPES = ['gpt2', 'llama', 'mistral', 'qwen2'] as const;

const SINGLE_WEIGHTS = 'model.safetensors';
export const SHARD_INDEX = 'model.safetensors.index.json';

export class ModelDirError extends Error {}

async function isFile(p: string): Promise<boolean> {
  return stat(p).then(
    (s) => s.isFile(),
    () => false,
  );
}

async function readJsonObject(file: string): Promise<Record<string, unknown>> {
  let value: unknown;
  try {
    value = JSON.parse(await readFile(file, 'utf8'));
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'ENOENT') {
      throw new ModelDirError(`${file} is missing (a Hugging Face model directory has one)`);
    }
    throw new ModelDirError(`${file} is not readable JSON: ${e.message}`);
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new ModelDirError(`${file} must hold a JSON object`);
  }
  return value as Record<string, unknown>;
}

/**
 * The weight files of a directory, relative to it: the shards named by the index (sorted, each
 * once) when there is an index, else model.safetensors. Existence is not checked here.
 */
export async function weightFileNames(dir: string): Promise<string[]> {
  const index = join(dir, SHARD_INDEX);
  if (!(await isFile(index))) return [SINGLE_WEIGHTS];
  const map = (await readJsonObject(index)).weight_map;
  if (!map || typeof map !== 'object' || Array.isArray(map) || Object.keys(map).length === 0) {
    throw new ModelDirError(`${index}: weight_map must be a non-empty object {tensor: shard file}`);
  }
  const shards = new Set<string>();
  for (const [tensor, shard] of Object.entries(map)) {
    if (typeof shard !== 'string' || shard === '' || /[/\\]/.test(shard)) {
      throw new ModelDirError(
        `${index}: weight_map["${tensor}"] must name a file in the ` +
          `directory; got ${JSON.stringify(shard)}`,
      );
    }
    shards.add(shard);
  }
  return [...shards].sort();
}

interface ModelDirInfo {
  modelType: string;
  /** Absolute paths of the weight files (model.safetensors or the shards). */
  weights: string[];
  sharded: boolean;
}

/** Throws a ModelDirError naming the file for anything opsr cannot train or sample. */
export async function checkModelDir(dir: string): Promise<ModelDirInfo> {
  if (
    !(await stat(dir).then(
      (s) => s.isDirectory(),
      () => false,
    ))
  ) {
    throw new ModelDirError(`${dir} is not a directory (a Hugging Face model directory expected)`);
  }
  const configFile = join(dir, 'config.json');
  const config = await readJsonObject(configFile);
  const modelType = config.model_type;
  const supported: readonly string[] = SUPPORTED_MODEL_TYPES;
  if (typeof modelType !== 'string' || !supported.includes(modelType)) {
    throw new ModelDirError(
      `${configFile}: model_type ${JSON.stringify(modelType)} is not ` +
        `supported; allowed: ${SUPPORTED_MODEL_TYPES.join(', ')}`,
    );
  }
  if (config.quantization_config !== undefined && config.quantization_config !== null) {
    throw new ModelDirError(
      `${configFile}: has a quantization_config; opsr trains full-precision ` +
        'checkpoints (F32, BF16 or F16 safetensors): use the unquantized model',
    );
  }
  const sharded = await isFile(join(dir, SHARD_INDEX));
  const names = await weightFileNames(dir);
  for (const name of names) {
    if (!(await isFile(join(dir, name)))) {
      throw new ModelDirError(
        sharded
          ? `${join(dir, name)} is missing (a shard named by ${join(dir, SHARD_INDEX)})`
          : `${join(dir, SINGLE_WEIGHTS)} is missing (nor is there a ${SHARD_INDEX} with shards)`,
      );
    }
  }
  return { modelType, weights: names.map((n) => join(dir, n)), sharded };
}
