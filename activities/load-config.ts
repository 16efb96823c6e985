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
  const problems = await runConfigProblems(config);
  if (problems.length) throw new ConfigError(abs, problems);
  return config;
}

// Everything refused beyond the schema: the installation's builtin scorers, the model directory
// and the model checks with lengths. One function for `opsr validate`, `opsr run` and prepareRun
// (a workflow's first activity, whoever started it), so each refuses the same config with the
// same lines. A model directory that does not exist yet may be made before the run (the demo
// does); prepareRun requires it.
export async function runConfigProblems(c: RunConfig, prefix = ''): Promise<string[]> {
  const out: string[] = [];
  const rm = c.rewardModel;
  if (rm?.type === 'builtin' && !(BUILTIN_SCORER_NAMES as readonly string[]).includes(rm.name)) {
    const allowed = BUILTIN_SCORER_NAMES.map((n) => JSON.stringify(n)).join(', ');
    out.push(
      `rewardModel.name: is not a builtin scorer (got ${JSON.stringify(rm.name)}; ` +
        `allowed one of ${allowed})`,
    );
  }
  const exists = await stat(c.model).then(
    () => true,
    () => false,
  );
  const dirProblem = exists
    ? await checkModelDir(c.model).then(
        () => null,
        (err: unknown) => {
          if (err instanceof ModelDirError) return `model: ${err.message}`;
          throw err;
        },
      )
    : null;
  if (dirProblem) out.push(dirProblem);
  else out.push(...(await modelProblems(c)));
  return out.map((l) => prefix + l);
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
  const problems: string[] = [];
  for (const arm of parsed.config.arms)
    problems.push(...(await runConfigProblems(arm.config, `arms (${arm.name}): `)));
  if (problems.length) throw new ConfigError(abs, problems);
  return parsed;
}
