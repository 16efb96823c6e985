// trainPolicy against the real engine: a cancelled attempt stops the engine process (SIGTERM),
// keeps its checkpoint, and the retry resumes from it to weights bit-identical to an
// uninterrupted run; bad data is a non-retryable failure carrying the engine's error line.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtemp, rm, writeFile, readFile, readdir, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MockActivityEnvironment } from '@temporalio/testing';
import { parseRunConfig, type RunConfig } from '../config/index.ts';
import { trainPolicy } from '../activities/train.ts';
import type { TrainPolicyInput } from '../activities/api.ts';
import { writeTokData } from '../lib/tokdata.ts';
import { writeTinyTokenizer } from './helpers/tiny-tokenizer.ts';

// MockActivityEnvironment.run does not infer the result type from the activity.
const runIn = <I, O>(env: MockActivityEnvironment, fn: (i: I) => Promise<O>, i: I) => env.run(fn, i) as Promise<O>;
const REPO = join(import.meta.dirname, '..');
const ENGINE = join(REPO, 'engine', 'build', 'opsr-engine');
const root = await mkdtemp(join(tmpdir(), 'opsr-act-train-'));
after(() => rm(root, { recursive: true, force: true }));
const modelDir = join(root, 'model');
const dataFile = join(root, 'pairs.bin');
const RECORDS = 240;
let training: RunConfig['training'];

// Deterministic pseudo-random token ids below the vocabulary size.
function tokens(n: number, seed: number, vocab: number): number[] {
  let a = seed;
  return Array.from({ length: n }, () => ((a = (a * 1103515245 + 12345) % 2147483648), a % vocab));
}

before(async () => {
  const vocab = await writeTinyTokenizer(modelDir);
  const cfg = join(root, 'gpt2.json');
  await writeFile(cfg, JSON.stringify({ n_embd: 64, n_layer: 2, n_head: 2, n_positions: 64, vocab_size: vocab, layer_norm_epsilon: 1e-5, n_inner: null, activation_function: 'gelu_new' }));
  execFileSync(ENGINE, ['init', '--config', cfg, '--out', modelDir, '--seed', '5'], { stdio: 'pipe' });
  await writeTokData(dataFile, {
    kind: 'preference',
    records: Array.from({ length: RECORDS }, (_, i) => ({ prompt: tokens(12, i + 1, vocab), chosen: tokens(20, 1000 + i, vocab), rejected: tokens(18, 5000 + i, vocab) })),
  });
  training = parseRunConfig({
    model: modelDir, prompts: { file: '/unused.jsonl' },
    training: { loss: 'simpo', beta: 2, gammaBetaRatio: 0.5, learningRate: 1e-3, batchSize: 1, checkpointEvery: 5, warmupRatio: 0.1, seed: 3, engine: { threads: 1 } },
  }).training;
});

const input = (roundDir: string): TrainPolicyInput => ({
  runId: 'train-test', round: 1, roundDir, referenceModelDir: modelDir, dataFile, training, learningRate: training.learningRate[0], notify: [],
});
const alive = (pid: number) => { try { process.kill(pid, 0); return true; } catch { return false; } };

test('cancellation stops the engine and keeps its checkpoint; the retry resumes to the same weights', async () => {
  const full = await runIn(new MockActivityEnvironment(), trainPolicy, input(join(root, 'full')));
  assert.equal(full.steps, RECORDS);
  assert.equal(full.resumedFrom, null);
  assert.equal(full.modelDir, join(root, 'full', 'train', 'final'));
  for (const k of ['loss', 'grad_norm', 'learning_rate', 'rewards/accuracies', 'rewards/margins']) assert.ok(Number.isFinite(full.metrics[k]), `metric ${k}`);

  const dir = join(root, 'cut');
  const env = new MockActivityEnvironment();
  let pid = 0;
  let cancelledAt = 0;
  env.on('heartbeat', (d: { step: number; checkpoint: string | null; pid: number }) => {
    pid = d.pid;
    if (!cancelledAt && d.checkpoint && d.step >= 10) {
      cancelledAt = d.step;
      env.cancel();
    }
  });
  await assert.rejects(runIn(env, trainPolicy, input(dir)));
  assert.ok(cancelledAt >= 10 && pid > 0);
  assert.equal(alive(pid), false, 'the engine process is gone');
  const ckpts = (await readdir(join(dir, 'train', 'checkpoints'))).filter((n) => n.startsWith('step-'));
  assert.ok(ckpts.length >= 1, 'checkpoint kept');
  const newest = Math.max(...ckpts.map((n) => Number(n.slice(5))));
  assert.ok(newest >= cancelledAt && newest < RECORDS, `newest checkpoint ${newest}`);
  await stat(join(dir, 'train', 'checkpoints', `step-${String(newest).padStart(8, '0')}`, 'DONE'));
  await assert.rejects(stat(join(dir, 'train', 'final')), 'no final model from the cancelled attempt');

  const retry = new MockActivityEnvironment({ heartbeatDetails: { step: cancelledAt } });
  const steps: number[] = [];
  retry.on('heartbeat', (d: { step: number }) => steps.push(d.step));
  const resumed = await runIn(retry, trainPolicy, input(dir));
  assert.equal(resumed.resumedFrom, newest);
  assert.equal(resumed.steps, RECORDS);
  assert.ok(steps.every((s) => s >= newest), 'the retry does not redo finished steps');
  assert.deepEqual(await readFile(join(resumed.modelDir, 'model.safetensors')), await readFile(join(full.modelDir, 'model.safetensors')));
  const { tokens_per_s: _a, ...m1 } = resumed.metrics;
  const { tokens_per_s: _b, ...m0 } = full.metrics;
  assert.deepEqual(m1, m0, 'same last-step metrics, speed aside');
  await stat(join(resumed.modelDir, 'tokenizer.json'));

  // Done is done: a third call reuses the manifest without running the engine.
  const again = await runIn(new MockActivityEnvironment(), trainPolicy, input(dir));
  assert.equal(again.steps, RECORDS);
  assert.deepEqual(again.metrics, resumed.metrics);
});

test('bad data is a non-retryable BadInput with the engine error line', async () => {
  const bad = join(root, 'bad.bin');
  await writeTokData(bad, { kind: 'preference', records: [{ prompt: [1, 2], chosen: [99999], rejected: [3] }] });
  await assert.rejects(
    runIn(new MockActivityEnvironment(), trainPolicy, { ...input(join(root, 'bad')), dataFile: bad }),
    (e: Error & { type?: string; nonRetryable?: boolean }) => e.type === 'BadInput' && e.nonRetryable === true && /"error"/.test(e.message) && /99999|vocab/.test(e.message),
  );
});
