// Two rounds end to end, nothing faked: a Temporal dev server, the workers with the real
// activities, the embedded OpenAI-compatible sampler over the engine, the engine trainer, on a
// tiny randomly initialized GPT-2 (`opsr-engine init`). Checks the round chain, the artifacts
// against their manifests, and that running the same run again reuses every artifact.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { sha256File } from '../../lib/hash.ts';
import { readJsonl } from '../../lib/jsonl.ts';
import { readTokData } from '../../lib/tokdata.ts';
import { OPERATIONS, promptText } from '../../tasks/digits.ts';
import { createWorkers, installWorkerLogging } from '../../workers/index.ts';
import {
  SEARCH_ATTRIBUTES,
  TASK_QUEUES,
  WORKFLOW_TYPES,
  type RunResult,
} from '../../contracts/workflows.ts';
import { createTestEnv } from '../helpers/temporal.ts';
import { ENGINE } from '../helpers/tiny-gpt2.ts';
import { writeTinyTokenizer } from '../helpers/tiny-tokenizer.ts';

let env: TestWorkflowEnvironment;
let root: string;
let baseModel: string;
let config: Record<string, unknown>;

before(async () => {
  installWorkerLogging();
  root = await mkdtemp(path.join(os.tmpdir(), 'opsr-integration-'));
  baseModel = path.join(root, 'base');
  const vocab = await writeTinyTokenizer(baseModel);
  const shape = path.join(root, 'gpt2.json');
  await writeFile(
    shape,
    JSON.stringify({
      n_embd: 32,
      n_layer: 2,
      n_head: 2,
      n_positions: 256,
      vocab_size: vocab,
      layer_norm_epsilon: 1e-5,
      n_inner: null,
      activation_function: 'gelu_new',
    }),
  );
  execFileSync(ENGINE, ['init', '--config', shape, '--out', baseModel, '--seed', '7'], {
    stdio: 'pipe',
  });
  const problems = (n: number, shift: number) =>
    Array.from({ length: n }, (_, i) => ({
      prompt: promptText({
        op: OPERATIONS[i % OPERATIONS.length],
        digits: [(i + shift) % 10, (i + 3) % 10, (i + 6 + shift) % 10],
      }),
    }));
  const prompts = path.join(root, 'prompts.jsonl');
  await writeFile(
    prompts,
    problems(6, 0)
      .map((p) => JSON.stringify(p) + '\n')
      .join(''),
  );
  const evalPrompts = path.join(root, 'eval.jsonl');
  await writeFile(
    evalPrompts,
    problems(4, 1)
      .map((p) => JSON.stringify(p) + '\n')
      .join(''),
  );
  config = {
    runId: 'integration',
    model: baseModel,
    storage: path.join(root, 'store'),
    prompts: { file: prompts },
    rounds: 2,
    sampling: {
      maxTokens: 6,
      temperature: 1,
      seed: 4,
      shardSize: 4,
      concurrency: 4,
      embedded: { threads: 1 },
    },
    filter: { dropTruncated: false, scoreTalkPatterns: [] },
    training: {
      loss: 'simpo',
      learningRate: [1e-3, 5e-4],
      batchSize: 2,
      engine: { threads: 1 },
      maxLength: 200,
      maxPromptLength: 180,
    },
    rewardModel: { type: 'builtin', name: 'digits' },
    evaluation: { prompts: { file: evalPrompts }, prefixCurve: true, prefixScores: [1, 10] },
  };
  env = await createTestEnv();
});

after(async () => {
  await env?.teardown();
  if (root) await rm(root, { recursive: true, force: true });
});

async function run(workflowId: string): Promise<RunResult> {
  const w = await createWorkers({ connection: env.nativeConnection }); // the real activities
  const running = w.run();
  try {
    return await env.client.workflow.execute(WORKFLOW_TYPES.run, {
      taskQueue: TASK_QUEUES.control,
      workflowId,
      args: [config],
    });
  } finally {
    w.shutdown();
    await running;
  }
}

interface RoundManifest {
  runId: string;
  round: number;
  configHash: string;
  referenceModelDir: string;
  rejectedScore: number;
  artifacts: Record<string, { path: string; sha256: string; bytes: number }>;
  counts: Record<string, number>;
  metrics: Record<string, number>;
}

test('two rounds through Temporal with real activities, engine and embedded sampler', async () => {
  const result = await run('integration');
  const runDir = path.join(root, 'store', 'runs', 'integration');
  assert.equal(result.runDir, runDir);
  assert.deepEqual(
    result.rounds.map((r) => [r.round, r.rejectedScore]),
    [
      [1, 3],
      [2, 5],
    ],
  );
  assert.equal(result.stopped, false);
  assert.equal(result.finalModel, path.join(runDir, 'round-2', 'train', 'final'));

  const manifests: RoundManifest[] = [];
  for (const r of result.rounds) {
    const m = JSON.parse(await readFile(r.manifest, 'utf8')) as RoundManifest;
    manifests.push(m);
    assert.equal(m.runId, 'integration');
    assert.equal(m.round, r.round);
    assert.equal(m.configHash, result.configHash);
    assert.equal(m.rejectedScore, r.rejectedScore);
    // Every file artifact is on disk with the recorded hash and size.
    for (const [name, a] of Object.entries(m.artifacts)) {
      const st = await stat(a.path);
      if (st.isDirectory()) continue;
      assert.equal(await sha256File(a.path), a.sha256, `${name} hash`);
      assert.equal(st.size, a.bytes, `${name} size`);
    }
    assert.deepEqual(Object.keys(m.artifacts).sort(), [
      'data',
      'dataset',
      'model',
      'pairs',
      'rewards',
      'samples',
    ]);
    assert.equal(m.artifacts.model.path, r.modelDir);

    // 6 prompts, each sampled once with each prefix, in prompt order.
    const samples = await readJsonl<{ index: number; chosenScore: number; rejectedScore: number }>(
      m.artifacts.samples.path,
    );
    assert.deepEqual(
      samples.map((s) => s.index),
      [0, 1, 2, 3, 4, 5],
    );
    assert.ok(samples.every((s) => s.chosenScore === 10 && s.rejectedScore === r.rejectedScore));
    assert.equal(m.counts.prompts, 6);
    assert.equal(r.pairsKept + r.pairsFiltered, 6);
    assert.ok(r.pairsKept >= 1, JSON.stringify(r.filteredBy));
    assert.equal((await readJsonl(m.artifacts.pairs.path)).length, r.pairsKept);
    assert.equal((await readJsonl(m.artifacts.dataset.path)).length, m.counts.records);
    const data = await readTokData(m.artifacts.data.path);
    assert.equal(data.kind, 'preference');
    assert.equal(data.records.length, m.counts.records);
    assert.equal(m.counts.steps, Math.ceil(m.counts.records / 2));

    // A trained Hugging Face directory whose weights moved away from its reference.
    for (const f of ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json'])
      await stat(path.join(r.modelDir, f));
    assert.notEqual(
      await sha256File(path.join(r.modelDir, 'model.safetensors')),
      await sha256File(path.join(m.referenceModelDir, 'model.safetensors')),
    );
    assert.ok(Number.isFinite(r.train.loss), JSON.stringify(r.train));
    for (const x of [r.chosenReward, r.rejectedReward, r.policyReward])
      assert.ok(x !== null && x >= 0 && x <= 1, String(x));
  }
  // The chain: base -> round 1 -> round 2.
  assert.deepEqual(
    manifests.map((m) => m.referenceModelDir),
    [baseModel, result.rounds[0].modelDir],
  );

  assert.ok(result.baseReward !== null && result.baseReward >= 0 && result.baseReward <= 1);
  assert.deepEqual(
    result.prefixCurve?.map((p) => p.score),
    [1, 10],
  );
  assert.deepEqual(
    JSON.parse(await readFile(path.join(runDir, 'report.json'), 'utf8')),
    JSON.parse(JSON.stringify(result)),
  );
  assert.match(await readFile(path.join(runDir, 'report.md'), 'utf8'), /\| 2 \| 5 \| /);
  const d = await env.client.workflow.getHandle('integration').describe();
  assert.equal(d.typedSearchAttributes.get(SEARCH_ATTRIBUTES.phase), 'done');
  assert.equal(d.typedSearchAttributes.get(SEARCH_ATTRIBUTES.rejectedScore), 5);

  // Running it again (a resumed or repeated run) reuses the finished work: same artifacts, same
  // bytes.
  const again = await run('integration-again');
  assert.deepEqual(
    again.rounds.map((r) => r.modelDir),
    result.rounds.map((r) => r.modelDir),
  );
  for (const r of again.rounds) {
    const m = JSON.parse(await readFile(r.manifest, 'utf8')) as RoundManifest;
    assert.deepEqual(m.artifacts, manifests[r.round - 1].artifacts, `round ${r.round} artifacts`);
  }
  assert.deepEqual(
    again.rounds.map((r) => r.train),
    result.rounds.map((r) => r.train),
  );
});
