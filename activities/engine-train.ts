// Running the training engine (engine/build/opsr-engine) from an activity: argument arrays, its
// JSON-lines progress on stdout, heartbeats, resume from the newest complete checkpoint, and
// cancellation forwarded as SIGTERM (the engine checkpoints, then exits 143; SIGKILL after a
// grace).
import { mkdir, readdir, stat } from 'node:fs/promises';
import { totalmem } from 'node:os';
import { join } from 'node:path';
import { cancellationSignal, heartbeat } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import { execa } from 'execa';
import { DEFAULT_ENGINE_PATH, engineEnv } from '../lib/engine.ts';
import { readModelDims, trainingBytes } from '../lib/model-config.ts';
import { recordPid, stopRecorded } from '../lib/pidfile.ts';
import { badInput } from './errors.ts';
import { withKeepAlive } from './progress.ts';

const KILL_GRACE_MS = 30_000;

export interface EngineRun {
  finalDir: string;
  steps: number;
  resumedFrom: number | null;
  metrics: Record<string, number>;
}

interface EngineTrainOptions {
  enginePath?: string;
  modelDir: string; // --model: the starting weights
  args: string[]; // the rest after `train --model M --out OUT` (data, loss, hyperparameters)
  outDir: string;
  // at start and each step
  onProgress?: (e: { step: number; totalSteps: number; metrics: Record<string, number> }) => void;
  onEvent?: (line: string, e: Record<string, unknown>) => void; // every JSON line, as printed
  killGraceMs?: number;
}

// Newest checkpoint step with its DONE marker (written last), or null.
export async function newestCheckpoint(outDir: string): Promise<number | null> {
  let names: string[];
  try {
    names = await readdir(join(outDir, 'checkpoints'));
  } catch {
    return null;
  }
  const steps = names
    .map((n) => /^step-(\d{8})$/.exec(n))
    .filter((m) => m !== null)
    .map((m) => Number(m[1]))
    .sort((a, b) => b - a);
  for (const s of steps) {
    try {
      await stat(join(outDir, 'checkpoints', `step-${String(s).padStart(8, '0')}`, 'DONE'));
      return s;
    } catch {
      // incomplete: the engine builds checkpoints in a temp dir, but be safe
    }
  }
  return null;
}

function numericMetrics(e: Record<string, unknown>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(e))
    if (typeof v === 'number' && k !== 'step' && k !== 'total_steps') out[k] = v;
  return out;
}

// Out of memory is transient when other processes hold the memory, but a model whose weights,
// gradients and optimizer state alone exceed this machine's memory fails the same way on every
// retry: that is bad input (an absurd config.json), failed once.
async function refuseOversizedModel(modelDir: string, errorLine: string): Promise<void> {
  const dims = await readModelDims(modelDir);
  if (!dims) return;
  const need = trainingBytes(dims);
  if (need <= totalmem()) return;
  const gib = (b: number) => (b / 2 ** 30).toFixed(1);
  throw badInput(
    `${dims.file}: training this model needs at least ${gib(need)} GiB (n_embd ${dims.nEmbd}, ` +
      (`n_layer ${dims.nLayer}, vocab_size ${dims.vocabSize}, ${dims.contextField} ` +
        `${dims.context}); this machine has `) +
      `${gib(totalmem())} GiB. The engine said: ${errorLine}`,
  );
}

export async function runEngineTrain(opts: EngineTrainOptions): Promise<EngineRun> {
  const engine = opts.enginePath ?? DEFAULT_ENGINE_PATH;
  await stat(engine).catch(() => {
    throw badInput(`training.engine.path ${engine} does not exist (build it with make -C engine)`);
  });
  // A worker that died (SIGKILL, OOM) leaves its engine training into OUT: stop it (it checkpoints
  // the last step) so two engines never write one directory. The pid file lives in a
  // subdirectory: the engine clears temp files at OUT's top level when it starts.
  const pidFile = join(opts.outDir, 'attempt', 'engine.pid');
  await mkdir(opts.outDir, { recursive: true });
  await stopRecorded(pidFile, [engine, opts.outDir], opts.killGraceMs ?? KILL_GRACE_MS);
  const resumedFrom = await newestCheckpoint(opts.outDir);
  const args = [
    'train',
    '--model',
    opts.modelDir,
    ...opts.args,
    '--out',
    opts.outDir,
    ...(resumedFrom !== null ? ['--resume'] : []),
  ];
  const signal = cancellationSignal();
  const child = execa(engine, args, {
    stdin: 'ignore',
    stdout: 'pipe',
    stderr: 'pipe',
    reject: false,
    buffer: { stdout: false, stderr: false },
    env: engineEnv(),
    extendEnv: false,
    cancelSignal: signal,
    killSignal: 'SIGTERM',
    forceKillAfterDelay: opts.killGraceMs ?? KILL_GRACE_MS,
  });
  let steps = resumedFrom ?? 0;
  let checkpoint: string | null = null;
  let finalDir: string | null = null;
  let metrics: Record<string, number> = {};
  let stderrTail = '';
  child.stderr.on('data', (d: Buffer) => (stderrTail = (stderrTail + d.toString()).slice(-8000)));
  let buf = '';
  child.stdout.on('data', (d: Buffer) => {
    buf += d.toString();
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl).trim();
      buf = buf.slice(nl + 1);
      if (!line.startsWith('{')) continue;
      let e: Record<string, unknown>;
      try {
        e = JSON.parse(line);
      } catch {
        continue; // a line that is not an event; the exit code decides
      }
      opts.onEvent?.(line, e);
      if (e.event === 'start') {
        opts.onProgress?.({ step: steps, totalSteps: Number(e.total_steps), metrics: {} });
      } else if (e.event === 'step') {
        steps = Number(e.step);
        metrics = numericMetrics(e);
        heartbeat({ step: steps, checkpoint, pid: child.pid });
        opts.onProgress?.({ step: steps, totalSteps: Number(e.total_steps), metrics });
      } else if (e.event === 'checkpoint') {
        checkpoint = String(e.path);
        heartbeat({ step: Number(e.step), checkpoint, pid: child.pid });
      } else if (e.event === 'done') {
        steps = Number(e.step);
        finalDir = String(e.path);
      }
    }
  });
  // After the listeners: output that arrives while this is written must not be missed.
  if (child.pid !== undefined) await recordPid(pidFile, child.pid);
  let result;
  try {
    result = await withKeepAlive(
      () => ({ step: steps, checkpoint, pid: child.pid }),
      () => child,
    );
  } catch (err) {
    throw new Error(`cannot run the engine ${engine}: ${(err as Error).message}`);
  }
  if (signal.aborted) throw signal.reason ?? new Error('training cancelled');
  const errorLine =
    stderrTail
      .trim()
      .split('\n')
      .filter((l) => l.startsWith('{"error"'))
      .pop() ??
    stderrTail.trim().split('\n').pop() ??
    '';
  const code = result.exitCode;
  if (code === 4 && errorLine.includes('"out_of_memory"'))
    await refuseOversizedModel(opts.modelDir, errorLine);
  if (code === 0 && finalDir) return { finalDir, steps, resumedFrom, metrics };
  if (code === 0)
    throw new Error(`engine ${engine} exited 0 without a "done" event; stderr: ${errorLine}`);
  if (code === 2) throw badInput(`engine rejected its input (exit 2): ${errorLine}`);
  if (code === 3)
    throw ApplicationFailure.create({
      type: 'NonFiniteLoss',
      nonRetryable: true,
      message: `engine stopped on a non-finite loss (exit 3): ${errorLine}`,
    });
  // 4 (I/O, transient), 143 (stopped after checkpointing), other signals: retry resumes.
  const how =
    code !== undefined
      ? `exit ${code}`
      : result.signal
        ? `signal ${result.signal}`
        : `not started: ${result.shortMessage}`;
  throw ApplicationFailure.create({
    type: 'EngineInterrupted',
    nonRetryable: false,
    message:
      `engine stopped (${how}) at step ${steps}, checkpoint ${checkpoint ?? 'none'}: ` +
      `${errorLine}`,
  });
}
