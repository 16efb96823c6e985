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
import { parseRunConfig, type RunConfig } from '../../config/index.ts';
import { initPolicy, trainPolicy } from '../../activities/train.ts';
import type { TrainPolicyInput } from '../../contracts/activities.ts';
import { writeTokData } from '../../lib/tokdata.ts';
import { writeTinyTokenizer } from '../helpers/tiny-tokenizer.ts';

// MockActivityEnvironment.run does not infer the result type from the activity.
const runIn = <I, O>(env: MockActivityEnvironment, fn: (i: I) => Promise<O>, i: I) =>
  env.run(fn, i) as Promise<O>;
const REPO = join(import.meta.dirname, '..', '..');
const ENGINE = join(REPO, 'engine', 'build', 'opsr-engine');
const root = await mkdtemp(join(tmpdir(), 'opsr-act-train-'));
after(() => rm(root, { recursive: true, force: true }));
const modelDir = join(root, 'model');
const dataFile = join(root, 'pairs.bin');
// One record per step: enough steps (seconds of training) that a cancel or kill sent after the
// first checkpoint provably lands mid-run, even on a loaded machine.
const RECORDS = 1000;
let training: RunConfig['training'];

// Deterministic pseudo-random token ids below the vocabulary size.
function tokens(n: number, seed: number, vocab: number): number[] {
  let a = seed;
  return Array.from({ length: n }, () => ((a = (a * 1103515245 + 12345) % 2147483648), a % vocab));
}

before(async () => {
  const vocab = await writeTinyTokenizer(modelDir);
  const cfg = join(root, 'gpt2.json');
  await writeFile(
    cfg,
    JSON.stringify({
      n_embd: 64,
      n_layer: 2,
      n_head: 2,
      n_positions: 64,
      vocab_size: vocab,
      layer_norm_epsilon: 1e-5,
      n_inner: null,
      activation_function: 'gelu_new',
    }),
  );
  execFileSync(ENGINE, ['init', '--config', cfg, '--out', modelDir, '--seed', '5'], {
    stdio: 'pipe',
  });
  await writeTokData(dataFile, {
    kind: 'preference',
    records: Array.from({ length: RECORDS }, (_, i) => ({
      prompt: tokens(12, i + 1, vocab),
      chosen: tokens(20, 1000 + i, vocab),
      rejected: tokens(18, 5000 + i, vocab),
    })),
  });
  training = parseRunConfig({
    model: modelDir,
    prompts: { file: '/unused.jsonl' },
    training: {
      loss: 'simpo',
      beta: 2,
      gammaBetaRatio: 0.5,
      learningRate: 1e-3,
      batchSize: 1,
      checkpointEvery: 20,
      warmupRatio: 0.1,
      seed: 3,
      engine: { threads: 1 },
    },
  }).training;
});

const input = (roundDir: string): TrainPolicyInput => ({
  runId: 'train-test',
  round: 1,
  roundDir,
  referenceModelDir: modelDir,
  dataFile,
  training,
  learningRate: training.learningRate[0],
  notify: [],
});
const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

test('cancel stops the engine, keeps its checkpoint; retry resumes to same weights', async () => {
  const full = await runIn(new MockActivityEnvironment(), trainPolicy, input(join(root, 'full')));
  assert.equal(full.steps, RECORDS);
  assert.equal(full.resumedFrom, null);
  assert.equal(full.modelDir, join(root, 'full', 'train', 'final'));
  for (const k of ['loss', 'grad_norm', 'learning_rate', 'rewards/accuracies', 'rewards/margins'])
    assert.ok(Number.isFinite(full.metrics[k]), `metric ${k}`);

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
  const ckpts = (await readdir(join(dir, 'train', 'checkpoints'))).filter((n) =>
    n.startsWith('step-'),
  );
  assert.ok(ckpts.length >= 1, 'checkpoint kept');
  const newest = Math.max(...ckpts.map((n) => Number(n.slice(5))));
  assert.ok(newest >= cancelledAt && newest < RECORDS, `newest checkpoint ${newest}`);
  await stat(join(dir, 'train', 'checkpoints', `step-${String(newest).padStart(8, '0')}`, 'DONE'));
  await assert.rejects(
    stat(join(dir, 'train', 'final')),
    'no final model from the cancelled attempt',
  );

  const retry = new MockActivityEnvironment({ heartbeatDetails: { step: cancelledAt } });
  const steps: number[] = [];
  retry.on('heartbeat', (d: { step: number }) => steps.push(d.step));
  const resumed = await runIn(retry, trainPolicy, input(dir));
  assert.equal(resumed.resumedFrom, newest);
  assert.equal(resumed.steps, RECORDS);
  assert.ok(
    steps.every((s) => s >= newest),
    'the retry does not redo finished steps',
  );
  assert.deepEqual(
    await readFile(join(resumed.modelDir, 'model.safetensors')),
    await readFile(join(full.modelDir, 'model.safetensors')),
  );
  const { tokens_per_s: _a, ...m1 } = resumed.metrics;
  const { tokens_per_s: _b, ...m0 } = full.metrics;
  assert.deepEqual(m1, m0, 'same last-step metrics, speed aside');
  await stat(join(resumed.modelDir, 'tokenizer.json'));

  // Done is done: a third call reuses the manifest without running the engine.
  const again = await runIn(new MockActivityEnvironment(), trainPolicy, input(dir));
  assert.equal(again.steps, RECORDS);
  assert.deepEqual(again.metrics, resumed.metrics);
});

test('a retry stops an engine a dead attempt left on the same dir, then resumes', async () => {
  const dir = join(root, 'orphan');
  const first = new MockActivityEnvironment();
  let pid = 0;
  let started!: () => void;
  const hasCheckpoint = new Promise<void>((r) => (started = r));
  first.on('heartbeat', (d: { checkpoint: string | null; pid: number }) => {
    pid = d.pid;
    if (d.checkpoint) started();
  });
  // The first attempt's worker "dies": nobody cancels it, its engine keeps training.
  const abandoned = runIn(first, trainPolicy, input(dir)).then(
    () => 'finished',
    (e: Error) => e.message,
  );
  await hasCheckpoint;
  assert.ok(alive(pid));
  const retry = await runIn(new MockActivityEnvironment(), trainPolicy, input(dir));
  assert.equal(alive(pid), false, 'the leftover engine was stopped');
  assert.match(await abandoned, /engine stopped \(exit 143\)/);
  assert.ok(retry.resumedFrom !== null && retry.resumedFrom > 0);
  const full = join(root, 'full', 'train', 'final', 'model.safetensors');
  assert.deepEqual(await readFile(join(retry.modelDir, 'model.safetensors')), await readFile(full));
});

test('bad data is a non-retryable BadInput with the engine error line', async () => {
  const bad = join(root, 'bad.bin');
  await writeTokData(bad, {
    kind: 'preference',
    records: [{ prompt: [1, 2], chosen: [99999], rejected: [3] }],
  });
  await assert.rejects(
    runIn(new MockActivityEnvironment(), trainPolicy, {
      ...input(join(root, 'bad')),
      dataFile: bad,
    }),
    (e: Error & { type?: string; nonRetryable?: boolean }) =>
      e.type === 'BadInput' &&
      e.nonRetryable === true &&
      /"error"/.test(e.message) &&
      /99999|vocab/.test(e.message),
  );
});

test('initPolicy runs SFT then offline SimPO once; same inputs again reuse the cache', async () => {
  const sft = join(root, 'sft.jsonl');
  await writeFile(
    sft,
    Array.from({ length: 12 }, (_, i) =>
      JSON.stringify({ prompt: `Sort the digits: ${i % 10} 1`, completion: `1 ${i % 10}` }),
    ).join('\n') + '\n',
  );
  const pairs = join(root, 'offline.jsonl');
  await writeFile(
    pairs,
    Array.from({ length: 6 }, (_, i) =>
      JSON.stringify({
        prompt: `Repeat the digits: ${i} 2`,
        chosen: `${i} 2`,
        rejected: `2 ${i} 5`,
      }),
    ).join('\n') + '\n',
  );
  const cfg = parseRunConfig({
    model: modelDir,
    prompts: { file: '/unused.jsonl' },
    storage: join(root, 'store'),
    training: { engine: { threads: 1 } },
    init: {
      sft: { data: sft, epochs: 2, learningRate: 1e-3 },
      offline: { data: pairs, loss: 'simpo', learningRate: 1e-4 },
    },
  });
  const input = (runId: string) => ({
    runId,
    runDir: join(root, 'store', 'runs', runId),
    baseModel: modelDir,
    init: cfg.init!,
    training: cfg.training,
    notify: [],
  });
  const first = await runIn(new MockActivityEnvironment(), initPolicy, input('a'));
  assert.equal(first.sft!.records, 12);
  assert.equal(first.offline!.records, 6);
  assert.equal(first.sft!.cached, false);
  assert.ok(
    first.modelDir === first.offline!.modelDir &&
      first.modelDir.startsWith(join(root, 'store', 'cache')),
  );
  assert.ok(
    Number.isFinite(first.sft!.metrics.loss) &&
      Number.isFinite(first.offline!.metrics['rewards/margins']),
  );
  const weights = await readFile(join(first.modelDir, 'model.safetensors'));
  assert.notDeepEqual(
    weights,
    await readFile(join(modelDir, 'model.safetensors')),
    'training changed the weights',
  );

  const second = await runIn(new MockActivityEnvironment(), initPolicy, input('b'));
  assert.equal(second.sft!.cached, true);
  assert.equal(second.offline!.cached, true);
  assert.equal(second.modelDir, first.modelDir);
  assert.deepEqual(await readFile(join(second.modelDir, 'model.safetensors')), weights);

  await writeFile(sft, '{"prompt": "x", "completion": "y"}\n{"prompt": "x"}\n');
  await assert.rejects(
    runIn(new MockActivityEnvironment(), initPolicy, input('c')),
    (e: Error & { type?: string }) =>
      e.type === 'BadInput' && e.message.includes(`init.sft.data: ${sft}:2:`),
  );
  // A missing seed file fails once (BadInput), not ten retries of ENOENT.
  await rm(sft);
  await assert.rejects(
    runIn(new MockActivityEnvironment(), initPolicy, input('d')),
    (e: Error & { type?: string; nonRetryable?: boolean }) =>
      e.type === 'BadInput' &&
      e.nonRetryable === true &&
      e.message.startsWith(`init.sft.data: cannot read ${sft}`),
  );
});
