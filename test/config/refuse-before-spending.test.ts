// `opsr validate` (loadRunConfig), workflow start (parseRunConfig in the workflow, runIdOf) and
// prepareRun refuse what the engine or the server would refuse only after work is spent: engine
// caps, float32 overflow, label smoothing at its bound, lengths against each other and against the
// model's context, regexes with their flags, response-shape fields in sampling.extra, unsafe run
// ids. Secrets are never echoed.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ApplicationFailure } from '@temporalio/common';
import { ConfigError, parseRunConfig } from '../../config/index.ts';
import { loadRunConfig } from '../../activities/load-config.ts';
import { prepareRun } from '../../activities/prepare.ts';
import { runIdOf } from '../../workflows/run.ts';
import { WorkflowFailedError } from '@temporalio/client';
import { createWorkers, installWorkerLogging } from '../../workers/index.ts';
import { TASK_QUEUES, WORKFLOW_TYPES } from '../../contracts/workflows.ts';
import { createTestEnv } from '../helpers/temporal.ts';
import { readEvents, testActivities } from '../helpers/workflow-activities.ts';
import { writeTinyTokenizer } from '../helpers/tiny-tokenizer.ts';

const ENGINE = join(import.meta.dirname, '..', '..', 'engine', 'build', 'opsr-engine');
const root = await mkdtemp(join(tmpdir(), 'opsr-refuse-'));
after(() => rm(root, { recursive: true, force: true }));
const base = { model: '/m', prompts: { file: '/p' } };

function problems(over: Record<string, unknown>): string[] {
  try {
    parseRunConfig({ ...base, ...over });
  } catch (e) {
    assert.ok(e instanceof ConfigError, String(e));
    return e.issues;
  }
  assert.fail(`accepted ${JSON.stringify(over)}`);
}
const has = (lines: string[], pattern: RegExp) =>
  assert.ok(
    lines.some((l) => pattern.test(l)),
    `${pattern} not in\n${lines.join('\n')}`,
  );

test('engine caps, float32 range and the label smoothing bound', () => {
  const lines = problems({
    training: {
      loss: 'dpo',
      batchSize: 4097,
      gradAccum: 2 ** 20 + 1,
      epochs: 2 ** 20 + 1,
      maxSteps: 1e8,
      labelSmoothing: 0.5,
      beta: 1e39,
      learningRate: 1e-50,
    },
  });
  has(lines, /^training\.batchSize: is too large \(got 4097; allowed an integer <= 4096\)/);
  has(lines, /^training\.gradAccum: is too large \(got 1048577; allowed an integer <= 1048576\)/);
  has(lines, /^training\.epochs: is too large/);
  has(lines, /^training\.maxSteps: is too large \(got 100000000; allowed an integer <= 99999999\)/);
  has(lines, /^training\.labelSmoothing: is too large \(got 0\.5; allowed a number < 0\.5\)/);
  has(lines, /^training\.beta: is too large \(got 1e\+39; allowed a positive number .*float32/);
  has(lines, /^training\.learningRate: is too small \(got 1e-50;/);
  has(
    problems({ training: { beta: 1e38, gammaBetaRatio: 10 } }),
    /^training\.gammaBetaRatio: times beta 1e\+38 overflows float32/,
  );
  has(problems({ training: { weightDecay: 1e300 } }), /^training\.weightDecay: is too large/);
  has(
    problems({ init: { offline: { data: '/d', learningRate: 5e38 } } }),
    /^init\.offline\.learningRate: is too large/,
  );
});

test('lengths against each other, regexes with their flags, response-shape fields in extra', () => {
  const lens = problems({
    init: {
      sft: { data: '/d', maxLength: 100 },
      offline: { data: '/d', maxLength: 50, maxPromptLength: 60 },
    },
  });
  has(
    lens,
    new RegExp(
      /^init\.sft\.maxLength: leaves no room for a response: /.source +
        /prompts up to 512 tokens /.source +
        /\(training\.maxPromptLength\) in sequences of 100/.source,
    ),
  );
  has(
    lens,
    /^init\.offline\.maxPromptLength: leaves no room for a response: prompts up to 60 tokens/,
  );
  const re = problems({ filter: { scoreTalkPatterns: ['\\-x', 'ok'], patternFlags: 'u' } });
  assert.deepEqual(re.length, 1);
  has(re, /^filter\.scoreTalkPatterns\[0\]: does not compile with flags "u": .*Invalid escape/);
  has(
    problems({ filter: { patternFlags: 'ii' } }),
    /^filter\.patternFlags: has an unsupported or repeated flag/,
  );
  const extra = problems({
    sampling: {
      extra: { stream: true, echo: true, logprobs: 2, max_completion_tokens: 5, top_k: 4 },
    },
  });
  for (const k of ['stream', 'echo', 'logprobs'])
    has(extra, new RegExp(`^sampling\\.extra\\.${k}: changes the shape of the response`));
  has(
    extra,
    /^sampling\.extra\.max_completion_tokens: is set by opsr itself .*sampling\.maxTokens/,
  );
  assert.equal(extra.length, 4); // top_k passes
  has(
    problems({ activities: { retry: { initialIntervalS: 5, maximumIntervalS: 1 } } }),
    /^activities\.retry\.maximumIntervalS: is below initialIntervalS 5/,
  );
});

test('secrets in sampling.extra and unknown fields are never echoed', () => {
  const lines = problems({
    sampling: {
      extra: {
        api_key: 'sk-live-123',
        stream: 'Bearer abc.def',
        headers: { Authorization: 'Bearer zzz' },
      },
    },
    openai_api_key: 'sk-live-456',
    temporal: { apiKeyEnv: 'sk-live-789' },
  });
  const text = lines.join('\n');
  for (const secret of ['sk-live-123', 'abc.def', 'sk-live-456', 'sk-live-789'])
    assert.ok(!text.includes(secret), `${secret} echoed:\n${text}`);
  has(lines, /^sampling\.extra\.api_key: is set by opsr itself \(got a value, not shown;/);
  has(lines, /^sampling\.extra\.stream: changes the shape .*\(got "\(a value, not shown\)"/);
});

test('a workflow id that is not a safe directory name is refused when it becomes run id', () => {
  const config = parseRunConfig(base);
  assert.equal(runIdOf(config, 'study/arm'), 'study-arm');
  // The id a Temporal Schedule gives each action it starts.
  assert.equal(runIdOf(config, 'nightly-2026-11-30T02:00:00Z'), 'nightly-2026-11-30T02-00-00Z');
  assert.equal(runIdOf(parseRunConfig({ ...base, runId: 'mine' }), '../../etc'), 'mine');
  for (const bad of ['../../etc', 'a b', '.hidden', 'x'.repeat(200), 'tab\there']) {
    assert.throws(
      () => runIdOf(config, bad),
      (e: unknown) =>
        e instanceof ApplicationFailure &&
        e.type === 'ConfigError' &&
        e.nonRetryable &&
        /becomes the run id .*a directory name: allowed 1-128 characters/.test(e.message),
    );
  }
});

// A real engine-made model with a 200-token context, and three prompts of different lengths.
const model = join(root, 'model');
const prompts = join(root, 'prompts.jsonl');
before(async () => {
  const vocab = await writeTinyTokenizer(model);
  await writeFile(
    join(root, 'gpt2.json'),
    JSON.stringify({ n_embd: 16, n_layer: 1, n_head: 2, n_positions: 200, vocab_size: vocab }),
  );
  const init = ['init', '--config', join(root, 'gpt2.json'), '--out', model, '--seed', '1'];
  execFileSync(ENGINE, init, { stdio: 'pipe' });
  await writeFile(
    prompts,
    ['short', 'a much longer prompt that takes many more tokens than the others do', 'mid size']
      .map((p) => JSON.stringify({ prompt: p }))
      .join('\n') + '\n',
  );
});

test("lengths, longest prompt vs the model's context: opsr validate and prepareRun", async () => {
  const write = async (name: string, over: Record<string, unknown>) => {
    const file = join(root, name);
    await writeFile(
      file,
      JSON.stringify({ model, prompts: { file: prompts }, storage: join(root, 'store'), ...over }),
    );
    return file;
  };
  const refused = async (file: string, pattern: RegExp) =>
    assert.rejects(loadRunConfig(file), (e: unknown) => {
      assert.ok(e instanceof ConfigError, String(e));
      assert.match(e.message, pattern);
      return true;
    });
  await refused(
    await write('long.json', { training: { maxLength: 256, maxPromptLength: 64 } }),
    new RegExp(
      /training\.maxLength: 256 exceeds the model's context /.source +
        /\(200 tokens, n_positions in .*model\/config\.json\)/.source,
    ),
  );
  await refused(
    await write('sft.json', {
      training: { maxLength: 200, maxPromptLength: 64 },
      init: { sft: { data: prompts, maxLength: 300 } },
    }),
    /init\.sft\.maxLength: 300 exceeds the model's context/,
  );
  await refused(
    await write('tokens.json', {
      training: { maxLength: 200, maxPromptLength: 64 },
      sampling: { maxTokens: 200 },
    }),
    /sampling\.maxTokens: 200 leaves no room for a prompt/,
  );
  const tight = await write('tight.json', {
    training: { maxLength: 200, maxPromptLength: 64 },
    sampling: { maxTokens: 70 },
  });
  await refused(
    tight,
    new RegExp(
      /sampling\.maxTokens: 70 new tokens after the longest prompt /.source +
        /\(index 1 of .*prompts\.jsonl: \d+ tokens with its prefix\)/.source +
        / exceed the model's context \(200 tokens/.source,
    ),
  );
  // The same config given to a workflow: prepareRun refuses it before anything is sampled.
  const config = parseRunConfig({
    model,
    prompts: { file: prompts },
    storage: join(root, 'store'),
    training: { maxLength: 200, maxPromptLength: 64 },
    sampling: { maxTokens: 70 },
  });
  await assert.rejects(
    prepareRun({ runId: 'tight', config }),
    (e: unknown) =>
      e instanceof ApplicationFailure &&
      e.type === 'ConfigError' &&
      e.nonRetryable &&
      new RegExp(
        /^workflow input: 1 problem\n {2}/.source +
          /sampling\.maxTokens: 70 new tokens after the longest prompt/.source,
      ).test(e.message),
  );
  // Room enough: accepted.
  await loadRunConfig(
    await write('fits.json', {
      training: { maxLength: 200, maxPromptLength: 64 },
      sampling: { maxTokens: 8 },
    }),
  );
});

// Input files the run reads later (a set evaluated after the last round would fail after all the
// training): prompts, seed data, the judges' prompt files and every evaluation set, read as the
// run reads them, each problem naming the field and the file (and line). `opsr validate` lets a
// file that does not exist yet pass (the demo makes its data after loading its preset);
// prepareRun requires every one.
test('input files are read when the run is loaded; prepareRun requires them all', async () => {
  const file = (name: string, text: string) =>
    writeFile(join(root, name), text).then(() => join(root, name));
  const judgePrompt = await file('pairwise.txt', 'Which is better? {instruction} {answer_a}');
  const rubric = await file('rubric.txt', 'Rate it.');
  const pairs = await file('pw.jsonl', '{"instruction": "a"}\n{"instruction": ""}\n');
  const questions = await file('mt.jsonl', '{"category": "x", "turns": ["hi"]}\nnot json\n');
  const sft = await file('sft.jsonl', '{"prompt": "a", "completion": ""}\n');
  const input = {
    model,
    prompts: { file: prompts },
    storage: join(root, 'store'),
    training: { maxLength: 200, maxPromptLength: 64 },
    sampling: { maxTokens: 8 },
    init: { sft: { data: sft }, offline: { data: join(root, 'not-yet.jsonl') } },
    pairs: { source: 'self-judge', rubricPrompt: rubric },
    judges: {
      j: {
        type: 'openai',
        baseURL: 'http://127.0.0.1:8000/v1',
        model: 'judge',
        prompts: { pairwise: judgePrompt, grading: root }, // a directory
      },
    },
    evals: {
      rounds: [3],
      sets: [
        { kind: 'pairwise', name: 'pw', judge: 'j', file: pairs, reference: 'base' },
        { kind: 'grading', name: 'mt', judge: 'j', file: questions },
        { kind: 'grading', name: 'none', judge: 'j', file: join(root, 'none.jsonl') },
      ],
    },
  };
  const expected = [
    new RegExp(
      /^judges\.j\.prompts\.pairwise: the prompt file .*pairwise\.txt lacks \{answer_b\} /.source +
        /\(allowed: a text file with \{instruction\}, \{answer_a\}, \{answer_b\}/.source,
    ),
    /^judges\.j\.prompts\.grading: cannot read the prompt file .*: EISDIR/,
    /^pairs\.rubricPrompt: the prompt file .*rubric\.txt lacks \{instruction\}, \{answer\}/,
    /^evals\.sets \(pw\)\.file: .*pw\.jsonl:2: "instruction" \(or "prompt"\) must be a non-empty/,
    /^evals\.sets \(mt\)\.file: .*mt\.jsonl:2: not valid JSON/,
    /^init\.sft\.data: .*sft\.jsonl:1: "completion" must not be empty/,
  ];
  const missing = [
    /^init\.offline\.data: cannot read .*not-yet\.jsonl \(ENOENT/,
    /^evals\.sets \(none\)\.file: cannot read .*none\.jsonl \(ENOENT/,
  ];
  await assert.rejects(loadRunConfig(await file('inputs.json', JSON.stringify(input))), (e) => {
    assert.ok(e instanceof ConfigError, String(e));
    assert.equal(e.issues.length, expected.length, e.issues.join('\n'));
    for (const pattern of expected) has(e.issues, pattern);
    return true;
  });
  await assert.rejects(
    prepareRun({ runId: 'inputs', config: parseRunConfig(input) }),
    (e: unknown) => {
      assert.ok(e instanceof ApplicationFailure && e.type === 'ConfigError', String(e));
      const lines = e.details as string[];
      assert.equal(lines.length, expected.length + missing.length, lines.join('\n'));
      for (const pattern of [...expected, ...missing]) has(lines, pattern);
      return true;
    },
  );
});

// Started through the client, not `opsr validate`: the run fails in prepareRun with the lines
// validate prints for the same config, and nothing is served or sampled.
test('a workflow started with a config validate refuses fails before any sampling', async () => {
  const over = {
    training: { maxLength: 256, maxPromptLength: 64 }, // over the model's 200-token context
    sampling: { maxTokens: 8 },
    rewardModel: { type: 'builtin', name: 'no-such-scorer' },
  };
  const file = join(root, 'refused.json');
  await writeFile(
    file,
    JSON.stringify({ model, prompts: { file: prompts }, storage: join(root, 'wf'), ...over }),
  );
  const validated = await loadRunConfig(file).then(
    () => assert.fail('validate accepted it'),
    (e: unknown) => (e as ConfigError).issues,
  );
  assert.equal(validated.length, 2, validated.join('\n'));
  has(validated, /^training\.maxLength: 256 exceeds the model's context \(200 tokens/);
  has(validated, /^rewardModel\.name: is not a builtin scorer \(got "no-such-scorer"/);

  installWorkerLogging();
  const env = await createTestEnv();
  const log = join(root, 'wf-events.jsonl');
  try {
    const w = await createWorkers({
      connection: env.nativeConnection,
      activities: { ...testActivities({ log }), prepareRun },
    });
    const running = w.run();
    try {
      const err = await env.client.workflow
        .execute(WORKFLOW_TYPES.run, {
          taskQueue: TASK_QUEUES.control,
          workflowId: 'refused',
          args: [{ model, prompts: { file: prompts }, storage: join(root, 'wf'), ...over }],
        })
        .then(
          () => assert.fail('the run started'),
          (e: unknown) => e,
        );
      assert.ok(err instanceof WorkflowFailedError, String(err));
      const cause = err.cause?.cause; // workflow failure <- activity failure <- ConfigError
      assert.ok(cause instanceof ApplicationFailure, String(cause));
      assert.equal(cause.type, 'ConfigError');
      const lines = validated.map((l) => `  ${l}`).join('\n');
      assert.equal(cause.message, `workflow input: 2 problems\n${lines}`);
    } finally {
      w.shutdown();
      await running;
    }
  } finally {
    await env.teardown();
  }
  assert.deepEqual(await readEvents(log), []); // not served, not sampled, nothing attempted
});
