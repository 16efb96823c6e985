// The real SmolLM2-135M-Instruct (fetched by scripts/setup.sh test) through opsr: the engine's
// log-probs of chat sequences against transformers, greedy answers of `opsr serve` against
// transformers' generate, a 1-round run through Temporal whose artifacts are checked, and a
// 1-round self-judge run with judged evaluations. Each
// test says why when it skips: no fetched model, or an engine without Llama support.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { defaultModelDir } from '../../cli/models.ts';
import { runDemo, shortenRun } from '../../cli/demo.ts';
import { parseRunConfig, presetPath } from '../../config/index.ts';
import { loadRunConfig } from '../../activities/load-config.ts';
import { promptIds, responseIds } from '../../activities/dataset.ts';
import { DEFAULT_ENGINE_PATH, engineEnv } from '../../lib/engine.ts';
import { checkModelDir } from '../../lib/modeldir.ts';
import type { GradingEvalResult, PairwiseEvalResult } from '../../contracts/activities.ts';
import { modelHash } from '../../lib/hash.ts';
import { readJsonl } from '../../lib/jsonl.ts';
import { freePort } from '../../lib/temporal.ts';
import { writeSftData } from '../../lib/tokdata.ts';
import { loadTokenizer, type LoadedTokenizer } from '../../lib/tokenizer.ts';
import { instructionPrompts } from '../../tasks/instructions.ts';
import { ROOT } from '../helpers/opsr-cli.ts';

const run = promisify(execFile);
const SMOL = defaultModelDir('smollm2-135m-instruct');
const PYTHON = join(ROOT, '.venv', 'bin', 'python');
const REFERENCE = join(ROOT, 'test', 'helpers', 'smollm2_reference.py');

let dir: string;
let tok: LoadedTokenizer;
let skip: string | null = null;

// Why these tests cannot run here, or null.
async function unavailable(): Promise<string | null> {
  if (
    !(await stat(join(SMOL, 'config.json')).then(
      () => true,
      () => false,
    ))
  ) {
    return `needs ${SMOL}: \`opsr models fetch smollm2-135m-instruct\` (setup.sh test runs it)`;
  }
  const probe = join(dir, 'probe.bin');
  await writeSftData(probe, [{ prompt: [1, 2], response: [3] }]);
  try {
    await run(
      DEFAULT_ENGINE_PATH,
      ['logprobs', '--model', SMOL, '--data', probe, '--threads', '1'],
      { env: engineEnv() },
    );
  } catch (e) {
    const msg = String((e as { stderr?: string }).stderr ?? e);
    if (/field model_type must be/.test(msg)) return 'the engine does not load Llama models yet';
    throw e;
  }
  return null;
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'opsr-smol-'));
  skip = await unavailable();
  if (!skip) tok = await loadTokenizer(SMOL);
});
after(async () => rm(dir, { recursive: true, force: true }));

type Reference = { logprobs: number[]; greedy: number[][]; logprobs_per_dir: number[][] };

// transformers' answers; log-probs for every model directory given (one Python process).
async function reference(request: object, ...models: string[]): Promise<Reference> {
  const [first, ...more] = models.length ? models : [SMOL];
  const { stdout } = await run(PYTHON, [REFERENCE, first, JSON.stringify(request), ...more], {
    maxBuffer: 1 << 26,
    env: { ...process.env, HF_HUB_OFFLINE: '1' },
  });
  return JSON.parse(stdout);
}

const chat = (content: string) => [{ role: 'user', content }];
// Within 1e-4, relative for sums above 1 in size.
const close = (a: number, b: number) => Math.abs(a - b) <= 1e-4 * Math.max(1, Math.abs(b));

test('engine log-probs of chat sequences are within 1e-4 of transformers', async (t) => {
  if (skip) return t.skip(skip);
  const cases = [
    ['What is the capital of France?', 'The capital of France is Paris.'],
    [
      'Write a haiku about autumn leaves.',
      'Red leaves drift and fall\nwhispering to the cold ground\nautumn says goodbye',
    ],
    ['Write a Python function that reverses a string.', 'def reverse(s):\n    return s[::-1]'],
    ['What is 12 times 7?', '12 times 7 is 84.'],
  ].map(([q, a], i) => ({
    prompt: promptIds(tok, chat(q), `case ${i}`),
    response: responseIds(tok, a, 'stop'),
  }));
  const data = join(dir, 'chat.bin');
  await writeSftData(data, cases);
  const { stdout } = await run(
    DEFAULT_ENGINE_PATH,
    ['logprobs', '--model', SMOL, '--data', data, '--threads', '2'],
    { env: engineEnv() },
  );
  const engine = stdout
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { index: number; logp_sum: number });
  const py = await reference({ logprobs: cases });
  assert.equal(engine.length, cases.length);
  engine.forEach((e, i) => {
    const want = py.logprobs[e.index];
    assert.ok(close(e.logp_sum, want), `case ${i}: engine ${e.logp_sum}, transformers ${want}`);
  });
});

test('a trained checkpoint (f32/bf16, single/sharded) reloads in transformers', async (t) => {
  if (skip) return t.skip(skip);
  const records = [
    ['Name a colour.', 'Blue.'],
    ['What is 2 plus 2?', '2 plus 2 is 4.'],
  ].map(([q, a], i) => ({
    prompt: promptIds(tok, chat(q), `r${i}`),
    response: responseIds(tok, a, 'stop'),
  }));
  const data = join(dir, 'sft.bin');
  await writeSftData(data, records);
  // Each one-step run saves its fp32 checkpoint and its bf16 final model: a single-file run and a
  // sharded one give the four layouts (the same weights: training is deterministic).
  const saved: { name: string; dir: string; sharded: boolean }[] = [];
  for (const sharded of [false, true]) {
    const layout = sharded ? 'sharded' : 'single';
    const out = join(dir, `train-${layout}`);
    await run(
      DEFAULT_ENGINE_PATH,
      [
        'train',
        '--model',
        SMOL,
        '--data',
        data,
        '--out',
        out,
        '--loss',
        'sft',
        '--lr',
        '1e-4',
        '--max-steps',
        '1',
        '--threads',
        '2',
        '--save-dtype',
        'bf16',
        ...(sharded ? ['--max-shard-size', '100MB'] : []),
      ],
      { env: engineEnv() },
    );
    saved.push({ name: `f32 ${layout}`, dir: join(out, 'checkpoints', 'step-00000001'), sharded });
    saved.push({ name: `bf16 ${layout}`, dir: join(out, 'final'), sharded });
  }
  const engine: number[][] = [];
  for (const s of saved) {
    const info = await checkModelDir(s.dir);
    assert.equal(info.sharded, s.sharded, `${s.name}: sharded`);
    if (s.sharded) assert.ok(info.weights.length >= 2, `${s.name}: ${info.weights.length} shards`);
    const { stdout } = await run(
      DEFAULT_ENGINE_PATH,
      ['logprobs', '--model', s.dir, '--data', data, '--threads', '2'],
      { env: engineEnv() },
    );
    engine.push(
      stdout
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l).logp_sum as number),
    );
  }
  const py = await reference({ logprobs: records }, SMOL, ...saved.map((s) => s.dir));
  const [base, ...trained] = py.logprobs_per_dir;
  saved.forEach((s, k) =>
    engine[k].forEach((e, i) =>
      assert.ok(
        close(e, trained[k][i]),
        `${s.name} record ${i}: engine ${e}, transformers ${trained[k][i]}`,
      ),
    ),
  );
  // Single-file and sharded hold the same weights; the step moved them away from the base.
  assert.deepEqual(engine[2], engine[0], 'f32 single vs sharded');
  assert.deepEqual(engine[3], engine[1], 'bf16 single vs sharded');
  assert.ok(
    trained[0].some((lp, i) => Math.abs(lp - base[i]) > 1e-2),
    `one step changed nothing: ${trained[0].join(', ')} vs ${base.join(', ')}`,
  );
});

// `opsr serve` in a child process, as a user runs it; resolves once /health answers 200.
async function serve(port: number): Promise<ChildProcess> {
  const child = spawn(
    process.execPath,
    [
      join(ROOT, 'bin', 'opsr.mjs'),
      'serve',
      '--model',
      SMOL,
      '--port',
      String(port),
      '--threads',
      '2',
      '--max-batch',
      '8',
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  child.stderr!.on('data', (b) => {
    stderr += b;
  });
  for (let i = 0; i < 600; i++) {
    if (child.exitCode !== null) throw new Error(`opsr serve exited ${child.exitCode}: ${stderr}`);
    const ok = await fetch(`http://127.0.0.1:${port}/health`).then(
      (r) => r.ok,
      () => false,
    );
    if (ok) return child;
    await new Promise((r) => setTimeout(r, 500));
  }
  child.kill('SIGTERM');
  throw new Error(`opsr serve did not become healthy in 300 s: ${stderr}`);
}

test('greedy chat answers of opsr serve equal transformers generate on 20 prompts', async (t) => {
  if (skip) return t.skip(skip);
  const all = instructionPrompts('train');
  const prompts = Array.from(
    { length: 20 },
    (_, i) => all[Math.floor((i * all.length) / 20)].prompt,
  );
  const maxTokens = 32;
  const py = await reference({
    greedy: {
      prompts: prompts.map((p, i) => promptIds(tok, chat(p), `prompt ${i}`)),
      max_new_tokens: maxTokens,
    },
  });
  const port = await freePort();
  const server = await serve(port);
  try {
    // All at once: the answers must not depend on what else is in the batch.
    const answers = await Promise.all(
      prompts.map(async (p) => {
        const r = await fetch(`http://127.0.0.1:${port}/v1/chat/completions`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({
            model: 'smollm2-135m-instruct',
            messages: chat(p),
            temperature: 0,
            max_tokens: maxTokens,
          }),
        });
        assert.equal(r.status, 200);
        return (await r.json()) as {
          choices: { message: { content: string }; finish_reason: string }[];
          usage: { completion_tokens: number };
        };
      }),
    );
    answers.forEach((a, i) => {
      const ids = py.greedy[i];
      const stopped = ids.at(-1) === tok.eosTokenId;
      const text = tok.decode(stopped ? ids.slice(0, -1) : ids);
      assert.equal(a.choices[0].message.content, text, prompts[i]);
      assert.equal(a.usage.completion_tokens, ids.length, prompts[i]);
      assert.equal(a.choices[0].finish_reason, stopped ? 'stop' : 'length', prompts[i]);
    });
  } finally {
    server.kill('SIGTERM');
    await new Promise((r) => server.once('exit', r));
  }
});

// The preset's training for a round of a few pairs. No warmup: with a step or two, warmup's first
// step (lr 0) would be all of training.
function smallTraining(preset: { training: Record<string, unknown> }) {
  return {
    ...preset.training,
    batchSize: 2,
    gradAccum: 1,
    maxLength: 192,
    maxPromptLength: 128,
    checkpointEvery: 0,
    warmupRatio: 0,
  };
}

test('a 1-round SmolLM2 run through Temporal (8 prompts) leaves checked artifacts', async (t) => {
  if (skip) return t.skip(skip);
  const preset = await loadRunConfig(presetPath('smollm2-135m-instruct'));
  const storage = join(dir, 'store');
  const config = shortenRun(
    parseRunConfig({
      ...preset,
      storage,
      model: SMOL,
      prompts: {
        ...preset.prompts,
        file: join(storage, 'instructions', 'instructions-train.jsonl'),
      },
      sampling: { ...preset.sampling, maxTokens: 48 },
      // Short answers are mostly cut: keep them so that a few pairs train.
      filter: { ...preset.filter, dropTruncated: false },
      training: smallTraining(preset),
    }),
    1,
    8,
  );
  const r = await runDemo(config, { port: await freePort(), uiPort: null, print: false });
  const [round] = r.result.rounds;
  assert.equal(r.result.rounds.length, 1);
  assert.equal(round.rejectedScore, 3);
  assert.equal(round.pairsKept + round.pairsFiltered, 8);
  assert.ok(round.pairsKept >= 2, `kept ${round.pairsKept}`);
  const roundDir = join(r.result.runDir, 'round-1');
  type Pair = { prompt: string; chosen: string; rejected: string };
  const pairs = await readJsonl<Pair>(join(roundDir, 'dataset.jsonl'));
  assert.equal(pairs.length, round.pairsKept);
  // TRL pairs: the prompt without the prefix, two non-empty answers.
  assert.ok(
    pairs.every(
      (p) =>
        p.chosen.length > 0 &&
        p.rejected.length > 0 &&
        !JSON.stringify(p.prompt).includes('out of 10'),
    ),
  );
  // The trained policy is a Llama checkpoint with new weights, and the round's final model.
  const trained = await checkModelDir(round.modelDir);
  assert.equal(trained.modelType, 'llama');
  assert.notEqual(await modelHash(round.modelDir), await modelHash(SMOL));
  assert.equal(r.result.finalModel, round.modelDir);
  assert.ok(Number.isFinite(round.train.loss), `loss ${round.train.loss}`);
  const report = JSON.parse(await readFile(r.report.json, 'utf8'));
  assert.deepEqual(
    report.rounds.map((x: { pairsKept: number }) => x.pairsKept),
    [round.pairsKept],
  );
});

// The self-rewarding baseline and the judge-based evaluations on the real model, through
// Temporal: SmolLM2 judges its own 2 candidates (it never writes "Score: n", so the scores come
// from its log-probabilities), then after round 1 `opsr serve` of the same model judges pairwise
// against reference answers and grades in the MT-Bench style. Whatever the numbers, every count
// must add up.
test('SmolLM2 self-judge pairs and judged evaluations through Temporal', async (t) => {
  if (skip) return t.skip(skip);
  const preset = await loadRunConfig(presetPath('smollm2-135m-instruct'));
  const storage = join(dir, 'store-sr');
  const pairwiseFile = join(dir, 'pairwise.jsonl');
  const gradingFile = join(dir, 'grading.jsonl');
  const jsonl = (xs: object[]) => xs.map((x) => JSON.stringify(x)).join('\n') + '\n';
  await writeFile(
    pairwiseFile,
    jsonl([
      { instruction: 'Name a primary colour.', output: 'Red.' },
      { instruction: 'What is 3 plus 4?', output: '3 plus 4 is 7.' },
      { instruction: 'Give a synonym of "happy".', output: 'Joyful.' },
    ]),
  );
  await writeFile(
    gradingFile,
    jsonl([
      { category: 'writing', turns: ['Write one sentence about the sea.'] },
      { category: 'math', turns: ['What is 6 times 7?'], reference: ['42'] },
      { category: 'stem', turns: ['Why is the sky blue? One sentence.'] },
    ]),
  );
  const port = await freePort();
  const server = await serve(port);
  try {
    const config = shortenRun(
      parseRunConfig({
        ...preset,
        storage,
        model: SMOL,
        prompts: {
          ...preset.prompts,
          file: join(storage, 'instructions', 'instructions-train.jsonl'),
        },
        sampling: { ...preset.sampling, maxTokens: 24 },
        pairs: { source: 'self-judge', candidates: 2, judgeMaxTokens: 24 },
        filter: { ...preset.filter, dropTruncated: false },
        training: smallTraining(preset),
        judges: {
          served: {
            type: 'openai',
            baseURL: `http://127.0.0.1:${port}/v1`,
            model: 'smollm2-135m-instruct',
            maxTokens: 24,
            // It never writes [[n]]: ratings come from its log-probabilities.
            gradingLogprobs: true,
          },
        },
        evals: {
          rounds: [1],
          sets: [
            { kind: 'pairwise', name: 'pw', judge: 'served', file: pairwiseFile, maxTokens: 24 },
            { kind: 'grading', name: 'mt', judge: 'served', file: gradingFile, maxTokens: 24 },
          ],
        },
      }),
      1,
      4,
    );
    const r = await runDemo(config, { port: await freePort(), uiPort: null, print: false });
    const [round] = r.result.rounds;
    process.stderr.write(
      `smollm2 self-judge: kept ${round.pairsKept}, filtered ${round.pairsFiltered}, ` +
        `dropped ${JSON.stringify(round.dropped)}, cost ${JSON.stringify(round.cost)}\n` +
        `judged ${JSON.stringify(r.result.judged)}\n`,
    );
    const dropped = round.dropped!;
    assert.equal(round.pairsKept + round.pairsFiltered + dropped.tie + dropped.unparsable, 4);
    const roundDir = join(r.result.runDir, 'round-1');
    type Candidate = { score: number | null };
    const candidates = await readJsonl<{ candidates: Candidate[] }>(
      join(roundDir, 'candidates.jsonl'),
    );
    const scores = candidates.flatMap((c) => c.candidates.map((x) => x.score));
    assert.equal(scores.length, 8);
    assert.ok(
      scores.every((s) => s === null || (s >= 0 && s <= 5)),
      `scores ${scores.join(', ')}`,
    );
    const selfJudged = await readJsonl(join(roundDir, 'samples.jsonl'));
    assert.ok(selfJudged.length >= 1, `self-judged pairs ${selfJudged.length}`);
    assert.equal(selfJudged.length, round.pairsKept + round.pairsFiltered);
    const cost = round.cost!;
    assert.equal(cost.sampling.requests, 8);
    assert.ok(cost.judging.requests >= 8, `judge requests ${cost.judging.requests}`);
    assert.ok(cost.judging.tokens > 0);

    const evalDir = join(r.result.runDir, 'eval', 'round-1');
    const pw = JSON.parse(await readFile(join(evalDir, 'pw.json'), 'utf8')) as PairwiseEvalResult;
    const parsed = Object.entries(pw.sources)
      .filter(([s]) => s !== 'unparsable')
      .reduce((a, [, n]) => a + n, 0);
    assert.equal(pw.count, 3);
    assert.equal(parsed + pw.unparsable, 3);
    assert.equal((await readJsonl(join(evalDir, 'pw.jsonl'))).length, 3);
    assert.ok(pw.cost.judge.requests >= 3 && pw.cost.judge.promptTokens > 0);
    const mt = JSON.parse(await readFile(join(evalDir, 'mt.json'), 'utf8')) as GradingEvalResult;
    assert.equal(mt.questions, 3);
    assert.equal(mt.turns + mt.unparsable, 3);
    const perCategory = Object.values(mt.perCategory);
    assert.equal(
      perCategory.reduce((a, c) => a + c.turns + c.unparsable, 0),
      3,
    );
    assert.ok(mt.cost.judge.completionTokens > 0);
    // Ratings read from the log-probabilities where the text has none: in [1, 10].
    const rated = await readJsonl<{ score: number | null; source: string }>(
      join(evalDir, 'mt.jsonl'),
    );
    for (const row of rated) {
      assert.equal(row.score === null, row.source === 'unparsable', JSON.stringify(row));
      if (row.score !== null) assert.ok(row.score >= 1 && row.score <= 10, JSON.stringify(row));
    }
    assert.ok(mt.turns > 0, `no rating at all: ${JSON.stringify(rated)}`);
    const judged = r.result.judged!;
    assert.deepEqual(judged.map((j) => `${j.set} ${j.label}`).sort(), ['mt round-1', 'pw round-1']);
    assert.ok(judged.every((j) => j.judgeTokens > 0));
    const md = await readFile(join(r.result.runDir, 'report.md'), 'utf8');
    assert.match(md, /\| pw \| round-1 \|/);
    assert.match(md, /\| mt \| round-1 \|/);
  } finally {
    server.kill('SIGTERM');
    await new Promise((r) => server.once('exit', r));
  }
});
