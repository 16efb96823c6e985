// Reading configs from disk (Node only; workflows import config/schema.ts instead).
import { readFile, stat } from 'node:fs/promises';
import { dirname, resolve, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { checkModelDir, ModelDirError } from '../lib/modeldir.ts';
import { ConfigError } from './errors.ts';
import { modelProblems } from './model-checks.ts';
import {
  BUILTIN_SCORER_NAMES, parseAblationConfigWithInput, parseRunConfig,
  type AblationConfig, type AblationConfigInput, type RunConfig,
} from './schema.ts';

export const PRESETS_DIR = join(dirname(fileURLToPath(import.meta.url)), 'presets');

// A preset name ("tiny") or a path; names resolve to config/presets/<name>.json.
export function presetPath(nameOrPath: string, baseDir = process.cwd()): string {
  if (/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(nameOrPath) && !nameOrPath.endsWith('.json')) return join(PRESETS_DIR, `${nameOrPath}.json`);
  return resolve(baseDir, nameOrPath);
}

// JSON.parse with the error's position turned into line and column of the file.
export async function readJsonFile(file: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw new ConfigError(file, [`cannot read the file (${err.code ?? err.message})`]);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    const msg = (e as Error).message;
    const m = /position (\d+)/.exec(msg);
    let where = '';
    if (m) {
      const before = text.slice(0, Number(m[1]));
      const line = before.split('\n').length;
      const col = Number(m[1]) - before.lastIndexOf('\n');
      where = `line ${line}, column ${col}: `;
    } else if (/end of JSON input/i.test(msg)) {
      const lines = text.split('\n');
      where = `line ${lines.length}, column ${lines[lines.length - 1].length + 1}: `;
    }
    throw new ConfigError(file, [`${where}invalid JSON (${msg.replace(/ in JSON at position \d+.*$/, '')})`]);
  }
}

export interface LoadOptions { cwd?: string }

// Relative paths resolve against the file's directory; the default storage root against cwd.
export async function loadRunConfig(file: string, opts: LoadOptions = {}): Promise<RunConfig> {
  const abs = resolve(file);
  const obj = await readJsonFile(abs);
  const config = parseRunConfig(obj, { baseDir: dirname(abs), cwd: opts.cwd ?? process.cwd(), source: abs });
  checkInstalled(config, abs);
  await checkModelOnDisk(config, abs);
  const problems = await modelProblems(config, { lengths: true });
  if (problems.length) throw new ConfigError(abs, problems);
  return config;
}

// A model directory that exists already must be one opsr can train (one that does not yet may be
// made before the run, as the demo does).
async function checkModelOnDisk(c: RunConfig, source: string, prefix = '') {
  if (!(await stat(c.model).then(() => true, () => false))) return;
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
    throw new ConfigError(source, [`${prefix}rewardModel.name: is not a builtin scorer (got ${JSON.stringify(rm.name)}; allowed one of ${BUILTIN_SCORER_NAMES.map((n) => JSON.stringify(n)).join(', ')})`]);
  }
}

// The ablation file plus its base: an object, or a path/preset name read from disk. Returns the
// resolved arms and the workflow input (base inlined with absolute paths).
export async function loadAblationConfig(file: string, opts: LoadOptions = {}): Promise<{ config: AblationConfig; input: AblationConfigInput }> {
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
  const parsed = parseAblationConfigWithInput(input, { baseDir: dir, baseBaseDir, cwd: opts.cwd ?? process.cwd(), source: abs });
  for (const arm of parsed.config.arms) {
    checkInstalled(arm.config, abs, `arms (${arm.name}): `);
    await checkModelOnDisk(arm.config, abs, `arms (${arm.name}): `);
    const problems = await modelProblems(arm.config, { lengths: true });
    if (problems.length) throw new ConfigError(abs, problems.map((l) => `arms (${arm.name}): ${l}`));
  }
  return parsed;
}
