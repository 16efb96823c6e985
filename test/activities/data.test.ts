// Light activities on real files: filter cases, dataset tokenization round trip, reward analysis
// (builtin scorer and a tiny local HTTP scorer), manifests reused and invalidated, JSONL errors.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { mkdtemp, rm, writeFile, readFile, appendFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MockActivityEnvironment } from '@temporalio/testing';
import { parseRunConfig } from '../../config/index.ts';
import { filterPairs } from '../../activities/filter.ts';
import { buildDataset } from '../../activities/dataset.ts';
import { analyzeRewards } from '../../activities/rewards.ts';
import { writeRoundManifest, writeRunReport } from '../../activities/report.ts';
import { prepareRun } from '../../activities/prepare.ts';
import type { SampleRecord } from '../../activities/records.ts';
import { writeFileAtomic } from '../../lib/atomic.ts';
import { readJsonl, toJsonl, JsonlError } from '../../lib/jsonl.ts';
import { loadValidManifest, writeManifest } from '../../lib/manifest.ts';
import { hashJson, sha256File, stableStringify } from '../../lib/hash.ts';
import { createHash } from 'node:crypto';
import { readTokData } from '../../lib/tokdata.ts';
import { loadTokenizer } from '../../lib/tokenizer.ts';
import { mapLimit } from '../../lib/pool.ts';
import { writeTinyTokenizer } from '../helpers/tiny-tokenizer.ts';
import {
  OPERATIONS,
  answerDigits,
  answerText,
  promptText,
  type DigitsProblem,
} from '../../tasks/digits.ts';

// MockActivityEnvironment.run does not infer the result type from the activity.
const runIn = <I, O>(fn: (i: I) => Promise<O>, i: I) =>
  new MockActivityEnvironment().run(fn, i) as Promise<O>;
const root = await mkdtemp(join(tmpdir(), 'opsr-act-data-'));
after(() => rm(root, { recursive: true, force: true }));
const config = parseRunConfig({
  model: '/m',
  prompts: { file: '/p.jsonl' },
  training: { maxLength: 24, maxPromptLength: 10 },
});

function rec(
  index: number,
  chosen: string,
  rejected: string,
  extra: Partial<SampleRecord> = {},
): SampleRecord {
  const a = (text: string, seed: number) => ({
    text,
    finish_reason: 'stop',
    tokens: text.length,
    seed,
  });
  return {
    index,
    round: 1,
    prompt: `Sort the digits: 3 1 2`,
    chosen: a(chosen, 10 + index),
    rejected: a(rejected, 20 + index),
    chosenScore: 10,
    rejectedScore: 3,
    seed: 7,
    ...extra,
  };
}

test('filterPairs drops score talk, empty, truncated, identical pairs; counts each', async () => {
  const dir = join(root, 'filter');
  const samples = [
    rec(0, '1 2 3', '3 1 2'), // kept
    rec(1, 'Okay, here is a 10 out of 10 answer: 1 2 3', '1 3 2'), // scoreTalk (chosen)
    rec(2, '1 2 3', 'This response merits a score of 3: 2 1 3'), // scoreTalk (rejected)
    rec(3, '   ', '1 2'), // empty
    rec(4, '1 2 3', '1 2 3'), // identical
    {
      ...rec(5, '1 2 3 4 5 6', '2 1'),
      chosen: { text: '1 2 3 4 5 6', finish_reason: 'length', tokens: 6, seed: 15 },
    }, // truncated
    rec(6, 'HERE IS A TOP-NOTCH RESPONSE 1 2 3', '2 3 1'), // scoreTalk, case-insensitive
    rec(7, '1 2 3', '2 2 2'), // kept
  ];
  const samplesFile = join(dir, 'samples.jsonl');
  await writeFileAtomic(samplesFile, toJsonl(samples));
  const r = await filterPairs({
    runId: 'r',
    round: 1,
    roundDir: dir,
    samplesFile,
    filter: config.filter,
  });
  assert.deepEqual(r.filteredBy, { empty: 1, truncated: 1, identical: 1, scoreTalk: 3 });
  assert.equal(r.kept, 2);
  assert.equal(r.filtered, 6);
  const kept = await readJsonl<SampleRecord>(r.pairsFile);
  assert.deepEqual(
    kept.map((k) => k.index),
    [0, 7],
  );
  assert.deepEqual(kept[0], samples[0]); // same line shape, provenance kept

  // Switching a rule off keeps those pairs; the manifest of the first run does not apply.
  const r2 = await filterPairs({
    runId: 'r',
    round: 1,
    roundDir: dir,
    samplesFile,
    filter: { ...config.filter, dropIdentical: false },
  });
  assert.equal(r2.kept, 3);
  assert.equal(r2.filteredBy.identical, 0);

  // A bad pattern is a non-retryable BadInput naming the field.
  await assert.rejects(
    filterPairs({
      runId: 'r',
      round: 1,
      roundDir: dir,
      samplesFile,
      filter: { ...config.filter, scoreTalkPatterns: ['ok', '(unclosed'] },
    }),
    (e: Error & { type?: string; nonRetryable?: boolean }) =>
      e.type === 'BadInput' && e.nonRetryable === true && /scoreTalkPatterns\[1\]/.test(e.message),
  );
});

test('buildDataset: chat template, EOS after stop, truncated to limits, round-trips', async () => {
  const modelDir = join(root, 'model');
  const vocab = await writeTinyTokenizer(modelDir, { chatTemplate: true });
  const tok = await loadTokenizer(modelDir);
  assert.equal(tok.eosTokenId, vocab - 1);
  const dir = join(root, 'dataset');
  const pairs = [
    rec(0, 'the cat', 'a dog'),
    {
      ...rec(1, 'on the mat and then some more words here', 'no'),
      rejected: { text: 'no', finish_reason: 'length', tokens: 1, seed: 3 },
    },
    {
      ...rec(2, 'hi', 'ho'),
      prompt: undefined,
      messages: [
        { role: 'system', content: 'be brief' },
        { role: 'user', content: 'Sort the digits: 9 8' },
      ],
    },
  ];
  const pairsFile = join(dir, 'pairs.jsonl');
  await writeFileAtomic(pairsFile, toJsonl(pairs));
  const lim = { ...config.training, maxLength: 24, maxPromptLength: 10 };
  const r = await buildDataset({
    runId: 'r',
    round: 1,
    roundDir: dir,
    pairsFile,
    modelDir,
    training: lim,
  });
  assert.equal(r.records, 3);
  const data = await readTokData(r.dataFile);
  assert.equal(data.kind, 'preference');
  const recs = data.records as { prompt: number[]; chosen: number[]; rejected: number[] }[];
  const fullPrompt = tok.encode(
    tok.applyChatTemplate([{ role: 'user', content: pairs[0].prompt! }], {
      addGenerationPrompt: true,
    }),
    { addSpecialTokens: false },
  );
  assert.ok(fullPrompt.length > 10, 'the templated prompt is longer than maxPromptLength');
  assert.deepEqual(recs[0].prompt, fullPrompt.slice(-10)); // cut from the left
  assert.deepEqual(recs[0].chosen, [
    ...tok.encode('the cat', { addSpecialTokens: false }),
    tok.eosTokenId,
  ]);
  assert.equal(tok.decode(recs[0].rejected.slice(0, -1)), 'a dog');
  // Record 1: chosen cut so prompt + chosen = 24; rejected ended by length: no EOS.
  assert.equal(recs[1].prompt.length + recs[1].chosen.length, 24);
  assert.deepEqual(recs[1].rejected, tok.encode('no', { addSpecialTokens: false }));
  assert.ok(r.truncated >= 2);
  // Chat prompt: the template renders the whole conversation.
  const chatPrompt = tok.encode(
    tok.applyChatTemplate(pairs[2].messages!, { addGenerationPrompt: true }),
    { addSpecialTokens: false },
  );
  assert.deepEqual(recs[2].prompt, chatPrompt.slice(-10));
  for (const x of recs)
    assert.ok(x.prompt.length + Math.max(x.chosen.length, x.rejected.length) <= 24);

  const trl = await readJsonl<Record<string, unknown>>(r.trlFile);
  assert.equal(trl[0].prompt, pairs[0].prompt);
  assert.equal(trl[0].chosen, 'the cat');
  assert.equal(trl[0].rejected_score, 3);
  assert.equal(trl[0].chosen_seed, 10);
  assert.equal(trl[1].rejected_finish_reason, 'length');
  assert.deepEqual(trl[2].prompt, pairs[2].messages); // conversational variant
  assert.deepEqual(trl[2].chosen, [{ role: 'assistant', content: 'hi' }]);

  // A second call reuses the dataset (manifest matches) and returns the same counts.
  const before = await readFile(r.dataFile);
  const again = await buildDataset({
    runId: 'r',
    round: 1,
    roundDir: dir,
    pairsFile,
    modelDir,
    training: lim,
  });
  assert.deepEqual(again, r);
  assert.deepEqual(await readFile(r.dataFile), before);

  // No pair with both answers left: zero records and no engine data file, so the round fails
  // with its filter counts instead of an engine error retried ten times.
  const emptyDir = join(root, 'dataset-empty');
  const emptyPairs = join(emptyDir, 'pairs.jsonl');
  await writeFileAtomic(
    emptyPairs,
    toJsonl([
      { ...rec(0, '', 'a dog'), chosen: { text: '', finish_reason: 'length', tokens: 0, seed: 1 } },
    ]),
  );
  const none = await buildDataset({
    runId: 'r',
    round: 1,
    roundDir: emptyDir,
    pairsFile: emptyPairs,
    modelDir,
    training: lim,
  });
  assert.equal(none.records, 0);
  assert.equal(existsSync(none.dataFile), false);
});

test('analyzeRewards with the builtin digits scorer and with a local HTTP scorer', async () => {
  const dir = join(root, 'rewards');
  // Prompts and answers from the task's own generator, so the test follows its wording.
  const probs: DigitsProblem[] = [
    { op: OPERATIONS[0], digits: [3, 1, 2] },
    { op: OPERATIONS[0], digits: [7, 5, 9] },
    { op: OPERATIONS[0], digits: [4, 8] },
  ];
  const right = probs.map((p) => answerText(answerDigits(p)));
  const pairs = [
    { ...rec(0, right[0], '0 0 0'), prompt: promptText(probs[0]) }, // chosen 1, rejected 0
    // chosen 1, rejected 3/4
    { ...rec(1, right[1], `${right[1]} 9`), prompt: promptText(probs[1]) },
    { ...rec(2, '0', right[2]), prompt: promptText(probs[2]) }, // chosen 0, rejected 1
  ];
  const pairsFile = join(dir, 'pairs.jsonl');
  await writeFileAtomic(pairsFile, toJsonl(pairs));
  const b = await runIn(analyzeRewards, {
    runId: 'r',
    round: 1,
    roundDir: dir,
    pairsFile,
    rewardModel: { type: 'builtin', name: 'digits' },
    notify: [],
  });
  const rows = await readJsonl<{ index: number; chosen: number; rejected: number }>(b.rewardsFile);
  assert.deepEqual(rows, [
    { index: 0, chosen: 1, rejected: 0 },
    { index: 1, chosen: 1, rejected: 3 / 4 },
    { index: 2, chosen: 0, rejected: 1 },
  ]);
  assert.equal(b.count, 3);
  assert.ok(Math.abs(b.chosenMean! - 2 / 3) < 1e-12);
  assert.ok(Math.abs(b.rejectedMean! - (0 + 3 / 4 + 1) / 3) < 1e-12);
  assert.ok(Math.abs(b.gap! - (b.chosenMean! - b.rejectedMean!)) < 1e-12);
  assert.equal(b.chosenBetter, 2 / 3);
  await assert.rejects(
    runIn(analyzeRewards, {
      runId: 'r',
      round: 1,
      roundDir: join(root, 'rw2'),
      pairsFile,
      rewardModel: { type: 'builtin', name: 'nope' },
      notify: [],
    }),
    (e: Error & { type?: string }) =>
      e.type === 'BadInput' &&
      /rewardModel.name "nope"/.test(e.message) &&
      /digits/.test(e.message),
  );

  // HTTP scorer: reward = response length; it sees the prompt without prefix.
  const seen: { prompt: string; response: string }[] = [];
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (d) => (body += d));
    req.on('end', () => {
      const items = JSON.parse(body) as { prompt: string; response: string }[];
      seen.push(...items);
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ scores: items.map((i) => i.response.length) }));
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  after(() => server.close());
  const port = (server.address() as { port: number }).port;
  const h = await runIn(analyzeRewards, {
    runId: 'r',
    round: 1,
    roundDir: join(root, 'rw3'),
    pairsFile,
    rewardModel: { type: 'http', url: `http://127.0.0.1:${port}/score` },
    notify: [],
  });
  const len = pairs.map((p) => [p.chosen.text.length, p.rejected.text.length]);
  assert.equal(h.chosenMean, (len[0][0] + len[1][0] + len[2][0]) / 3);
  assert.equal(h.rejectedMean, (len[0][1] + len[1][1] + len[2][1]) / 3);
  assert.equal(h.chosenBetter, 0);
  assert.equal(seen.length, 6);
  assert.deepEqual(seen[0], { prompt: promptText(probs[0]), response: right[0] });
  assert.deepEqual(seen[1], { prompt: promptText(probs[0]), response: '0 0 0' });
  // Reused from the manifest: the scorer is not called again.
  const again = await runIn(analyzeRewards, {
    runId: 'r',
    round: 1,
    roundDir: join(root, 'rw3'),
    pairsFile,
    rewardModel: { type: 'http', url: `http://127.0.0.1:${port}/score` },
    notify: [],
  });
  assert.deepEqual(again, h);
  assert.equal(seen.length, 6);
});

test('manifests: reused while outputs match, invalid after a change; hash files/dirs', async () => {
  const dir = join(root, 'man');
  const out = join(dir, 'out.txt');
  await writeFileAtomic(out, 'hello\n');
  const mp = join(dir, 'm.json');
  await writeManifest(mp, {
    step: 's',
    configHash: 'c1',
    inputs: { a: 'x' },
    outputs: { out },
    counts: { n: 1 },
  });
  assert.ok(await loadValidManifest(mp, { step: 's', configHash: 'c1', inputs: { a: 'x' } }));
  assert.equal(
    await loadValidManifest(mp, { step: 's', configHash: 'c2', inputs: { a: 'x' } }),
    null,
  );
  assert.equal(
    await loadValidManifest(mp, { step: 's', configHash: 'c1', inputs: { a: 'y' } }),
    null,
  );
  await appendFile(out, 'tampered');
  assert.equal(
    await loadValidManifest(mp, { step: 's', configHash: 'c1', inputs: { a: 'x' } }),
    null,
  );

  const r = await writeRoundManifest({
    runId: 'r',
    round: 2,
    roundDir: dir,
    configHash: 'abc',
    referenceModelDir: '/ref',
    rejectedScore: 5,
    artifacts: { out, model: join(root, 'model') },
    counts: { kept: 3 },
    metrics: { loss: 0.5 },
  });
  const m = JSON.parse(await readFile(r.manifest, 'utf8'));
  assert.equal(m.round, 2);
  assert.equal(m.artifacts.out.bytes, 14);
  assert.match(m.artifacts.model.sha256, /^[0-9a-f]{64}$/);
  assert.deepEqual(m.counts, { kept: 3 });
});

test('lib: stable JSON hashing, JSONL errors name file and line, bounded concurrency', async () => {
  assert.equal(
    stableStringify({ b: 1, a: { d: [1, { f: 2, e: 3 }], c: undefined } }),
    '{"a":{"d":[1,{"e":3,"f":2}]},"b":1}',
  );
  assert.equal(hashJson({ x: 1, y: 2 }), hashJson({ y: 2, x: 1 }));
  assert.notEqual(hashJson({ x: 1 }), hashJson({ x: 2 }));
  const f = join(root, 'bad.jsonl');
  await writeFile(f, '{"a":1}\n\n{"a":2\n');
  await assert.rejects(
    readJsonl(f),
    (e: JsonlError) => e instanceof JsonlError && e.line === 3 && e.message.startsWith(`${f}:3:`),
  );
  let inFlight = 0,
    peak = 0;
  const out = await mapLimit([5, 1, 4, 2, 3], 2, async (x) => {
    peak = Math.max(peak, ++inFlight);
    await new Promise((r) => setTimeout(r, x * 3));
    inFlight--;
    return x * 10;
  });
  assert.deepEqual(out, [50, 10, 40, 20, 30]);
  assert.equal(peak, 2);
});

test('prepareRun: config snapshot, prompts; bad model dir/prompt, changed config', async () => {
  const m = join(root, 'prep-model');
  await writeFileAtomic(join(m, 'config.json'), '{"model_type": "gpt2"}');
  await writeFileAtomic(join(m, 'model.safetensors'), 'x');
  const prompts = join(root, 'prep-prompts.jsonl');
  await writeFile(
    prompts,
    Array.from({ length: 6 }, (_, i) => JSON.stringify({ prompt: `p${i}` })).join('\n') + '\n',
  );
  const cfg = parseRunConfig({
    model: m,
    storage: join(root, 'prep-store'),
    prompts: { file: prompts, limit: 4, shuffleSeed: 1 },
  });
  const r = await prepareRun({ runId: 'prep', config: cfg });
  assert.equal(r.promptCount, 4);
  assert.equal(r.runDir, join(root, 'prep-store', 'runs', 'prep'));
  assert.equal(r.configHash, hashJson(cfg));
  const list = await readJsonl<{ index: number; prompt: string }>(r.promptsFile);
  assert.deepEqual(
    list.map((p) => p.index),
    [0, 1, 2, 3],
  );
  assert.equal(new Set(list.map((p) => p.prompt)).size, 4);
  assert.notDeepEqual(
    list.map((p) => p.prompt),
    ['p0', 'p1', 'p2', 'p3'],
    'shuffled by seed',
  );
  assert.deepEqual(await prepareRun({ runId: 'prep', config: cfg }), r, 'idempotent');
  assert.deepEqual(
    JSON.parse(await readFile(r.configFile, 'utf8')),
    JSON.parse(JSON.stringify(cfg)),
  );

  const isBad = (re: RegExp) => (e: Error & { type?: string }) =>
    e.type === 'BadInput' && re.test(e.message);
  await assert.rejects(
    prepareRun({ runId: 'prep', config: { ...cfg, rounds: 2 } }),
    isBad(/different config/),
  );
  await assert.rejects(
    prepareRun({ runId: 'p2', config: { ...cfg, model: join(root, 'no-model') } }),
    isBad(/model: .*no-model is not a directory/),
  );
  // A bad record is one of the config's problems, listed with the others (never retried).
  await writeFile(prompts, '{"prompt": "ok"}\n{"text": "no"}\n');
  await assert.rejects(
    prepareRun({ runId: 'p3', config: cfg }),
    (e: Error & { type?: string; nonRetryable?: boolean }) =>
      e.type === 'ConfigError' &&
      e.nonRetryable === true &&
      new RegExp(`\n {2}prompts.file: ${prompts}:2: record needs "prompt"`).test(e.message),
  );
});

test('writeRunReport: report.json holds the result, report.md a row per round', async () => {
  const runDir = join(root, 'report');
  const round = (k: number) => ({
    round: k,
    rejectedScore: 1 + 2 * k,
    pairsKept: 10 - k,
    pairsFiltered: k,
    filteredBy: { scoreTalk: k },
    chosenReward: 0.5 + k / 10,
    rejectedReward: 0.4,
    policyReward: 0.3 + k / 10,
    train: { loss: 0.69 - k / 100, 'rewards/accuracies': 0.5 },
    modelDir: `/m/${k}`,
    manifest: `/m/${k}/manifest.json`,
  });
  const result = {
    runId: 'rep',
    runDir,
    configHash: 'h',
    rounds: [round(1), round(2)],
    finalModel: '/m/2',
    baseReward: 0.25,
    prefixCurve: [
      { score: 1, meanReward: 0.1 },
      { score: 10, meanReward: 0.6 },
    ],
    stopped: false,
  };
  const r = await writeRunReport({ runDir, result });
  assert.deepEqual(JSON.parse(await readFile(r.json, 'utf8')), result);
  const md = await readFile(r.markdown, 'utf8');
  assert.match(md, /\| 1 \| 3 \| 9 \| 1 \| 0\.600 \| 0\.400 \| 0\.400 \| 0\.6800 \| 0\.50 \|/);
  assert.match(md, /\| 2 \| 5 \| 8 \| 2 \| 0\.700 \| 0\.400 \| 0\.500 \| 0\.6700 \| 0\.50 \|/);
  assert.match(md, /Base policy reward \(held-out, unprefixed\): 0\.250/);
  assert.match(md, /\| 10 \| 0\.600 \|/);
});

test('vLLM reward models: /classify (raw scores or probabilities) and root /pooling', async () => {
  const requests: { url: string; body: Record<string, unknown>; auth?: string }[] = [];
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (d) => (body += d));
    req.on('end', () => {
      const b = JSON.parse(body) as { input: string[] };
      requests.push({ url: req.url!, body: b, auth: req.headers.authorization });
      res.setHeader('content-type', 'application/json');
      // Reward = number of characters of the input; pooling nests it like a [1] head output.
      if (req.url === '/classify')
        res.end(JSON.stringify({ data: b.input.map((t) => ({ probs: [t.length] })) }));
      else res.end(JSON.stringify({ data: b.input.map((t) => ({ data: [[-t.length]] })) }));
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  after(() => server.close());
  const url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  const pairs = [rec(0, 'abc', 'a'), rec(1, 'a', 'abcdef')];
  const pairsFile = join(root, 'vllm-rm', 'pairs.jsonl');
  await writeFileAtomic(pairsFile, toJsonl(pairs));
  process.env.OPSR_TEST_RM_KEY = 'sk-test';
  const c = await runIn(analyzeRewards, {
    runId: 'r',
    round: 1,
    roundDir: join(root, 'vllm-rm', 'c'),
    pairsFile,
    notify: [],
    rewardModel: {
      type: 'vllm-classify',
      baseURL: `${url}/v1`,
      model: 'rm',
      useActivation: false,
      apiKeyEnv: 'OPSR_TEST_RM_KEY',
    },
  });
  const base = pairs[0].prompt!.length + 1; // prompt + newline + response
  assert.equal(c.chosenMean, (base + 3 + base + 1) / 2);
  assert.equal(c.chosenBetter, 0.5);
  assert.deepEqual(requests[0], {
    url: '/classify',
    body: {
      model: 'rm',
      input: [
        `${pairs[0].prompt}\nabc`,
        `${pairs[0].prompt}\na`,
        `${pairs[0].prompt}\na`,
        `${pairs[0].prompt}\nabcdef`,
      ],
      use_activation: false,
    },
    auth: 'Bearer sk-test',
  });
  const p = await runIn(analyzeRewards, {
    runId: 'r',
    round: 1,
    roundDir: join(root, 'vllm-rm', 'p'),
    pairsFile,
    notify: [],
    rewardModel: { type: 'vllm-pooling', baseURL: url, model: 'rm' },
  });
  assert.equal(requests[1].url, '/pooling');
  assert.equal(requests[1].body.use_activation, false);
  assert.equal(requests[1].auth, undefined);
  assert.equal(p.rejectedMean, -(base + 1 + base + 6) / 2);
  assert.equal(p.chosenBetter, 0.5);
});

test('sha256File: a rewritten file gets its new hash (no stale memo)', async () => {
  const f = join(root, 'memo.txt');
  await writeFileAtomic(f, 'one');
  const a = await sha256File(f);
  assert.equal(a, await sha256File(f));
  await writeFileAtomic(f, 'two');
  const b = await sha256File(f);
  assert.notEqual(a, b);
  assert.equal(b, createHash('sha256').update('two').digest('hex'));
  await writeFile(f, 'three, in place'); // not atomic: size and mtime change
  assert.equal(await sha256File(f), createHash('sha256').update('three, in place').digest('hex'));
});
