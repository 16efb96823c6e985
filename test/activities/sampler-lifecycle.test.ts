// Sampler lifecycles and evaluation against real servers: managed-vllm launched through a
// stand-in `vllm` executable that runs opsr's embedded server (replaced when the policy changes,
// stopped on release), external (checked with GET /v1/models), and evaluatePolicy scoring the
// policy's answers with the builtin digits scorer through the chat API, with the prefix curve.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createServer as createHttpServer } from 'node:http';
import { chmod, cp, mkdtemp, rm, writeFile, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MockActivityEnvironment } from '@temporalio/testing';
import { parseRunConfig, type RunConfig } from '../../config/index.ts';
import { createActivities, SamplerPool } from '../../activities/index.ts';
import { startServer } from '../../server/index.ts';
import { readJsonl } from '../../lib/jsonl.ts';
import { recordPid } from '../../lib/pidfile.ts';
import type { SampleRecord } from '../../activities/records.ts';
import { initTinyGpt2 } from '../helpers/tiny-gpt2.ts';
import { alive, freePort } from '../helpers/vllm.ts';
import { getBuiltinScorer } from '../../tasks/index.ts';
import { OPERATIONS, promptText } from '../../tasks/digits.ts';

const samplers = new SamplerPool();
const { evaluatePolicy, samplePairs } = createActivities({ samplers });

// MockActivityEnvironment.run does not infer the result type from the activity.
const runIn = <I, O>(env: MockActivityEnvironment, fn: (i: I) => Promise<O>, i: I) =>
  env.run(fn, i) as Promise<O>;
const REPO = join(import.meta.dirname, '..', '..');
const root = await mkdtemp(join(tmpdir(), 'opsr-act-sampler-'));
const modelDir = join(root, 'model');
const vllmLog = join(root, 'vllm.log');
const fakeVllm = join(root, 'vllm');
let base: RunConfig;
const PROMPTS = [
  [3, 1, 2],
  [1, 2, 3, 4],
  [5, 6, 7],
].map((digits, i) => promptText({ op: OPERATIONS[i % OPERATIONS.length], digits }));

before(async () => {
  await initTinyGpt2(modelDir, { nEmbd: 32, nLayer: 2, seed: 9 });
  await writeFile(
    fakeVllm,
    `#!/bin/sh\nexec "${process.execPath}" --import tsx ` +
      `"${join(REPO, 'test', 'helpers', 'fake-vllm.ts')}" "$@"\n`,
  );
  await chmod(fakeVllm, 0o755);
  const prompts = join(root, 'eval.jsonl');
  await writeFile(prompts, PROMPTS.map((p) => JSON.stringify({ prompt: p })).join('\n') + '\n');
  base = parseRunConfig({
    model: modelDir,
    prompts: { file: prompts },
    storage: join(root, 'store'),
    sampling: {
      lifecycle: 'embedded',
      api: 'chat',
      maxTokens: 5,
      temperature: 0,
      seed: 2,
      embedded: { threads: 1 },
    },
    training: { maxLength: 256, maxPromptLength: 128 }, // within the tiny model's context
    rewardModel: { type: 'builtin', name: 'digits' },
    evaluation: { prompts: { file: prompts }, prefixCurve: true, prefixScores: [1, 10] },
  });
});
after(async () => {
  await samplers.close();
  await rm(root, { recursive: true, force: true });
});

test('managed-vllm: serves policy dir, replaced on new policy, stopped on release', async () => {
  const port = await freePort();
  const sampling = {
    ...base.sampling,
    lifecycle: 'managed-vllm' as const,
    vllm: {
      ...base.sampling.vllm,
      executable: fakeVllm,
      port,
      args: ['--max-model-len', '256'],
      startupTimeoutS: 60,
    },
  };
  process.env.FAKE_VLLM_LOG = vllmLog;
  const e1 = await samplers.ensure({ runId: 'r', modelDir, sampling });
  assert.equal(e1.baseURL, `http://127.0.0.1:${port}/v1`);
  assert.equal(e1.lifecycle, 'managed-vllm');
  const [first] = await readJsonl<{ pid: number; argv: string[] }>(vllmLog);
  assert.deepEqual(first.argv, [
    'serve',
    modelDir,
    '--served-model-name',
    'opsr-policy',
    '--host',
    '127.0.0.1',
    '--port',
    String(port),
    '--generation-config',
    'vllm',
    '--max-model-len',
    '256',
  ]);
  const models = (await (await fetch(`${e1.baseURL}/models`)).json()) as { data: { id: string }[] };
  assert.deepEqual(
    models.data.map((m) => m.id),
    ['opsr-policy'],
  );
  assert.deepEqual(
    await samplers.ensure({ runId: 'r', modelDir, sampling }),
    e1,
    'same policy: same server',
  );
  assert.equal((await readJsonl(vllmLog)).length, 1);

  const next = join(root, 'model-next');
  await cp(modelDir, next, { recursive: true });
  const e2 = await samplers.ensure({ runId: 'r', modelDir: next, sampling });
  const launches = await readJsonl<{ pid: number; argv: string[] }>(vllmLog);
  assert.equal(launches.length, 2);
  assert.equal(launches[1].argv[1], next);
  assert.equal(alive(first.pid), false, "the previous policy's server was stopped");
  assert.equal(e2.modelDir, next);
  await samplers.release({ runId: 'r', endpoint: e2 });
  assert.equal(alive(launches[1].pid), false, 'released');
});

test('managed-vllm: a server left by a dead worker is stopped; a foreign one refused', async () => {
  const port = await freePort();
  const sampling = {
    ...base.sampling,
    lifecycle: 'managed-vllm' as const,
    vllm: { ...base.sampling.vllm, executable: fakeVllm, port, startupTimeoutS: 60 },
  };
  // What a worker killed with SIGKILL leaves behind: its vLLM still serving, and the pid file.
  const leftover = spawn(
    fakeVllm,
    [
      'serve',
      modelDir,
      '--served-model-name',
      'opsr-policy',
      '--host',
      '127.0.0.1',
      '--port',
      String(port),
    ],
    { stdio: 'ignore' },
  );
  for (
    let i = 0;
    i < 200 &&
    !(await fetch(`http://127.0.0.1:${port}/health`).then(
      (r) => r.ok,
      () => false,
    ));
    i++
  )
    await new Promise((r) => setTimeout(r, 100));
  await recordPid(join(tmpdir(), `opsr-vllm-${port}.pid`), leftover.pid!);
  const e = await samplers.ensure({ runId: 'r', modelDir, sampling });
  assert.equal(alive(leftover.pid!), false, 'the leftover server was stopped');
  const launches = await readJsonl<{ pid: number }>(vllmLog);
  assert.equal(alive(launches[launches.length - 1].pid), true);
  await samplers.release({ runId: 'r', endpoint: e });

  const foreign = createHttpServer((_, res) => res.end('ok'));
  await new Promise<void>((r) => foreign.listen(port, '127.0.0.1', r));
  try {
    await assert.rejects(
      samplers.ensure({ runId: 'r', modelDir, sampling }),
      /sampling.vllm.port \d+ is already served by another process/,
    );
  } finally {
    await new Promise((r) => foreign.close(r));
  }
});

// A managed server that exits before serving: once is a failed server (the next attempt starts
// it again), twice in a row is final; an executable that cannot run or a module that cannot be
// imported is the config's fault and never retried. Each names the field and the server's words.
test('managed-vllm exits early: retried once, then final; bad config fails at once', async () => {
  type Failure = Error & { type?: string; nonRetryable?: boolean };
  const managed = async (vllm: Partial<RunConfig['sampling']['vllm']>) => ({
    ...base.sampling,
    lifecycle: 'managed-vllm' as const,
    vllm: { ...base.sampling.vllm, port: await freePort(), startupTimeoutS: 30, ...vllm },
  });
  const failsWith = (sampling: RunConfig['sampling'], re: RegExp, type?: string) =>
    assert.rejects(samplers.ensure({ runId: 'r', modelDir, sampling }), (e: Failure) => {
      assert.match(e.message, re);
      assert.equal(e.type, type);
      assert.equal(e.nonRetryable ?? false, type !== undefined);
      return true;
    });

  const broken = join(root, 'broken-vllm');
  await writeFile(broken, '#!/bin/sh\necho "CUDA not available" >&2\nexit 1\n');
  await chmod(broken, 0o755);
  const exits = await managed({ executable: broken });
  await failsWith(exits, /failed \(.*exited \(code 1\) before serving.*CUDA not available/);
  await failsWith(exits, /failed again after a restart: .*CUDA not available/, 'SamplerBroken');

  const silent = join(root, 'silent-vllm');
  await writeFile(silent, '#!/bin/sh\nexec sleep 60\n');
  await chmod(silent, 0o755);
  const hangs = await managed({ executable: silent, startupTimeoutS: 1 });
  await failsWith(
    hangs,
    /did not answer GET \/health .* within 1s \(sampling.vllm.startupTimeoutS/,
  );
  await failsWith(hangs, /failed again after a restart: .*within 1s/, 'SamplerBroken');

  await failsWith(
    await managed({ executable: join(root, 'no-such-vllm') }),
    /^sampling.vllm.executable ".*no-such-vllm" cannot be run \(.*No such file.*allowed: a command/,
    'BadInput',
  );
  await failsWith(
    await managed({ executable: 'python3', module: 'opsr_no_such_module.api_server' }),
    new RegExp(
      '^sampling.vllm.module "opsr_no_such_module.api_server": python3 cannot import ' +
        'opsr_no_such_module .*allowed: a module',
    ),
    'BadInput',
  );
});

test('external: the configured server must serve the configured model', async () => {
  const server = await startServer({ modelDir, servedModelName: 'tiny', threads: 1 });
  try {
    const ok = await samplers.ensure({
      runId: 'r',
      modelDir,
      sampling: { ...base.sampling, lifecycle: 'external', baseURL: server.url, model: 'tiny' },
    });
    assert.deepEqual(ok, { lifecycle: 'external', baseURL: server.url, model: 'tiny', modelDir });
    await assert.rejects(
      samplers.ensure({
        runId: 'r',
        modelDir,
        sampling: { ...base.sampling, lifecycle: 'external', baseURL: server.url, model: 'other' },
      }),
      /sampling.model "other" is not served .*served: tiny/,
    );
  } finally {
    await server.close();
  }
});

test('evaluatePolicy: greedy chat answers, builtin scorer, prefix curve, reused', async () => {
  const endpoint = await samplers.ensure({ runId: 'r', modelDir, sampling: base.sampling });
  const runDir = join(root, 'store', 'runs', 'r');
  const inp = {
    runId: 'r',
    label: 'base',
    runDir,
    endpoint,
    evaluation: base.evaluation!,
    sampling: base.sampling,
    prefixes: base.prefixes,
    rewardModel: base.rewardModel!,
    prefixCurve: true,
    notify: [],
  };
  const res = await runIn(new MockActivityEnvironment(), evaluatePolicy, inp);
  assert.equal(res.count, 3);
  assert.equal(res.file, join(runDir, 'eval', 'base', 'results.json'));
  const rows = await readJsonl<{ index: number; side: string; text: string; reward: number }>(
    join(runDir, 'eval', 'base', 'answers.jsonl'),
  );
  assert.equal(rows.length, 9);
  for (const r of rows)
    assert.equal(
      r.reward,
      getBuiltinScorer('digits')!(PROMPTS[r.index], r.text),
      'scored against the unprefixed prompt',
    );
  const plain = rows.filter((r) => r.side === 'plain');
  assert.equal(res.meanReward, plain.reduce((a, r) => a + r.reward, 0) / 3);
  assert.deepEqual(
    res.prefixCurve!.map((p) => p.score),
    [1, 10],
  );
  for (const p of res.prefixCurve!) {
    const side = rows.filter((r) => r.side === `prefix-${p.score}`);
    assert.equal(side.length, 3);
    assert.equal(p.meanReward, side.reduce((a, r) => a + r.reward, 0) / 3);
  }
  assert.deepEqual(JSON.parse(await readFile(res.file, 'utf8')), res);
  const again = await runIn(new MockActivityEnvironment(), evaluatePolicy, inp);
  assert.deepEqual(again, res);
});

test('with a chat template, the completions API renders prompts as the chat API does', async () => {
  const prompts = join(root, 'chat-prompts.jsonl');
  const chats = [
    [
      { role: 'system', content: 'Answer with digits.' },
      { role: 'user', content: PROMPTS[0] },
    ],
    [
      { role: 'user', content: PROMPTS[1] },
      { role: 'assistant', content: '1 2' },
      { role: 'user', content: PROMPTS[2] },
    ],
  ];
  // Chats, and a plain prompt (one user turn through the template).
  await writeFile(
    prompts,
    [...chats.map((messages) => ({ messages })), { prompt: PROMPTS[1] }]
      .map((r) => JSON.stringify(r))
      .join('\n') + '\n',
  );
  const { prepareRun } = await import('../../activities/prepare.ts');
  const results: SampleRecord[][] = [];
  for (const api of ['chat', 'completions'] as const) {
    const config = parseRunConfig({
      ...base,
      runId: undefined,
      prompts: { file: prompts },
      sampling: { ...base.sampling, api },
    });
    const prep = await prepareRun({ runId: `chat-${api}`, config });
    const endpoint = await samplers.ensure({ runId: 'r', modelDir, sampling: config.sampling });
    const out = await runIn(new MockActivityEnvironment(), samplePairs, {
      runId: `chat-${api}`,
      round: 2,
      roundDir: join(prep.runDir, 'round-2'),
      promptsFile: prep.promptsFile,
      endpoint,
      sampling: config.sampling,
      prefixes: config.prefixes,
      chosenScore: 10,
      rejectedScore: 5,
      notify: [],
    });
    results.push(await readJsonl<SampleRecord>(out.samplesFile));
  }
  const [viaChat, viaCompletions] = results;
  assert.deepEqual(
    viaChat.map((r) => r.messages ?? r.prompt),
    [...chats, PROMPTS[1]],
    'samples keep the original prompt, without prefix',
  );
  assert.deepEqual(
    viaCompletions.map((r) => [r.chosen.text, r.rejected.text]),
    viaChat.map((r) => [r.chosen.text, r.rejected.text]),
  );
  assert.ok(viaChat.every((r) => r.chosen.tokens >= 1));
});
