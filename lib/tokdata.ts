// The engine's training data file (engine/README.md, "Data file"), little-endian:
//   header: "OPSRDATA", u32 version = 1, u32 kind (1 sft, 2 preference), u32 record_count, u32 0
//   sft record:        u32 prompt_len, u32 response_len, prompt ids, response ids
//   preference record: u32 prompt_len, u32 chosen_len, u32 rejected_len, prompt, chosen, rejected
import { readFile } from 'node:fs/promises';
import { writeFileAtomic } from './atomic.ts';

interface SftRecord {
  prompt: number[];
  response: number[];
}
interface PreferenceRecord {
  prompt: number[];
  chosen: number[];
  rejected: number[];
}
type TokData =
  { kind: 'sft'; records: SftRecord[] } | { kind: 'preference'; records: PreferenceRecord[] };

const MAGIC = 'OPSRDATA';
const VERSION = 1;
const KIND_CODE = { sft: 1, preference: 2 } as const;

class TokDataError extends Error {
  constructor(
    readonly file: string,
    message: string,
  ) {
    super(`${file}: ${message}`);
    this.name = 'TokDataError';
  }
}

function fields(data: TokData, i: number): [string, number[]][] {
  const r = data.records[i] as Partial<SftRecord & PreferenceRecord>;
  return data.kind === 'sft'
    ? [
        ['prompt', r.prompt!],
        ['response', r.response!],
      ]
    : [
        ['prompt', r.prompt!],
        ['chosen', r.chosen!],
        ['rejected', r.rejected!],
      ];
}

/**
 * Encodes records into the file format; throws naming the record and field for bad ids or lengths.
 */
function encodeTokData(data: TokData, file = '<data>'): Uint8Array {
  if (data.kind !== 'sft' && data.kind !== 'preference') {
    throw new TokDataError(
      file,
      `kind must be "sft" or "preference", got ${JSON.stringify((data as { kind: unknown }).kind)}`,
    );
  }
  if (data.records.length === 0)
    throw new TokDataError(file, 'no records to write (the engine needs at least one)');
  let words = 6;
  for (let i = 0; i < data.records.length; i++) {
    for (const [name, ids] of fields(data, i)) {
      if (!Array.isArray(ids))
        throw new TokDataError(file, `record ${i}: ${name} must be an array of token ids`);
      if (ids.length === 0)
        throw new TokDataError(
          file,
          `record ${i}: ${name} is empty (at least 1 token is required)`,
        );
      for (let t = 0; t < ids.length; t++) {
        const id = ids[t];
        if (!Number.isInteger(id) || id < 0 || id > 0xffffffff) {
          throw new TokDataError(
            file,
            `record ${i}: ${name}[${t}] = ${id} is not a token id (an integer in [0, 2^32))`,
          );
        }
      }
      words += 1 + ids.length;
    }
  }
  const buf = Buffer.alloc(words * 4);
  buf.write(MAGIC, 0, 'ascii');
  buf.writeUInt32LE(VERSION, 8);
  buf.writeUInt32LE(KIND_CODE[data.kind], 12);
  buf.writeUInt32LE(data.records.length, 16);
  buf.writeUInt32LE(0, 20);
  let off = 24;
  for (let i = 0; i < data.records.length; i++) {
    const parts = fields(data, i);
    for (const [, ids] of parts) {
      buf.writeUInt32LE(ids.length, off);
      off += 4;
    }
    for (const [, ids] of parts)
      for (const id of ids) {
        buf.writeUInt32LE(id, off);
        off += 4;
      }
  }
  return buf;
}

/** Writes a data file atomically. */
export async function writeTokData(path: string, data: TokData): Promise<void> {
  await writeFileAtomic(path, encodeTokData(data, path));
}

export const writeSftData = (path: string, records: SftRecord[]) =>
  writeTokData(path, { kind: 'sft', records });
export const writePreferenceData = (path: string, records: PreferenceRecord[]) =>
  writeTokData(path, { kind: 'preference', records });

/** Decodes a data file; throws naming the file (and record) for anything malformed. */
function decodeTokData(buf: Uint8Array, file = '<data>'): TokData {
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  if (b.length < 24 || b.toString('ascii', 0, 8) !== MAGIC) {
    throw new TokDataError(file, `not an opsr data file (bad magic; expected "${MAGIC}")`);
  }
  const version = b.readUInt32LE(8),
    kindCode = b.readUInt32LE(12),
    count = b.readUInt32LE(16);
  if (version !== VERSION)
    throw new TokDataError(file, `unsupported version ${version} (allowed: ${VERSION})`);
  if (kindCode !== 1 && kindCode !== 2)
    throw new TokDataError(file, `unknown kind ${kindCode} (allowed: 1 sft, 2 preference)`);
  const nParts = kindCode === 1 ? 2 : 3;
  let off = 24;
  const records: number[][][] = [];
  for (let i = 0; i < count; i++) {
    if (off + 4 * nParts > b.length)
      throw new TokDataError(file, `record ${i}: file ends inside the record header (truncated)`);
    const lens = Array.from({ length: nParts }, (_, k) => b.readUInt32LE(off + 4 * k));
    off += 4 * nParts;
    const total = lens.reduce((a, x) => a + x, 0);
    if (off + 4 * total > b.length)
      throw new TokDataError(
        file,
        `record ${i}: lengths need ${total} token ids but the file ends first (truncated)`,
      );
    records.push(
      lens.map((n) => {
        const ids = Array.from({ length: n }, (_, t) => b.readUInt32LE(off + 4 * t));
        off += 4 * n;
        return ids;
      }),
    );
  }
  if (off !== b.length)
    throw new TokDataError(file, `${b.length - off} bytes of trailing data after the last record`);
  return kindCode === 1
    ? { kind: 'sft', records: records.map(([prompt, response]) => ({ prompt, response })) }
    : {
        kind: 'preference',
        records: records.map(([prompt, chosen, rejected]) => ({ prompt, chosen, rejected })),
      };
}

export async function readTokData(path: string): Promise<TokData> {
  return decodeTokData(await readFile(path), path);
}
