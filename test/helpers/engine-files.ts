// Running the engine binary on crafted files, and reading/writing raw safetensors files so tests
// can build broken checkpoints byte by byte.
import { execFile } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';

interface EngineRun {
  code: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
}

/** Runs bin with args (stdin closed) to completion; a run past limitMs is killed (signal set). */
export function runEngine(bin: string, args: string[], limitMs = 120_000): Promise<EngineRun> {
  return new Promise((resolve) => {
    execFile(
      bin,
      args,
      { timeout: limitMs, killSignal: 'SIGKILL', maxBuffer: 64 << 20 },
      (err, stdout, stderr) => {
        const e = err as
          (NodeJS.ErrnoException & { code?: number | string; signal?: string }) | null;
        resolve({
          code: e ? (typeof e.code === 'number' ? e.code : null) : 0,
          signal: e?.signal ?? null,
          stdout,
          stderr,
        });
      },
    );
  });
}

/** The engine's error object: the last stderr line, which must be the only one. */
export function engineError(stderr: string): { code: string; message: string } {
  const lines = stderr.trim().split('\n');
  if (lines.length !== 1)
    throw new Error(`expected one stderr line, got ${lines.length}: ${stderr.slice(0, 2000)}`);
  const parsed = JSON.parse(lines[0]) as { error?: { code: string; message: string } };
  if (!parsed.error) throw new Error(`not an error line: ${lines[0]}`);
  return parsed.error;
}

type StHeader = Record<string, any>;

export async function readSafetensors(path: string): Promise<{ header: StHeader; data: Buffer }> {
  const buf = await readFile(path);
  const n = Number(buf.readBigUInt64LE(0));
  return {
    header: JSON.parse(buf.subarray(8, 8 + n).toString()) as StHeader,
    data: buf.subarray(8 + n),
  };
}

/**
 * Writes header (as JSON text, or raw bytes for malformed headers) and data as a safetensors file.
 */
export async function writeSafetensors(
  path: string,
  header: StHeader | Buffer,
  data: Buffer,
): Promise<void> {
  const h = Buffer.isBuffer(header) ? header : Buffer.from(JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(h.length));
  await writeFile(path, Buffer.concat([len, h, data]));
}
