// Errors that are the same on every attempt fail the activity once as BadInput (non-retryable),
// naming what is wrong: a chat prompt for a model without a chat template, a prompt that
// tokenizes to nothing, a server or reward model answering an unexpected shape, and a model
// config too large for this machine (the engine's out of memory), a reward model that cannot
// score (checked when the run is prepared).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MockActivityEnvironment } from '@temporalio/testing';
import { ApplicationFailure } from '@temporalio/common';
import { parseRunConfig } from '../../config/index.ts';
import { buildDataset } from '../../activities/dataset.ts';
import { createActivities, SamplerPool } from '../../activities/index.ts';
import { prepareRun } from '../../activities/prepare.ts';
import { analyzeRewards } from '../../activities/rewards.ts';
import { trainPolicy } from '../../activities/train.ts';
import type { SamplePairsInput } from '../../contracts/activities.ts';
import { toJsonl } from '../../lib/jsonl.ts';
import { writeTokData } from '../../lib/tokdata.ts';
import { writeTinyTokenizer } from '../helpers/tiny-tokenizer.ts';
import { freePort } from '../helpers/vllm.ts';

// Sampling from an external endpoint: the pool starts no server.
const { samplePairs } = createActivities({ samplers: new SamplerPool() });

const ENGINE = join(import.meta.dirname, '..', '..', 'engine', 'build', 'opsr-engine');
const root = await mkdtemp(join(tmpdir(), 'opsr-determ-'));
after(() => rm(root, { recursive: true, force: true }));

const answer = (text: string) => ({ text, finish_reason: 'stop', tokens: 1, seed: 1 });
const pair = (index: number, prompt: unknown) => ({
  index,
  round: 1,
  ...(typeof prompt === 'string' ? { prompt } : { messages: prompt }),
  chosen: answer('a b'),
  rejected: answer('c'),
  chosenScore: 10,
  rejectedScore: 3,
  seed: 0,
});

async function model(
  name: string,
  opts: { chatTemplate?: boolean; nPositions?: number } = {},
): Promise<string> {
  const dir = join(root, name);
  const vocab = await writeTinyTokenizer(dir, opts);
  const cfg = join(root, `${name}.json`);
  await writeFile(
    cfg,
    JSON.stringify({
      n_embd: 16,
      n_layer: 1,
      n_head: 2,
      n_positions: opts.nPositions ?? 64,
      vocab_size: vocab,
    }),
  );
  execFileSync(ENGINE, ['init', '--config', cfg, '--out', dir, '--seed', '1'], { stdio: 'pipe' });
  return dir;
}

async function assertBadInput(p: Promise<unknown>, pattern: RegExp): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof ApplicationFailure, `not an ApplicationFailure: ${String(err)}`);
    assert.equal(err.type, 'BadInput');
    assert.equal(err.nonRetryable, true);
    assert.match(err.message, pattern);
    return true;
  });
}

async function serve(
  handler: (url: string, body: string) => { status?: number; body: string },
): Promise<Server> {
  const server = createServer((req, res) => {
    let raw = '';
    req.on('data', (d) => (raw += d));
    req.on('end', () => {
      const r = handler(req.url ?? '', raw);
      res.writeHead(r.status ?? 200, { 'content-type': 'application/json' }).end(r.body);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return server;
}
const urlOf = (s: Server) => `http://127.0.0.1:${(s.address() as AddressInfo).port}`;

const training = parseRunConfig({ model: '/m', prompts: { file: '/p' } }).training;

test('buildDataset: chat prompt without chat template, empty prompt: bad input', async () => {
  const plain = await model('plain', { chatTemplate: false });
  const dir = join(root, 'ds');
  const pairsFile = join(root, 'pairs-chat.jsonl');
  await writeFile(
    pairsFile,
    toJsonl([pair(0, 'fine'), pair(7, [{ role: 'user', content: 'hi' }])]),
  );
  await assertBadInput(
    buildDataset({ runId: 'r', round: 1, roundDir: dir, pairsFile, modelDir: plain, training }),
    new RegExp(
      /pairs-chat\.jsonl: prompt index 7: /.source +
        /a chat prompt \("messages"\) needs a model with a chat_template/.source,
    ),
  );
  const emptyFile = join(root, 'pairs-empty.jsonl');
  await writeFile(emptyFile, toJsonl([pair(0, 'fine'), pair(3, '')]));
  await assertBadInput(
    buildDataset({
      runId: 'r',
      round: 1,
      roundDir: dir,
      pairsFile: emptyFile,
      modelDir: plain,
      training,
    }),
    /pairs-empty\.jsonl: prompt index 3: the prompt tokenizes to nothing/,
  );
});

test('samplePairs: a server answering an unexpected shape is bad input, not retried', async () => {
  const modelDir = await model('chat');
  const shapes = [
    JSON.stringify({ choices: [] }),
    JSON.stringify({ choices: [{ text: 1, finish_reason: 'stop' }] }),
    JSON.stringify({ result: 'hello' }),
  ];
  for (const shape of shapes) {
    const server = await serve((url) =>
      url.endsWith('/models') ? { body: JSON.stringify({ data: [{ id: 'm' }] }) } : { body: shape },
    );
    try {
      const baseURL = `${urlOf(server)}/v1`;
      const promptsFile = join(root, 'prompts.jsonl');
      await writeFile(promptsFile, toJsonl([{ index: 0, prompt: 'x' }]));
      const sampling = parseRunConfig({
        model: '/m',
        prompts: { file: '/p' },
        sampling: { lifecycle: 'external', baseURL, model: 'm' },
      }).sampling;
      const input: SamplePairsInput = {
        runId: 'r',
        round: 1,
        roundDir: join(root, `sample-${shapes.indexOf(shape)}`),
        promptsFile,
        endpoint: { lifecycle: 'external', baseURL, model: 'm', modelDir },
        sampling,
        prefixes: parseRunConfig({ model: '/m', prompts: { file: '/p' } }).prefixes,
        chosenScore: 10,
        rejectedScore: 3,
        notify: [],
      };
      await assertBadInput(
        new MockActivityEnvironment().run(samplePairs, input),
        new RegExp(
          `${baseURL}/completions answered an unexpected shape ` +
            `.*${shape.slice(0, 12).replace(/[[\]{}]/g, '\\$&')}`,
        ),
      );
    } finally {
      server.close();
    }
  }
});

test('analyzeRewards: a reward model answering non-JSON or wrong shape is bad input', async () => {
  const pairsFile = join(root, 'pairs-rm.jsonl');
  await writeFile(pairsFile, toJsonl([pair(0, 'p')]));
  const cases: [string, RegExp][] = [
    ['<html>oops</html>', /answered with non-JSON: <html>/],
    [JSON.stringify({ score: 1 }), /answered neither a list of scores/],
    [JSON.stringify([1]), /returned 1 scores for 2 inputs/],
    [JSON.stringify(['high', 'low']), /scores\[0\] is "high", not a finite number/],
  ];
  for (const [i, [body, pattern]] of cases.entries()) {
    const server = await serve(() => ({ body }));
    try {
      await assertBadInput(
        new MockActivityEnvironment().run(analyzeRewards, {
          runId: 'r',
          round: 1,
          roundDir: join(root, `rm-${i}`),
          pairsFile,
          rewardModel: { type: 'http' as const, url: `${urlOf(server)}/score` },
          notify: [],
        }),
        pattern,
      );
    } finally {
      server.close();
    }
  }
});

test('prepareRun: a reward model that cannot score is refused before any sampling', async () => {
  const dir = await model('rm-check', { nPositions: 512 });
  const prompts = join(root, 'rm-check.jsonl');
  await writeFile(prompts, '{"prompt": "a"}\n');
  const config = (rewardModel: unknown) =>
    parseRunConfig({
      model: dir,
      storage: join(root, 'rm-store'),
      prompts: { file: prompts },
      training: { maxLength: 512, maxPromptLength: 256 },
      sampling: { maxTokens: 16 },
      rewardModel,
    });
  const prepare = (rewardModel: unknown, runId: string) =>
    new MockActivityEnvironment().run(prepareRun, { runId, config: config(rewardModel) });
  const asked: string[] = [];
  const server = await serve((url, body) => {
    asked.push(body);
    const { model: name } = JSON.parse(body) as { model: string };
    if (url === '/classify' && name === 'rm')
      return { body: JSON.stringify({ data: [{ probs: [0.25] }] }) };
    return {
      status: 404,
      body: JSON.stringify({ error: { message: `The model \`${name}\` does not exist.` } }),
    };
  });
  try {
    const rm = { type: 'vllm-classify', baseURL: `${urlOf(server)}/v1` };
    await assertBadInput(
      prepare({ ...rm, model: 'typo' }, 'bad'),
      /^rewardModel \(checked before sampling\): .*\/classify answered HTTP 404: .*typo/,
    );
    await assert.rejects(readFile(join(root, 'rm-store', 'runs', 'bad', 'config.json')));
    const ok = (await prepare({ ...rm, model: 'rm' }, 'good')) as { runDir: string };
    assert.equal(ok.runDir, join(root, 'rm-store', 'runs', 'good'));
    assert.equal(asked.length, 2, 'one scoring request per check');
    assert.deepEqual(JSON.parse(asked[1]).input, ['opsr reward model check\nok']);
  } finally {
    server.close();
  }
  // Nothing listening: retryable (the server may be starting), naming the URL.
  const down = `http://127.0.0.1:${await freePort()}/score`;
  await assert.rejects(
    prepare({ type: 'http', url: down }, 'down'),
    (err: Error & { nonRetryable?: boolean }) => {
      assert.match(
        err.message,
        /^rewardModel \(checked before sampling\): .*\/score: fetch failed \(.*ECONNREFUSED/,
      );
      assert.ok(!(err instanceof ApplicationFailure && err.nonRetryable));
      return true;
    },
  );
});

test('trainPolicy: engine out of memory, model too large for the machine: bad input', async () => {
  const big = await model('big');
  const cfgFile = join(big, 'config.json');
  const cfg = JSON.parse(await readFile(cfgFile, 'utf8')) as Record<string, unknown>;
  await writeFile(
    cfgFile,
    JSON.stringify({
      ...cfg,
      n_embd: 16384,
      n_head: 16,
      n_layer: 200,
      n_positions: 8192,
      vocab_size: 50257,
    }),
  );
  const dataFile = join(root, 'train.bin');
  await writeTokData(dataFile, {
    kind: 'preference',
    records: [{ prompt: [1, 2], chosen: [3], rejected: [4] }],
  });
  await assertBadInput(
    new MockActivityEnvironment().run(trainPolicy, {
      runId: 'r',
      round: 1,
      roundDir: join(root, 'train'),
      referenceModelDir: big,
      dataFile,
      training,
      learningRate: 1e-3,
      notify: [],
    }),
    new RegExp(
      /big\/config\.json: training this model needs at least \d+\.\d GiB /.source +
        /\(n_embd 16384, n_layer 200.*this machine has \d/.source,
    ),
  );
});
