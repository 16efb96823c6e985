// Loading run and ablation configs from disk: the schema (config/), what only this installation
// knows (builtin scorers), and the checks against the model directory and the prompts that the
// engine and the server would otherwise make only after work is spent (model-checks.ts).
import { stat } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { checkModelDir, ModelDirError } from '../lib/modeldir.ts';
import { ConfigError, presetPath, readJsonFile, type LoadOptions } from '../config/index.ts';
import {
  BUILTIN_SCORER_NAMES,
  parseAblationConfigWithInput,
  parseRunConfig,
  type AblationConfig,
  type AblationConfigInput,
  type RunConfig,
} from '../config/schema.ts';
import { modelProblems } from './model-checks.ts';

// Relative paths resolve against the file's directory; the default storage root against cwd.
export async function loadRunConfig(file: string, opts: LoadOptions = {}): Promise<RunConfig> {
  const abs = resolve(file);
  const obj = await readJsonFile(abs);
  const config = parseRunConfig(obj, {
    baseDir: dirname(abs),
    cwd: opts.cwd ?? process.cwd(),
    source: abs,
  });
  checkInstalled(config, abs);
  await checkModelOnDisk(config, abs);
  const problems = await modelProblems(config, { lengths: true });
  if (problems.length) throw new ConfigError(abs, problems);
  return config;
}

// A model directory that exists already must be one opsr can train (one that does not yet may be
// made before the run, as the demo does).
async function checkModelOnDisk(c: RunConfig, source: string, prefix = '') {
  if (
    !(await stat(c.model).then(
      () => true,
      () => false,
    ))
  )
    return;
  await checkModelDir(c.model).catch((err: unknown) => {
    const msg = `${prefix}model: ${(err as Error).message}`;
    if (err instanceof ModelDirError) throw new ConfigError(source, [msg]);
    throw err;
  });
}

// What only this installation knows: the builtin reward scorers.
function checkInstalled(c: RunConfig, source: string, prefix = '') {
  const rm = c.rewardModel;
  if (rm?.type === 'builtin' && !(BUILTIN_SCORER_NAMES as readonly string[]).includes(rm.name)) {
    throw new ConfigError(source, [
      `${prefix}rewardModel.name: is not a builtin scorer (got ` +
        `${JSON.stringify(rm.name)}; allowed one of ` +
        `${BUILTIN_SCORER_NAMES.map((n) => JSON.stringify(n)).join(', ')})`,
    ]);
  }
}

// The ablation file plus its base: an object, or a path/preset name read from disk. Returns the
// resolved arms and the workflow input (base inlined with absolute paths).
export async function loadAblationConfig(
  file: string,
  opts: LoadOptions = {},
): Promise<{ config: AblationConfig; input: AblationConfigInput }> {
  const abs = resolve(file);
  const obj = await readJsonFile(abs);
  const dir = dirname(abs);
  let input = obj as AblationConfigInput;
  let baseBaseDir = dir;
  if (obj && typeof obj === 'object' && typeof (obj as { base?: unknown }).base === 'string') {
    const basePath = presetPath((obj as { base: string }).base, dir);
    const base = await readJsonFile(basePath);
    input = { ...(obj as AblationConfigInput), base: base as Record<string, unknown> };
    baseBaseDir = dirname(basePath);
  }
  const parsed = parseAblationConfigWithInput(input, {
    baseDir: dir,
    baseBaseDir,
    cwd: opts.cwd ?? process.cwd(),
    source: abs,
  });
  for (const arm of parsed.config.arms) {
    checkInstalled(arm.config, abs, `arms (${arm.name}): `);
    await checkModelOnDisk(arm.config, abs, `arms (${arm.name}): `);
    const problems = await modelProblems(arm.config, { lengths: true });
    if (problems.length)
      throw new ConfigError(
        abs,
        problems.map((l) => `arms (${arm.name}): ${l}`),
      );
  }
  return parsed;
}
