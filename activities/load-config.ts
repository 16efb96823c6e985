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
import { evalSetProblem } from './evaluate-judged.ts';
import { promptFileProblem, type PromptKind } from './judge.ts';
import { promptsProblem } from './prompts.ts';
import { userRecordsProblem } from './records.ts';
import { checkPair, checkSft } from './train.ts';
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

// Everything refused beyond the schema: the installation's builtin scorers, the judges' prompt
// files, the record files (prompts, seed data, evaluation sets), the model directory and the
// model checks with lengths. One function for `opsr validate`, `opsr run` and prepareRun (a
// workflow's first activity, whoever started it), so each refuses the same config with the same
// lines. Files and a model directory that do not exist yet may be made before the run (the demo
// makes its data and model, `opsr models fetch` a model); prepareRun (inputsExist) requires them
// all, so a set evaluated after the last round cannot fail after all the training.
export async function runConfigProblems(
  c: RunConfig,
  opts: { prefix?: string; inputsExist?: boolean } = {},
): Promise<string[]> {
  const out: string[] = [];
  const rm = c.rewardModel;
  if (rm?.type === 'builtin' && !(BUILTIN_SCORER_NAMES as readonly string[]).includes(rm.name)) {
    const allowed = BUILTIN_SCORER_NAMES.map((n) => JSON.stringify(n)).join(', ');
    out.push(
      `rewardModel.name: is not a builtin scorer (got ${JSON.stringify(rm.name)}; ` +
        `allowed one of ${allowed})`,
    );
  }
  // Each input file read as the run reads it: record shapes (lengths against the model come with
  // the model checks below) and prompt templates' placeholders.
  const files: [string, string, (field: string, file: string) => Promise<string | null>][] = [
    ['prompts.file', c.prompts.file, promptsProblem],
  ];
  if (c.evaluation)
    files.push(['evaluation.prompts.file', c.evaluation.prompts.file, promptsProblem]);
  if (c.init?.sft)
    files.push(['init.sft.data', c.init.sft.data, (f, x) => userRecordsProblem(f, x, checkSft)]);
  if (c.init?.offline)
    files.push([
      'init.offline.data',
      c.init.offline.data,
      (f, x) => userRecordsProblem(f, x, checkPair),
    ]);
  for (const set of c.evals?.sets ?? [])
    files.push([`evals.sets (${set.name}).file`, set.file, () => evalSetProblem(set)]);
  const template = (kind: PromptKind) => (f: string, x: string) => promptFileProblem(kind, x, f);
  if (c.pairs.rubricPrompt !== undefined)
    files.push(['pairs.rubricPrompt', c.pairs.rubricPrompt, template('rubric')]);
  for (const [name, judge] of Object.entries(c.judges))
    if (judge.type === 'openai')
      for (const [kind, file] of Object.entries(judge.prompts) as [PromptKind, string][])
        if (file !== undefined)
          files.push([`judges.${name}.prompts.${kind}`, file, template(kind)]);
  const problems = await Promise.all(
    files.map(async ([field, file, check]) =>
      opts.inputsExist || (await exists(file)) ? check(field, file) : null,
    ),
  );
  for (const problem of problems) if (problem) out.push(problem);
  const dirProblem = (await exists(c.model))
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
  return out.map((l) => (opts.prefix ?? '') + l);
}

const exists = (path: string) =>
  stat(path).then(
    () => true,
    () => false,
  );

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
    problems.push(...(await runConfigProblems(arm.config, { prefix: `arms (${arm.name}): ` })));
  if (problems.length) throw new ConfigError(abs, problems);
  return parsed;
}
