// JSON Lines: one JSON value per line. Read errors name the file and the 1-based line.
import { readFile } from 'node:fs/promises';
import { writeFileAtomic } from './atomic.ts';

export class JsonlError extends Error {
  constructor(
    readonly file: string,
    readonly line: number,
    message: string,
  ) {
    super(`${file}:${line}: ${message}`);
    this.name = 'JsonlError';
  }
}

// `check` returns null for a good record or a message naming the field and what is allowed.
export type RecordCheck = (rec: unknown) => string | null;

export function parseJsonl<T = unknown>(text: string, file: string, check?: RecordCheck): T[] {
  const out: T[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].trim();
    if (line === '') continue;
    let rec: unknown;
    try {
      rec = JSON.parse(line);
    } catch (err) {
      throw new JsonlError(file, i + 1, `not valid JSON (${(err as Error).message})`);
    }
    const problem = check?.(rec);
    if (problem) throw new JsonlError(file, i + 1, problem);
    out.push(rec as T);
  }
  return out;
}

export async function readJsonl<T = unknown>(file: string, check?: RecordCheck): Promise<T[]> {
  return parseJsonl<T>(await readFile(file, 'utf8'), file, check);
}

export function toJsonl(records: readonly unknown[]): string {
  return records.map((r) => JSON.stringify(r) + '\n').join('');
}

export async function writeJsonlAtomic(file: string, records: readonly unknown[]): Promise<void> {
  await writeFileAtomic(file, toJsonl(records));
}
