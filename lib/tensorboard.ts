// TensorBoard event files written from Node: TFRecord framing (length, masked CRC32C of the
// length, data, masked CRC32C of the data) around tensorflow.Event protobufs whose summaries hold
// scalars as simple_value. `tensorboard --logdir DIR` reads every directory holding such a file.
import { appendFile, mkdir, readdir, rm } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { writeFileAtomic } from './atomic.ts';

// CRC32C (Castagnoli, reflected polynomial 0x82F63B78), as TFRecord frames use it.
const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

export function crc32c(buf: Uint8Array): number {
  let c = 0xffffffff;
  for (const b of buf) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

// TFRecord stores CRCs rotated and offset so a CRC of data that holds CRCs stays well spread.
export function maskedCrc32c(buf: Uint8Array): number {
  const c = crc32c(buf);
  return ((((c >>> 15) | (c << 17)) >>> 0) + 0xa282ead8) >>> 0;
}

function tfrecord(data: Uint8Array): Buffer {
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(data.length));
  const head = Buffer.alloc(4);
  head.writeUInt32LE(maskedCrc32c(len));
  const tail = Buffer.alloc(4);
  tail.writeUInt32LE(maskedCrc32c(data));
  return Buffer.concat([len, head, data, tail]);
}

// ---- the few protobuf encodings an Event needs -------------------------------------------------
function varint(n: bigint): Buffer {
  const out: number[] = [];
  let v = BigInt.asUintN(64, n);
  while (v >= 0x80n) {
    out.push(Number(v & 0x7fn) | 0x80);
    v >>= 7n;
  }
  out.push(Number(v));
  return Buffer.from(out);
}
const key = (field: number, wire: number) => varint(BigInt((field << 3) | wire));
const bytesField = (field: number, data: Uint8Array) =>
  Buffer.concat([key(field, 2), varint(BigInt(data.length)), data]);

// Event { double wall_time = 1; int64 step = 2;
//         oneof { string file_version = 3; Summary summary = 5 } }
function event(
  wallTime: number,
  step: number,
  body: { fileVersion: string } | { scalars: [string, number][] },
) {
  const wall = Buffer.alloc(8);
  wall.writeDoubleLE(wallTime);
  const parts = [key(1, 1), wall, key(2, 0), varint(BigInt(step))];
  if ('fileVersion' in body) {
    parts.push(bytesField(3, Buffer.from(body.fileVersion)));
  } else {
    // Summary { repeated Value value = 1 }; Value { string tag = 1; float simple_value = 2 }
    const values = body.scalars.map(([tag, v]) => {
      const f = Buffer.alloc(4);
      f.writeFloatLE(v);
      return bytesField(1, Buffer.concat([bytesField(1, Buffer.from(tag)), key(2, 5), f]));
    });
    parts.push(bytesField(5, Buffer.concat(values)));
  }
  return Buffer.concat(parts);
}

export interface ScalarStep {
  step: number;
  wallTime?: number; // seconds since the epoch; default now
  scalars: Record<string, number>; // tag -> value (non-finite values are skipped)
}

function encodeSteps(steps: ScalarStep[]): Buffer {
  return Buffer.concat(
    steps.map((s) => {
      const scalars = Object.entries(s.scalars).filter(([, v]) => Number.isFinite(v));
      return tfrecord(event(s.wallTime ?? Date.now() / 1000, s.step, { scalars }));
    }),
  );
}

// One event file per directory: earlier ones are removed, so TensorBoard never shows a step twice.
function eventFileName(): string {
  return `events.out.tfevents.${Math.floor(Date.now() / 1000)}.${hostname()}.${process.pid}.opsr`;
}

async function clearEventFiles(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true });
  for (const n of await readdir(dir))
    if (n.includes('tfevents')) await rm(join(dir, n), { force: true });
}

// Writes `steps` as the directory's only event file, atomically. With `wallTime` (and then a fixed
// file name) the file's bytes depend on `steps` only: a report rebuilt from one result is equal.
export async function writeScalars(
  dir: string,
  steps: ScalarStep[],
  wallTime?: number,
): Promise<string> {
  await clearEventFiles(dir);
  const file = join(
    dir,
    wallTime === undefined ? eventFileName() : `events.out.tfevents.${wallTime}.opsr`,
  );
  const head = tfrecord(event(wallTime ?? Date.now() / 1000, 0, { fileVersion: 'brain.Event:2' }));
  await writeFileAtomic(file, Buffer.concat([head, encodeSteps(steps)]));
  return file;
}

// A live log: starts as the directory's only event file holding `initial` (for example the steps a
// resumed run already made), then appends one record per step as training goes.
export class ScalarLog {
  private constructor(readonly file: string) {}

  static async open(dir: string, initial: ScalarStep[] = []): Promise<ScalarLog> {
    return new ScalarLog(await writeScalars(dir, initial));
  }

  async add(step: ScalarStep): Promise<void> {
    await appendFile(this.file, encodeSteps([step]));
  }
}
