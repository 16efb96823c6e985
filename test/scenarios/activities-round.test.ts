// One round through the real activities in the order preferenceRound calls them (no Temporal):
// the embedded server samples a tiny engine-made model, the pairs are filtered, scored, tokenized
// and trained on by the engine, and the trained policy is served and evaluated. Checks that each
// activity's output is the next one's input and that the round manifest records them.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtemp, rm, writeFile, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MockActivityEnvironment } from '@temporalio/testing';
import { parseRunConfig } from '../../config/index.ts';
import { createActivities, SamplerPool } from '../../activities/index.ts';
import { readJsonl } from '../../lib/jsonl.ts';
import { readTokData } from '../../lib/tokdata.ts';
import { sha256File } from '../../lib/hash.ts';
import { OPERATIONS, promptText } from '../../tasks/digits.ts';
import { writeTinyTokenizer } from '../helpers/tiny-tokenizer.ts';

const samplers = new SamplerPool();
const act = createActivities({ samplers });

// MockActivityEnvironment.run does not infer the result type from the activity.
const runIn = <I, O>(fn: (i: I) => Promise<O>, i: I) =>
  new MockActivityEnvironment().run(fn, i) as Promise<O>;
const REPO = join(import.meta.dirname, '..', '..');
const root = await mkdtemp(join(tmpdir(), 'opsr-act-round-'));
after(async () => {
  await samplers.close();
  await rm(root, { recursive: true, force: true });
});

test('a round: sample, filter, rewards, dataset, train, manifest, evaluate policy', async () => {
  const modelDir = join(root, 'base');
  const vocab = await writeTinyTokenizer(modelDir);
  const gpt2 = join(root, 'gpt2.json');
  await writeFile(
    gpt2,
    JSON.stringify({
      n_embd: 32,
      n_layer: 1,
      n_head: 2,
      n_positions: 256,
      vocab_size: vocab,
      layer_norm_epsilon: 1e-5,
      n_inner: null,
      activation_function: 'gelu_new',
    }),
  );
  execFileSync(
    join(REPO, 'engine', 'build', 'opsr-engine'),
    ['init', '--config', gpt2, '--out', modelDir, '--seed', '1'],
    { stdio: 'pipe' },
  );
  const prompts = join(root, 'prompts.jsonl');
  const texts = Array.from({ length: 8 }, (_, i) =>
    promptText({ op: OPERATIONS[i % OPERATIONS.length], digits: [i, (i + 3) % 10, (i + 6) % 10] }),
  );
  await writeFile(prompts, texts.map((prompt) => JSON.stringify({ prompt })).join('\n') + '\n');
  const config = parseRunConfig({
    runId: 'round-test',
    model: modelDir,
    storage: join(root, 'store'),
    prompts: { file: prompts },
    rounds: 1,
    sampling: {
      maxTokens: 6,
      temperature: 1,
      seed: 4,
      shardSize: 3,
      concurrency: 4,
      embedded: { threads: 1 },
    },
    filter: { dropTruncated: false, scoreTalkPatterns: [] },
    training: {
      loss: 'simpo',
      learningRate: 1e-3,
      batchSize: 2,
      engine: { threads: 1 },
      maxLength: 40,
      maxPromptLength: 30,
    },
    rewardModel: { type: 'builtin', name: 'digits' },
    evaluation: { prompts: { file: prompts, limit: 4 } },
  });
  const prep = await runIn(act.prepareRun, { runId: 'round-test', config });
  const roundDir = join(prep.runDir, 'round-1');
  const endpoint = await runIn(act.ensureSampler, {
    runId: prep.runId,
    modelDir,
    sampling: config.sampling,
  });
  const samples = await runIn(act.samplePairs, {
    runId: prep.runId,
    round: 1,
    roundDir,
    promptsFile: prep.promptsFile,
    endpoint,
    sampling: config.sampling,
    prefixes: config.prefixes,
    chosenScore: 10,
    rejectedScore: config.prefixes.rejectedScores[0],
    notify: [],
  });
  await runIn(act.releaseSampler, { runId: prep.runId, endpoint });
  assert.equal(samples.count, 8);
  const pairs = await runIn(act.filterPairs, {
    runId: prep.runId,
    round: 1,
    roundDir,
    samplesFile: samples.samplesFile,
    filter: config.filter,
  });
  assert.equal(pairs.kept + pairs.filtered, 8);
  assert.ok(pairs.kept >= 1, `kept ${pairs.kept}: ${JSON.stringify(pairs.filteredBy)}`);
  const rewards = await runIn(act.analyzeRewards, {
    runId: prep.runId,
    round: 1,
    roundDir,
    pairsFile: pairs.pairsFile,
    rewardModel: config.rewardModel!,
    notify: [],
  });
  assert.equal(rewards.count, pairs.kept);
  const dataset = await runIn(act.buildDataset, {
    runId: prep.runId,
    round: 1,
    roundDir,
    pairsFile: pairs.pairsFile,
    modelDir,
    training: config.training,
  });
  assert.equal((await readTokData(dataset.dataFile)).records.length, dataset.records);
  const trained = await runIn(act.trainPolicy, {
    runId: prep.runId,
    round: 1,
    roundDir,
    referenceModelDir: modelDir,
    dataFile: dataset.dataFile,
    training: config.training,
    learningRate: config.training.learningRate[0],
    notify: [],
  });
  assert.equal(trained.steps, Math.ceil(dataset.records / 2));
  assert.notEqual(
    await sha256File(join(trained.modelDir, 'model.safetensors')),
    await sha256File(join(modelDir, 'model.safetensors')),
  );
  const manifest = await runIn(act.writeRoundManifest, {
    runId: prep.runId,
    round: 1,
    roundDir,
    configHash: prep.configHash,
    referenceModelDir: modelDir,
    rejectedScore: 3,
    artifacts: {
      samples: samples.samplesFile,
      pairs: pairs.pairsFile,
      rewards: rewards.rewardsFile,
      data: dataset.dataFile,
      model: trained.modelDir,
    },
    counts: { kept: pairs.kept, records: dataset.records },
    metrics: trained.metrics,
  });
  const m = JSON.parse(await readFile(manifest.manifest, 'utf8'));
  assert.equal(m.configHash, prep.configHash);
  assert.equal(m.artifacts.pairs.sha256, await sha256File(pairs.pairsFile));
  assert.equal(m.metrics.loss, trained.metrics.loss);

  // The trained policy is what the next round serves: evaluate it through a fresh server.
  const next = await runIn(act.ensureSampler, {
    runId: prep.runId,
    modelDir: trained.modelDir,
    sampling: config.sampling,
  });
  const ev = await runIn(act.evaluatePolicy, {
    runId: prep.runId,
    label: 'round-1',
    runDir: prep.runDir,
    endpoint: next,
    evaluation: config.evaluation!,
    sampling: config.sampling,
    prefixes: config.prefixes,
    rewardModel: config.rewardModel!,
    prefixCurve: false,
    notify: [],
  });
  await runIn(act.releaseSampler, { runId: prep.runId, endpoint: next });
  assert.equal(ev.count, 4);
  assert.ok(ev.meanReward >= 0 && ev.meanReward <= 1);
  assert.equal((await readJsonl(join(prep.runDir, 'eval', 'round-1', 'answers.jsonl'))).length, 4);
});
