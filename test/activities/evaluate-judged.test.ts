// Judge-based evaluation (activities/evaluate-judged.ts, activities/judge.ts) against real
// servers: opsr's embedded server as a logprob judge (verdicts from the label tokens, both
// orders, the verdict cache on a resumed evaluation), a hosted-style judge over HTTP that answers
// in text only (parsing, retries, the API key from the env, 4xx as bad input), MT-Bench-style
// grading, and the builtin digits judge.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createServer, type IncomingMessage } from 'node:http';
import { mkdtemp, rm, writeFile, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MockActivityEnvironment } from '@temporalio/testing';
import { parseRunConfig, type RunConfig } from '../../config/index.ts';
import { SamplerPool } from '../../activities/index.ts';
import { initPolicy } from '../../activities/train.ts';
import { sampleSelfJudgedPairs } from '../../activities/self-judge.ts';
import { judgedSummary, runJudgedEval } from '../../activities/evaluate-judged.ts';
import type {
  EvaluateJudgedInput,
  GradingEvalResult,
  PairwiseEvalResult,
  SelfJudgePairsResult,
} from '../../contracts/activities.ts';
import {
  expectedRating,
  expectedRubricScore,
  labelProbability,
  makeJudge,
  parsePairText,
  parseRating,
  parseRubric,
} from '../../activities/judge.ts';
import { startServer, type RunningServer } from '../../server/index.ts';
import { readJsonl } from '../../lib/jsonl.ts';
import { writeTinyTokenizer } from '../helpers/tiny-tokenizer.ts';
import { getBuiltinScorer } from '../../tasks/index.ts';
import { answerDigits, answerText, makeProblems, promptText, rng } from '../../tasks/digits.ts';

const samplers = new SamplerPool();

const REPO = join(import.meta.dirname, '..', '..');
const ENGINE = join(REPO, 'engine', 'build', 'opsr-engine');
const root = await mkdtemp(join(tmpdir(), 'opsr-eval-judged-'));
const modelDir = join(root, 'model');
const problems = makeProblems('heldout', 6, 5);
const setFile = join(root, 'digits-pairwise.jsonl');
let base: RunConfig;
let judgeServer: RunningServer;
// A replaced pairwise prompt (short, so the tiny judge learns it in seconds).
const judgePrompt = join(root, 'pairwise.txt');
const PAIRWISE = 'Q: {instruction}\nA: {answer_a}\nB: {answer_b}\nBetter:';
// A short rubric (the default one would fill the tiny model's context).
const RUBRIC = 'Rate 0-5.\nQ: {instruction}\nA: {answer}\n';
const rubricFile = join(root, 'rubric.txt');
// A short grading prompt; the judge learns to answer it with a label and "Rating: [[n]]".
const GRADING = 'Rate 1-10.\n{conversation}\n';
const gradingFile = join(root, 'grading.txt');
const gradingText = (instruction: string, answer: string) =>
  GRADING.replace('{conversation}', `[User]\n${instruction}\n\n[Assistant]\n${answer}`);
let judgeDir: string;

// The judge: the tiny model fine-tuned (SFT, the engine) to name the correctly sorted answer of
// two with one label token, so its top log-probs hold the labels; and to answer the rubric with
// a label, a line break and "Score: <digit>", so that a judge cut after one token has written
// no score while the digits lead after "Score: " (a small model rambling past its budget).
async function trainJudge(): Promise<string> {
  const digits = getBuiltinScorer('digits')!;
  const rand = rng(11);
  const recs = makeProblems('train', 400, 11).map((p) => {
    const right = answerText(answerDigits(p));
    const wrong = answerText([...p.digits].sort(() => rand() - 0.5));
    const rightFirst = rand() < 0.5;
    const [a, b] = rightFirst ? [right, wrong] : [wrong, right];
    const prompt = PAIRWISE.replace('{instruction}', promptText(p))
      .replace('{answer_a}', a)
      .replace('{answer_b}', b);
    return { prompt, completion: rightFirst ? 'A' : 'B' };
  });
  for (const p of makeProblems('train', 100, 12)) {
    const answer = rand() < 0.5 ? answerText(answerDigits(p)) : answerText(p.digits);
    const score = Math.round(5 * digits(promptText(p), answer));
    recs.push({
      prompt: RUBRIC.replace('{instruction}', promptText(p)).replace('{answer}', answer),
      completion: `${rand() < 0.5 ? 'A' : 'B'}\nScore: ${score}`,
    });
  }
  // Ratings 1..10, so that after "[[1" both "0" (10) and "]" (1) are likely.
  for (const p of makeProblems('train', 100, 13)) {
    const answer = rand() < 0.5 ? answerText(answerDigits(p)) : answerText(p.digits);
    const rating = 1 + Math.round(9 * digits(promptText(p), answer));
    recs.push({
      prompt: gradingText(promptText(p), answer),
      completion: `${rand() < 0.5 ? 'A' : 'B'}\nRating: [[${rating}]]`,
    });
  }
  const data = join(root, 'judge-sft.jsonl');
  await writeFile(data, recs.map((r) => JSON.stringify(r)).join('\n') + '\n');
  const cfg = parseRunConfig({
    model: modelDir,
    prompts: { file: data },
    storage: join(root, 'store'),
    training: { maxLength: 256, maxPromptLength: 200, engine: { threads: 2 } },
    init: {
      sft: { data, maxSteps: 300, batchSize: 16, learningRate: 3e-3, warmupRatio: 0.02, seed: 1 },
    },
  });
  const res = (await new MockActivityEnvironment().run(initPolicy, {
    runId: 'judge',
    runDir: join(root, 'store', 'runs', 'judge'),
    baseModel: modelDir,
    init: cfg.init!,
    training: cfg.training,
    notify: [],
  })) as Awaited<ReturnType<typeof initPolicy>>;
  return res.modelDir;
}

before(async () => {
  const vocab = await writeTinyTokenizer(modelDir, { chatTemplate: true });
  const cfg = join(root, 'gpt2.json');
  await writeFile(
    cfg,
    JSON.stringify({
      n_embd: 32,
      n_layer: 2,
      n_head: 2,
      n_positions: 512,
      vocab_size: vocab,
      layer_norm_epsilon: 1e-5,
      n_inner: null,
      activation_function: 'gelu_new',
    }),
  );
  execFileSync(ENGINE, ['init', '--config', cfg, '--out', modelDir, '--seed', '9'], {
    stdio: 'pipe',
  });
  await writeFile(
    setFile,
    problems
      .map((p) =>
        JSON.stringify({ instruction: promptText(p), output: answerText(answerDigits(p)) }),
      )
      .join('\n') + '\n',
  );
  base = parseRunConfig({
    model: modelDir,
    prompts: { file: setFile },
    storage: join(root, 'store'),
    rounds: 1,
    sampling: {
      lifecycle: 'embedded',
      api: 'chat',
      maxTokens: 6,
      temperature: 1,
      concurrency: 4,
      embedded: { threads: 1 },
    },
  });
  await writeFile(judgePrompt, PAIRWISE);
  await writeFile(rubricFile, RUBRIC);
  await writeFile(gradingFile, GRADING);
  judgeDir = await trainJudge();
  judgeServer = await startServer({
    modelDir: judgeDir,
    servedModelName: 'judge',
    threads: 1,
    log: () => {},
  });
});
after(async () => {
  await judgeServer?.close();
  await samplers.close();
  await rm(root, { recursive: true, force: true });
});

async function input(
  label: string,
  set: EvaluateJudgedInput['set'],
  judge: EvaluateJudgedInput['judge'],
): Promise<EvaluateJudgedInput> {
  const endpoint = await samplers.ensure({ runId: 'r', modelDir, sampling: base.sampling });
  return {
    runId: 'r',
    label,
    runDir: join(root, 'store', 'runs', 'r'),
    cacheDir: join(root, 'store', 'judge-cache'),
    endpoint,
    sampling: base.sampling,
    set,
    judgeName: 'j',
    judge,
    notify: [],
  };
}

const pairwiseSet = {
  kind: 'pairwise' as const,
  name: 'digits',
  judge: 'j',
  file: setFile,
  reference: 'file' as const,
};
const judgeCfg = (baseURL: string, extra: Record<string, unknown> = {}) =>
  parseRunConfig({
    model: modelDir,
    prompts: { file: setFile },
    judges: { j: { type: 'openai', baseURL, model: 'judge', ...extra } },
  }).judges.j;

test('parsers: label log-probs, text labels, [[n]] ratings, rubric scores', () => {
  assert.ok(
    Math.abs(
      labelProbability([
        [' A', Math.log(0.3)],
        ['B', Math.log(0.1)],
        ['C', Math.log(0.6)],
      ])! - 0.25,
    ) < 1e-12,
  );
  assert.equal(labelProbability([['B', -3]]), 1, 'a missing label counts as -inf');
  assert.equal(labelProbability([['C', -0.1]]), null);
  assert.equal(parsePairText('B'), 1);
  assert.equal(parsePairText('Verdict: [[A]]'), 0);
  assert.equal(parsePairText(' answer a.'), 0);
  assert.equal(parsePairText('Both are fine'), null);
  assert.equal(parseRating('Solid. Rating: [[7]]'), 7);
  assert.equal(parseRating('Rating: [8.5]'), 8.5);
  assert.equal(parseRating('Rating: [[11]]'), null);
  assert.equal(parseRating('seven'), null);
  assert.equal(parseRubric('one point... Score: 2\nactually Score: 4'), 4);
  assert.equal(parseRubric('Score: 9'), null);
  const near = (a: number | null, b: number) => assert.ok(Math.abs(a! - b) < 1e-12, `${a} ${b}`);
  // Renormalised over the digits 0..5 present: (3 * 0.5 + 4 * 0.25) / 0.75.
  near(
    expectedRubricScore([
      [' 3', Math.log(0.5)],
      ['4', Math.log(0.25)],
      ['x', Math.log(0.25)],
    ]),
    10 / 3,
  );
  // " 3" and "3" are both 3; 6 is no rubric score: (3 * 0.4 + 5 * 0.1) / 0.5.
  near(
    expectedRubricScore([
      [' 3', Math.log(0.2)],
      ['3', Math.log(0.2)],
      ['6', Math.log(0.3)],
      ['5', Math.log(0.1)],
    ]),
    3.4,
  );
  near(expectedRubricScore([['0', -2]]), 0);
  assert.equal(
    expectedRubricScore([
      ['7', -1],
      ['x', -0.1],
      ['10', -2],
    ]),
    null,
  );
});

test('MT-Bench rating from log-probs: expected value over 1..10, "1" split into 1 and 10', () => {
  const near = (a: number | null, b: number) => assert.ok(Math.abs(a! - b) < 1e-12, `${a} ${b}`);
  // (7 * 0.3 + 8 * 0.1) / 0.4; "x" is no rating.
  near(
    expectedRating(
      [
        ['7', Math.log(0.3)],
        [' 8', Math.log(0.1)],
        ['x', Math.log(0.6)],
      ],
      null,
    ),
    7.25,
  );
  // "1" at 0.5 splits 1:3 between 10 ("0" next) and 1 ("]]" next):
  // 0.5 * (0.25 * 10 + 0.75) + 0.5 * 7.
  near(
    expectedRating(
      [
        ['1', Math.log(0.5)],
        ['7', Math.log(0.5)],
      ],
      [
        ['0', Math.log(0.2)],
        [']]', Math.log(0.6)],
        ['x', Math.log(0.2)],
      ],
    ),
    5.125,
  );
  // A "10" token counts as 10; without a reading after "1", "1" stays 1.
  near(
    expectedRating(
      [
        ['10', Math.log(0.5)],
        ['1', Math.log(0.5)],
      ],
      null,
    ),
    5.5,
  );
  assert.equal(
    expectedRating(
      [
        ['0', -1],
        ['11', -2],
        ['x', -0.1],
      ],
      null,
    ),
    null,
  );
});

// What the judge should read, asked by hand: its greedy rubric answer (1 token), then the top
// log-probs of the token after "<answer>\nScore: ".
async function askRubric(baseURL: string, model: string, prompt: string) {
  const ask = async (body: object) => {
    const r = await fetch(`${baseURL}/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model, temperature: 0, ...body }),
    });
    assert.equal(r.status, 200);
    return (await r.json()).choices[0];
  };
  const text = (await ask({ messages: [{ role: 'user', content: prompt }], max_tokens: 1 })).message
    .content as string;
  const next = await ask({
    messages: [
      { role: 'user', content: prompt },
      { role: 'assistant', content: `${text.trim()}\nScore: ` },
    ],
    continue_final_message: true,
    add_generation_prompt: false,
    max_tokens: 1,
    logprobs: true,
    top_logprobs: 20,
  });
  const top = next.logprobs.content[0].top_logprobs as { token: string; logprob: number }[];
  return { text, score: expectedRubricScore(top.map((t) => [t.token, t.logprob])) };
}

test('rubric without "Score: n": the score from the digits\' log-probs, cached', async () => {
  const prompt = RUBRIC.replace('{instruction}', promptText(problems[0])).replace(
    '{answer}',
    '1 2 3',
  );
  for (const api of ['chat', 'completions'] as const) {
    const cfg = judgeCfg(judgeServer.url, {
      api,
      maxTokens: 1,
      rubricLogprobs: true,
      prompts: { rubric: rubricFile },
    });
    const cacheDir = join(root, `cache-rubric-${api}`);
    const judge = await makeJudge('j', cfg, { cacheDir });
    const v = await judge.rubric(promptText(problems[0]), '1 2 3');
    assert.equal(parseRubric(v.text), null, v.text);
    assert.equal(v.source, 'logprobs', `${api}: ${v.text}`);
    assert.ok(v.score! >= 0 && v.score! <= 5, `${api}: ${v.score}`);
    if (api === 'chat') {
      const want = await askRubric(judgeServer.url, 'judge', prompt);
      assert.equal(v.text, want.text);
      assert.ok(Math.abs(v.score! - want.score!) < 1e-9, `${v.score} vs ${want.score}`);
    }
    assert.equal(judge.usage.requests, 2, 'the answer, then one token after "Score: "');
    const again = await makeJudge('j', cfg, { cacheDir });
    assert.deepEqual(await again.rubric(promptText(problems[0]), '1 2 3'), v);
    assert.deepEqual([again.usage.requests, again.usage.cached], [0, 2]);
  }
  // Off (a configured judge's default): the text alone, unparsable.
  const plain = await makeJudge(
    'j',
    judgeCfg(judgeServer.url, { maxTokens: 1, prompts: { rubric: rubricFile } }),
    { cacheDir: join(root, 'cache-rubric-plain') },
  );
  const v = await plain.rubric(promptText(problems[0]), '1 2 3');
  assert.deepEqual([v.score, v.source, plain.usage.requests], [null, 'unparsable', 1]);
});

// The top log-probs of the token after the judge's own answer continued with `cont`, by hand.
async function nextTop(baseURL: string, prompt: string, cont: string) {
  const r = await fetch(`${baseURL}/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      model: 'judge',
      temperature: 0,
      messages: [
        { role: 'user', content: prompt },
        { role: 'assistant', content: cont },
      ],
      continue_final_message: true,
      add_generation_prompt: false,
      max_tokens: 1,
      logprobs: true,
      top_logprobs: 20,
    }),
  });
  assert.equal(r.status, 200);
  const top = (await r.json()).choices[0].logprobs.content[0].top_logprobs as {
    token: string;
    logprob: number;
  }[];
  return top.map((t): [string, number] => [t.token, t.logprob]);
}

test('grading without [[n]]: the rating from the log-probs after "[[", cached', async () => {
  const p = problems[1];
  const conversation = [
    { role: 'user' as const, content: promptText(p) },
    { role: 'assistant' as const, content: answerText(answerDigits(p)) },
  ];
  const cfg = judgeCfg(judgeServer.url, {
    maxTokens: 1,
    gradingLogprobs: true,
    prompts: { grading: gradingFile },
  });
  const cacheDir = join(root, 'cache-grading');
  const judge = await makeJudge('j', cfg, { cacheDir });
  const v = await judge.grade(conversation);
  assert.equal(parseRating(v.text), null, v.text);
  assert.equal(v.source, 'logprobs', v.text);
  // By hand: the greedy 1-token answer, then the token after "Rating: [[" and after "Rating: [[1".
  const prompt = gradingText(conversation[0].content, conversation[1].content);
  const cont = `${v.text.trim()}\nRating: [[`;
  const first = await nextTop(judgeServer.url, prompt, cont);
  assert.ok(
    first.some(([t]) => t === '1'),
    `"1" among ${JSON.stringify(first)}`,
  );
  const afterOne = await nextTop(judgeServer.url, prompt, `${cont}1`);
  const want = expectedRating(first, afterOne)!;
  assert.ok(want >= 1 && want <= 10, `${want}`);
  assert.ok(Math.abs(v.score! - want) < 1e-9, `${v.score} vs ${want}`);
  // Not the reading that takes "1" for 1 alone: the "0" after "[[1" moved mass to 10.
  assert.ok(Math.abs(v.score! - expectedRating(first, null)!) > 1e-6);
  assert.equal(judge.usage.requests, 3, 'the answer, then after "[[" and after "[[1"');
  const again = await makeJudge('j', cfg, { cacheDir });
  assert.deepEqual(await again.grade(conversation), v);
  assert.deepEqual([again.usage.requests, again.usage.cached], [0, 3]);
  // Off (the default): the text alone, unparsable.
  const plain = await makeJudge(
    'j',
    judgeCfg(judgeServer.url, { maxTokens: 1, prompts: { grading: gradingFile } }),
    { cacheDir: join(root, 'cache-grading-plain') },
  );
  const off = await plain.grade(conversation);
  assert.deepEqual([off.score, off.source, plain.usage.requests], [null, 'unparsable', 1]);
});

test('self-judged pairs, the policy as judge on its embedded server: log-prob scores', async () => {
  const promptsFile = join(root, 'sj-prompts.jsonl');
  const items = problems.slice(0, 4).map((p, index) => ({ index, prompt: promptText(p) }));
  await writeFile(promptsFile, items.map((i) => JSON.stringify(i)).join('\n') + '\n');
  const cfg = parseRunConfig({
    ...base,
    pairs: { source: 'self-judge', candidates: 2, rubricPrompt: rubricFile, judgeMaxTokens: 1 },
  });
  // The policy is the trained judge: it has learnt what follows "Score: ".
  const endpoint = await samplers.ensure({
    runId: 'sj',
    modelDir: judgeDir,
    sampling: cfg.sampling,
  });
  const roundDir = join(root, 'store', 'runs', 'sj', 'round-1');
  const res = (await new MockActivityEnvironment().run(sampleSelfJudgedPairs, samplers, {
    runId: 'sj',
    round: 1,
    roundDir,
    promptsFile,
    endpoint,
    sampling: cfg.sampling,
    pairs: cfg.pairs,
    judge: null,
    cacheDir: join(root, 'store', 'judge-cache'),
    notify: [],
  })) as SelfJudgePairsResult;
  assert.equal(res.prompts, 4);
  assert.equal(res.count + res.dropped.tie + res.dropped.unparsable, 4);
  type Cand = { text: string; score: number | null };
  const lines = await readJsonl<{ index: number; candidates: Cand[] }>(res.candidatesFile);
  const all = lines.flatMap((l) => l.candidates.map((c) => ({ ...c, index: l.index })));
  assert.equal(all.length, 8);
  // No candidate text holds a score, so each was asked twice; the scores are the server's own.
  assert.equal(res.cost.judging.requests, 16);
  assert.ok(res.cost.judging.tokens > 0);
  for (const c of all) {
    const prompt = RUBRIC.replace('{instruction}', items[c.index].prompt).replace(
      '{answer}',
      c.text,
    );
    const want = (await askRubric(endpoint.baseURL, endpoint.model, prompt)).score;
    assert.equal(c.score === null, want === null);
    if (want !== null) assert.ok(Math.abs(c.score! - want) < 1e-9, `${c.score} vs ${want}`);
  }
  assert.ok(res.count >= 1, `kept ${res.count}`);
  // Best and worst by the continuous scores.
  const kept = await readJsonl<{ index: number; chosenScore: number; rejectedScore: number }>(
    res.samplesFile,
  );
  for (const k of kept) {
    const scores = lines.find((l) => l.index === k.index)!.candidates.map((c) => c.score!);
    assert.deepEqual([k.chosenScore, k.rejectedScore], [Math.max(...scores), Math.min(...scores)]);
  }
});

test('pairwise, embedded judge: label log-probs, both orders, cached on resume', async () => {
  const judge = judgeCfg(judgeServer.url, {
    api: 'chat',
    maxTokens: 16,
    prompts: { pairwise: judgePrompt },
  });
  const res = (await runJudgedEval(await input('base', pairwiseSet, judge), {
    samplers,
  })) as PairwiseEvalResult;
  assert.equal(res.count, 6);
  assert.deepEqual(res.sources, { logprobs: 6 });
  assert.equal(res.unparsable, 0);
  assert.equal(res.cost.judge.requests, 12, 'two orders per pair');
  assert.equal(res.cost.judge.cached, 0);
  assert.equal(res.cost.judge.completionTokens, 12, 'one label token per verdict');
  assert.ok(res.cost.judge.promptTokens > 12 * 50, `${res.cost.judge.promptTokens} prompt tokens`);
  assert.equal(res.cost.answerRequests, 6);
  const rows = await readJsonl<{
    preference: number;
    swappedPreference: number;
    policyFirst: boolean;
  }>(res.annotationsFile);
  assert.equal(rows.length, 6);
  assert.ok(
    rows.some((r) => r.policyFirst) && rows.some((r) => !r.policyFirst),
    'seeded order varies',
  );
  for (const r of rows)
    assert.ok(r.preference > 0 && r.preference < 1, `soft preference ${r.preference}`);
  const mean = rows.reduce((s, r) => s + r.preference, 0) / 6;
  assert.ok(Math.abs(res.winRate - mean) < 1e-12);
  assert.ok(res.lc && res.lc.variant === 'minimal');
  assert.equal(res.orderBias.pairs, 6);
  // An untrained judge prefers a position, not an answer: both orders show it.
  const first = rows.flatMap((r) => [
    r.policyFirst ? r.preference : 1 - r.preference,
    r.policyFirst ? 1 - r.swappedPreference : r.swappedPreference,
  ]);
  assert.ok(
    Math.abs(res.orderBias.firstPositionWins - first.reduce((a, b) => a + b, 0) / 12) < 1e-12,
  );

  // Another label with the same answers (same model): every verdict comes from the cache.
  const again = (await runJudgedEval(await input('round-1', pairwiseSet, judge), {
    samplers,
  })) as PairwiseEvalResult;
  assert.equal(again.cost.judge.requests, 0);
  assert.equal(again.cost.judge.cached, 12);
  assert.equal(again.winRate, res.winRate);
  // The same label again: the finished evaluation is reused whole.
  assert.deepEqual(await runJudgedEval(await input('base', pairwiseSet, judge), { samplers }), res);
  assert.deepEqual(JSON.parse(await readFile(res.file, 'utf8')), res);

  // Joint LC over the two labels: instruction difficulty fitted, and said so next to the number.
  const summary = await judgedSummary([res, again]);
  assert.equal(summary.length, 2);
  for (const row of summary) assert.match(row.lcVariant!, /instruction difficulty/);
});

// A hosted-style judge: text answers only (no logprobs), a length-biased verdict (the longer
// answer wins), one 503 before it answers, and a key checked on every request.
async function hostedJudge() {
  const seen: { auth?: string; prompt: string }[] = [];
  let failNext = true;
  const server = createServer(
    (req: IncomingMessage, res) =>
      void (async () => {
        let body = '';
        for await (const c of req) body += c;
        const { messages } = JSON.parse(body) as { messages: { content: string }[] };
        const prompt = messages[0].content;
        seen.push({ auth: req.headers.authorization, prompt });
        if (req.headers.authorization !== 'Bearer sekret') {
          res
            .writeHead(401, { 'content-type': 'application/json' })
            .end(JSON.stringify({ error: { message: 'bad key' } }));
          return;
        }
        if (failNext) {
          failNext = false;
          res.writeHead(503).end('busy');
          return;
        }
        let text: string;
        const pair = /Answer A:\n([\s\S]*?)\n\nAnswer B:\n([\s\S]*?)\n\nReply/.exec(prompt);
        if (pair) text = pair[2].length > pair[1].length ? 'B' : 'A';
        else if (prompt.includes('no rating here')) text = 'I cannot rate this.';
        else text = `Fine work. Rating: [[${prompt.includes('Reference answer') ? 3 : 7}]]`;
        res.writeHead(200, { 'content-type': 'application/json' }).end(
          JSON.stringify({
            id: 'x',
            object: 'chat.completion',
            created: 0,
            model: 'judge',
            choices: [
              {
                index: 0,
                message: { role: 'assistant', content: text },
                finish_reason: 'stop',
                logprobs: null,
              },
            ],
            usage: { prompt_tokens: 100, completion_tokens: 5, total_tokens: 105 },
          }),
        );
      })(),
  );
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(server.address() as { port: number }).port}/v1`;
  return { url, seen, close: () => new Promise((r) => server.close(r)) };
}

test('hosted judge, no logprobs: text verdicts, retried 503, env key, grading', async () => {
  const hosted = await hostedJudge();
  process.env.OPSR_TEST_JUDGE_KEY = 'sekret';
  try {
    const judge = judgeCfg(hosted.url, { apiKeyEnv: 'OPSR_TEST_JUDGE_KEY', retries: 2 });
    const res = (await runJudgedEval(
      await input('base', { ...pairwiseSet, name: 'hosted' }, judge),
      { samplers },
    )) as PairwiseEvalResult;
    assert.deepEqual(res.sources, { text: 6 });
    assert.equal(res.cost.judge.requests, 13, '12 verdicts and the retried 503');
    assert.ok(hosted.seen.every((s) => s.auth === 'Bearer sekret'));
    const rows = await readJsonl<{
      preference: number;
      modelLength: number;
      referenceLength: number;
    }>(res.annotationsFile);
    for (const r of rows) {
      const want = r.modelLength > r.referenceLength ? 1 : 0;
      assert.equal(
        r.preference,
        want,
        'the length-biased judge picks the longer answer, whatever the order',
      );
    }
    assert.equal(res.orderBias.flipRate, 0);

    const questions = join(root, 'questions.jsonl');
    await writeFile(
      questions,
      [
        { category: 'math', turns: ['What is 2 + 2?', 'And 3 + 3?'], reference: ['4', '6'] },
        { category: 'writing', turns: ['Write a line.'] },
        { category: 'writing', turns: ['Say something, no rating here.'] },
      ]
        .map((q) => JSON.stringify(q))
        .join('\n') + '\n',
    );
    const grading = {
      kind: 'grading' as const,
      name: 'mt',
      judge: 'j',
      file: questions,
      temperatures: {},
    };
    const g = (await runJudgedEval(await input('base', grading, judge), {
      samplers,
    })) as GradingEvalResult;
    assert.equal(g.questions, 3);
    assert.equal(g.turns, 3);
    assert.equal(g.unparsable, 1);
    assert.deepEqual(g.perCategory, {
      math: { mean: 3, turns: 2, unparsable: 0 },
      writing: { mean: 7, turns: 1, unparsable: 1 },
    });
    assert.equal(g.mean, (3 + 3 + 7) / 3);
    const second = hosted.seen.find((s) => s.prompt.includes('And 3 + 3?'))!.prompt;
    const one = second.indexOf('[User]\nWhat is 2 + 2?\n\n[Assistant]\n');
    const two = second.indexOf('\n\n[User]\nAnd 3 + 3?\n\n[Assistant]\n');
    assert.ok(one >= 0 && two > one, second);
    assert.match(second, /Reference answer:\n6\n/);

    process.env.OPSR_TEST_JUDGE_KEY = 'wrong';
    // A new set name: new answers, so verdicts the cache does not hold.
    await assert.rejects(
      runJudgedEval(await input('round-2', { ...pairwiseSet, name: 'hosted-2' }, judge), {
        samplers,
      }),
      (err: Error & { type?: string }) =>
        err.type === 'BadInput' && /judge j .* answered HTTP 401/.test(err.message),
    );
  } finally {
    delete process.env.OPSR_TEST_JUDGE_KEY;
    await hosted.close();
  }
});

test('the builtin digits judge: the verdict is which answer scores higher', async () => {
  const judge = parseRunConfig({
    model: modelDir,
    prompts: { file: setFile },
    judges: { j: { type: 'builtin', name: 'digits' } },
  }).judges.j;
  const res = (await runJudgedEval(
    await input('base', { ...pairwiseSet, name: 'builtin' }, judge),
    { samplers },
  )) as PairwiseEvalResult;
  const score = getBuiltinScorer('digits')!;
  const rows = await readJsonl<{
    index: number;
    preference: number;
    answer: string;
    reference: string;
  }>(res.annotationsFile);
  for (const r of rows) {
    const d =
      score(promptText(problems[r.index]), r.answer) -
      score(promptText(problems[r.index]), r.reference);
    assert.equal(r.preference, d > 0 ? 1 : d < 0 ? 0 : 0.5);
  }
  assert.equal(res.winRate, rows.reduce((s, r) => s + r.preference, 0) / rows.length);
  assert.ok(res.winRate < 0.5, 'an untrained model loses to the correct answers');
  assert.deepEqual(res.sources, { builtin: 6 });
  assert.equal(res.cost.judge.requests, 0);
});

test('a judge whose apiKeyEnv names an unset variable fails before any request', async () => {
  delete process.env.OPSR_TEST_UNSET_KEY;
  const cfg = judgeCfg('http://127.0.0.1:9/v1', { apiKeyEnv: 'OPSR_TEST_UNSET_KEY' });
  await assert.rejects(
    makeJudge('hosted', cfg, { cacheDir: join(root, 'cache-unset') }),
    /judges\.hosted\.apiKeyEnv: the environment variable OPSR_TEST_UNSET_KEY is not set/,
  );
});
