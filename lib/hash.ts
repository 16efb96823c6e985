// Content hashes for manifests and caches: sha256 of files (streamed), bytes, and
// JSON values in a stable form (object keys sorted) so equal configs hash equally.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { SHARD_INDEX, weightFileNames } from './modeldir.ts';

export function sha256(data: string | Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

// Hashes of files seen by this process, keyed by identity (inode, size, mtime): a multi-GB
// weights file checked by several activities is read once. Atomic writes (temp + rename) give a
// rewritten file a new inode, so a stale entry is never hit.
const memo = new Map<string, string>();

export async function sha256File(path: string): Promise<string> {
  const st = await stat(path);
  const key = `${path}\0${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}`;
  const known = memo.get(key);
  if (known) return known;
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  const hex = h.digest('hex');
  memo.set(key, hex);
  return hex;
}

// JSON.stringify with object keys sorted at every level; undefined members dropped as JSON does.
export function stableStringify(value: unknown): string {
  return JSON.stringify(sortKeys(value));
}

function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const k of Object.keys(value as object).sort()) {
      const v = (value as Record<string, unknown>)[k];
      if (v !== undefined) out[k] = sortKeys(v);
    }
    return out;
  }
  return value;
}

export function hashJson(value: unknown): string {
  return sha256(stableStringify(value));
}

// Content hash of a model directory's weights (one file, or the shard index and every shard),
// config and tokenizer files; a missing one hashes as 'none'. Files that shape sampling only
// when present (generation_config.json, chat_template.jinja, the index) count only then, so a
// single-file directory hashes as it always has.
export async function modelHash(dir: string): Promise<string> {
  const files: Record<string, string> = {};
  const weights = await weightFileNames(dir);
  for (const f of ['config.json', ...weights, 'tokenizer.json', 'tokenizer_config.json']) {
    files[f] = await sha256File(join(dir, f)).catch(() => 'none');
  }
  for (const f of [SHARD_INDEX, 'generation_config.json', 'chat_template.jinja']) {
    const h = await sha256File(join(dir, f)).catch(() => null);
    if (h !== null) files[f] = h;
  }
  return hashJson(files);
}
