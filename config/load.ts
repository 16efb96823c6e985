// Reading config files (Node only; workflows import config/schema.ts instead). Loading a run or
// ablation config, which also checks it against its model and prompts, is
// activities/load-config.ts: those checks tokenize prompts as the activities do.
import { readFile } from 'node:fs/promises';
import { dirname, resolve, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ConfigError } from './errors.ts';

export const PRESETS_DIR = join(dirname(fileURLToPath(import.meta.url)), 'presets');

// A preset name ("tiny") or a path; names resolve to config/presets/<name>.json.
export function presetPath(nameOrPath: string, baseDir = process.cwd()): string {
  if (/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(nameOrPath) && !nameOrPath.endsWith('.json'))
    return join(PRESETS_DIR, `${nameOrPath}.json`);
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
    throw new ConfigError(file, [
      `${where}invalid JSON (${msg.replace(/ in JSON at position \d+.*$/, '')})`,
    ]);
  }
}

export interface LoadOptions {
  cwd?: string;
}
