// samplePairs against the real embedded server (server/, generating real tokens with the engine):
// an attempt interrupted after some shards and retried with its heartbeat details ends with
// exactly the samples of an uninterrupted run: no duplicate, no missing index, finished shards
// not redone.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtemp, rm, writeFile, stat, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MockActivityEnvironment } from '@temporalio/testing';
import { parseRunConfig, type RunConfig } from '../../config/index.ts';
import { prepareRun } from '../../activities/prepare.ts';
import { deriveSeed, prefixed } from '../../activities/sample-pairs.ts';
import { createActivities, SamplerPool } from '../../activities/index.ts';
import type { SamplePairsInput, SamplerEndpoint } from '../../contracts/activities.ts';
import type { SampleRecord } from '../../activities/records.ts';
import { readJsonl } from '../../lib/jsonl.ts';
import { writeTinyTokenizer } from '../helpers/tiny-tokenizer.ts';

const samplers = new SamplerPool();
const { samplePairs } = createActivities({ samplers });

// MockActivityEnvironment.run does not infer the result type from the activity.
const runIn = <I, O>(env: MockActivityEnvironment, fn: (i: I) => Promise<O>, i: I) =>
  env.run(fn, i) as Promise<O>;
const REPO = join(import.meta.dirname, '..', '..');
const ENGINE = join(REPO, 'engine', 'build', 'opsr-engine');
const root = await mkdtemp(join(tmpdir(), 'opsr-act-sample-'));
const N = 10;
let config: RunConfig;
let endpoint: SamplerEndpoint;
let promptsFile: string;

before(async () => {
  const modelDir = join(root, 'model');
  const vocab = await writeTinyTokenizer(modelDir);
  const cfg = join(root, 'gpt2.json');
  await writeFile(
    cfg,
    JSON.stringify({
      n_embd: 32,
      n_layer: 2,
      n_head: 2,
      n_positions: 128,
      vocab_size: vocab,
      layer_norm_epsilon: 1e-5,
      n_inner: null,
      activation_function: 'gelu_new',
    }),
  );
  execFileSync(ENGINE, ['init', '--config', cfg, '--out', modelDir, '--seed', '3'], {
    stdio: 'pipe',
  });
  const prompts = join(root, 'prompts.jsonl');
  await writeFile(
    prompts,
    Array.from({ length: N }, (_, i) =>
      JSON.stringify({ prompt: `Sort the digits: ${i} ${9 - i} 4` }),
    ).join('\n') + '\n',
  );
  config = parseRunConfig({
    model: modelDir,
    storage: join(root, 'store'),
    prompts: { file: prompts },
    sampling: {
      lifecycle: 'embedded',
      maxTokens: 6,
      temperature: 1.0,
      topP: 1,
      seed: 11,
      shardSize: 3,
      concurrency: 4,
      embedded: { threads: 1 },
    },
    training: { maxLength: 128, maxPromptLength: 64 }, // within the model's context
  });
  const prep = await prepareRun({ runId: 'sample-test', config });
  promptsFile = prep.promptsFile;
  endpoint = await samplers.ensure({ runId: 'sample-test', modelDir, sampling: config.sampling });
});
after(async () => {
  await samplers.close();
  await rm(root, { recursive: true, force: true });
});

const input = (roundDir: string): SamplePairsInput => ({
  runId: 'sample-test',
  round: 1,
  roundDir,
  promptsFile,
  endpoint,
  sampling: config.sampling,
  prefixes: config.prefixes,
  chosenScore: 10,
  rejectedScore: 3,
  notify: [],
});

test('interrupted sampling resumes from shards: same pairs as an uninterrupted run', async () => {
  const full = await runIn(new MockActivityEnvironment(), samplePairs, input(join(root, 'full')));
  assert.equal(full.count, N);
  assert.equal(full.shards, 4);
  assert.equal(full.resumedShards, 0);
  const want = await readJsonl<SampleRecord>(full.samplesFile);
  assert.deepEqual(
    want.map((r) => r.index),
    [...Array(N).keys()],
  );
  for (const r of want) {
    assert.equal(r.chosen.seed, deriveSeed(11, 1, r.index, 'chosen'));
    assert.equal(r.rejected.seed, deriveSeed(11, 1, r.index, 'rejected'));
    assert.ok(['stop', 'length'].includes(r.chosen.finish_reason));
    assert.ok(r.chosen.tokens >= 1 && r.chosen.tokens <= 6);
    assert.equal(r.chosenScore, 10);
    assert.equal(r.rejectedScore, 3);
    assert.equal(r.prompt, `Sort the digits: ${r.index} ${9 - r.index} 4`);
  }
  // Real sampling: different prefixes and seeds give different answers somewhere.
  assert.ok(want.some((r) => r.chosen.text !== r.rejected.text));

  // Interrupt the second attempt once two shards are on disk.
  const dir = join(root, 'interrupted');
  const env = new MockActivityEnvironment();
  let last: unknown;
  env.on('heartbeat', (d: { shardsDone: number }) => {
    last = d;
    if (d.shardsDone >= 2) env.cancel();
  });
  await assert.rejects(runIn(env, samplePairs, input(dir)));
  const lastDetails = last as { shardsDone: number; samplesDone: number };
  assert.ok(
    lastDetails.shardsDone >= 2 && lastDetails.shardsDone < 4,
    `interrupted after ${lastDetails.shardsDone} shards`,
  );
  await assert.rejects(
    stat(join(dir, 'samples.jsonl')),
    'no final file from an interrupted attempt',
  );
  const shard0 = join(dir, 'samples', 'shard-00000.jsonl');
  const mtime0 = (await stat(shard0)).mtimeMs;
  const body0 = await readFile(shard0, 'utf8');

  // The retry gets the last heartbeat's details, as Temporal hands them over.
  const retry = new MockActivityEnvironment({ heartbeatDetails: lastDetails });
  const beats: { shardsDone: number }[] = [];
  retry.on('heartbeat', (d: { shardsDone: number }) => beats.push(d));
  const resumed = await runIn(retry, samplePairs, input(dir));
  assert.ok(resumed.resumedShards >= 2, `reused ${resumed.resumedShards} shards`);
  assert.equal(
    beats[0].shardsDone,
    resumed.resumedShards,
    'the retry starts counting from the shards on disk',
  );
  assert.equal((await stat(shard0)).mtimeMs, mtime0, 'a finished shard is not rewritten');
  assert.equal(await readFile(shard0, 'utf8'), body0);
  const got = await readJsonl<SampleRecord>(resumed.samplesFile);
  assert.deepEqual(
    got.map((r) => r.index),
    [...Array(N).keys()],
    'no duplicates, no gaps',
  );
  assert.deepEqual(got, want);

  // A third call finds the manifest and reuses the whole result.
  const again = await runIn(new MockActivityEnvironment(), samplePairs, input(dir));
  assert.equal(again.resumedShards, 4);
  assert.deepEqual(await readJsonl(again.samplesFile), want);
});

test('prefixes: the template goes in front of a plain prompt or of the last user turn', () => {
  const t = config.prefixes.chosenTemplate;
  assert.equal(
    prefixed({ index: 0, prompt: 'Sort the digits: 1 2' }, t, 10),
    'Please produce a top-notch response that merits a perfect score of 10 out of 10. ' +
      'Sort the digits: 1 2',
  );
  const chat = prefixed(
    {
      index: 0,
      messages: [
        { role: 'user', content: 'a' },
        { role: 'assistant', content: 'b' },
        { role: 'user', content: 'c' },
        { role: 'assistant', content: 'd' },
      ],
    },
    config.prefixes.rejectedTemplate,
    3,
  );
  assert.deepEqual(chat, [
    { role: 'user', content: 'a' },
    { role: 'assistant', content: 'b' },
    {
      role: 'user',
      content: 'Please produce a good response that merits a perfect score of 3 out of 10. c',
    },
    { role: 'assistant', content: 'd' },
  ]);
});

test('one embedded server per run, replaced on new policy; other runs keep theirs', async () => {
  const other = join(root, 'model2');
  execFileSync('cp', ['-r', join(root, 'model'), other]);
  // Another run (an ablation arm) samples another policy at the same time: its own server.
  const e2 = await samplers.ensure({ runId: 'arm-b', modelDir: other, sampling: config.sampling });
  assert.equal(e2.modelDir, other);
  assert.notEqual(e2.baseURL, endpoint.baseURL);
  for (const e of [endpoint, e2]) {
    const models = (await (await fetch(`${e.baseURL}/models`)).json()) as {
      data: { id: string }[];
    };
    assert.deepEqual(
      models.data.map((m) => m.id),
      ['opsr-policy'],
    );
  }
  // Runs on the same policy share its server; it closes after the last of them releases it.
  assert.deepEqual(
    await samplers.ensure({ runId: 'arm-c', modelDir: other, sampling: config.sampling }),
    e2,
  );
  await samplers.release({ runId: 'arm-b', endpoint: e2 });
  assert.equal((await fetch(`${e2.baseURL}/models`)).status, 200);
  await samplers.release({ runId: 'arm-c', endpoint: e2 });
  await assert.rejects(fetch(`${e2.baseURL}/models`));
  // The first run moves on to the new policy: its old server is replaced.
  const e3 = await samplers.ensure({
    runId: 'sample-test',
    modelDir: other,
    sampling: config.sampling,
  });
  await assert.rejects(
    fetch(`${endpoint.baseURL}/models`),
    "the previous policy's server is closed",
  );
  assert.equal((await fetch(`${e3.baseURL}/models`)).status, 200);
  await samplers.release({ runId: 'sample-test', endpoint: e3 });
  await assert.rejects(fetch(`${e3.baseURL}/models`));
});
