// TensorBoard logs, read back by the tensorboard Python package: the trainer's per-step metrics
// (a real engine run, cancelled after a checkpoint and resumed) match the engine's own JSON lines
// step for step, each step once; the run report's per-round scalars match report.json.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { appendFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MockActivityEnvironment } from '@temporalio/testing';
import { parseRunConfig } from '../../config/index.ts';
import { newestCheckpoint } from '../../activities/engine-train.ts';
import { trainPolicy } from '../../activities/train.ts';
import type { TrainPolicyInput, TrainPolicyResult } from '../../contracts/activities.ts';
import { crc32c, maskedCrc32c } from '../../lib/tensorboard.ts';
import { writeTokData } from '../../lib/tokdata.ts';
import { writeTinyTokenizer } from '../helpers/tiny-tokenizer.ts';

const REPO = join(import.meta.dirname, '..', '..');
const ENGINE = join(REPO, 'engine', 'build', 'opsr-engine');
const PYTHON = join(REPO, '.venv', 'bin', 'python');
const root = await mkdtemp(join(tmpdir(), 'opsr-tensorboard-'));
after(() => rm(root, { recursive: true, force: true }));

type Scalars = Record<string, Record<string, [number, number][]>>;
const readBack = (logdir: string): Scalars =>
  JSON.parse(
    execFileSync(PYTHON, [join(REPO, 'test', 'helpers', 'tensorboard_scalars.py'), logdir], {
      encoding: 'utf8',
    }),
  );

test('CRC32C and its TFRecord mask match the published check values', () => {
  assert.equal(crc32c(Buffer.from('123456789')), 0xe3069283); // RFC 3720 check value
  assert.equal(crc32c(Buffer.alloc(32)), 0x8a9136aa); // RFC 3720 B.4: 32 bytes of zeros
  const c = 0x8a9136aa;
  assert.equal(
    maskedCrc32c(Buffer.alloc(32)),
    ((((c >>> 15) | (c << 17)) >>> 0) + 0xa282ead8) >>> 0,
  );
});

test('TensorBoard trainer metrics equal engine JSON lines, each step once on resume', async () => {
  const modelDir = join(root, 'model');
  const vocab = await writeTinyTokenizer(modelDir);
  const cfg = join(root, 'gpt2.json');
  await writeFile(
    cfg,
    JSON.stringify({
      n_embd: 32,
      n_layer: 1,
      n_head: 2,
      n_positions: 64,
      vocab_size: vocab,
      layer_norm_epsilon: 1e-5,
      n_inner: null,
      activation_function: 'gelu_new',
    }),
  );
  execFileSync(ENGINE, ['init', '--config', cfg, '--out', modelDir, '--seed', '2'], {
    stdio: 'pipe',
  });
  const RECORDS = 400;
  const ids = (n: number, s: number) =>
    Array.from({ length: n }, (_, i) => (s * 7919 + i * 104729) % vocab);
  const dataFile = join(root, 'pairs.bin');
  await writeTokData(dataFile, {
    kind: 'preference',
    records: Array.from({ length: RECORDS }, (_, i) => ({
      prompt: ids(8, i + 1),
      chosen: ids(10, 500 + i),
      rejected: ids(9, 900 + i),
    })),
  });
  const training = parseRunConfig({
    model: modelDir,
    prompts: { file: '/unused.jsonl' },
    training: {
      loss: 'simpo',
      learningRate: 1e-3,
      checkpointEvery: 10,
      seed: 1,
      engine: { threads: 1 },
    },
  }).training;
  const runDir = join(root, 'runs', 'tb-run');
  const roundDir = join(runDir, 'round-1');
  const input: TrainPolicyInput = {
    runId: 'tb-run',
    round: 1,
    roundDir,
    referenceModelDir: modelDir,
    dataFile,
    training,
    learningRate: 1e-3,
    notify: [],
  };

  // Cancelled after a checkpoint; the retry resumes from it.
  const env = new MockActivityEnvironment();
  let cancelledAt = 0;
  env.on('heartbeat', (d: { step: number; checkpoint: string | null }) => {
    if (!cancelledAt && d.checkpoint && d.step >= 15) {
      cancelledAt = d.step;
      env.cancel();
    }
  });
  await assert.rejects(env.run(trainPolicy, input));
  assert.ok(cancelledAt >= 15, 'cancelled mid-run');
  // A killed worker's engine logs steps after its newest checkpoint; the retry redoes them.
  const newest = (await newestCheckpoint(join(roundDir, 'train')))!;
  await appendFile(
    join(roundDir, 'train', 'metrics.jsonl'),
    `${JSON.stringify({ event: 'step', step: newest + 1, loss: 999 })}\n`,
  );
  const done = (await new MockActivityEnvironment().run(trainPolicy, input)) as TrainPolicyResult;
  assert.equal(done.resumedFrom, newest);

  const lines = (await readFile(join(roundDir, 'train', 'metrics.jsonl'), 'utf8'))
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Record<string, number>);
  assert.deepEqual(
    lines.map((e) => e.step),
    Array.from({ length: RECORDS }, (_, i) => i + 1),
    'steps 1..N once each',
  );
  const { tokens_per_s: _t, ...last } = lines[RECORDS - 1];
  const { tokens_per_s: _u, ...final } = done.metrics;
  assert.deepEqual(Object.fromEntries(Object.entries(last).filter(([k]) => k in final)), final);

  const tb = readBack(join(root, 'runs'));
  const run = tb[join('tb-run', 'tensorboard', 'round-1')];
  assert.ok(run, `runs found: ${Object.keys(tb).join(', ')}`);
  for (const tag of [
    'loss',
    'grad_norm',
    'learning_rate',
    'rewards/chosen',
    'rewards/rejected',
    'rewards/margins',
    'rewards/accuracies',
    'logps/chosen',
    'logps/rejected',
    'epoch',
  ]) {
    const got = run[`train/${tag}`];
    assert.ok(got, `train/${tag} in TensorBoard`);
    assert.deepEqual(
      got.map(([s]) => s),
      lines.map((e) => e.step),
      `train/${tag}: one point per step`,
    );
    // simple_value is a float32: the engine's value rounded to float32, exactly.
    got.forEach(([s, v], i) =>
      assert.equal(v, Math.fround(lines[i][tag]), `train/${tag} at step ${s}`),
    );
  }
});
