// opsr-engine serve through server/engine-supervisor.ts: greedy parity with transformers, seed
// determinism across batch compositions, stop ids, cancel, the context limit, continuous
// batching, errors.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  EngineProcess,
  EngineError,
  type EngineRequest,
  type EngineDone,
  type EngineToken,
} from '../../server/engine-supervisor.ts';
import { makeTinyModel, transformersGreedy, ENGINE } from '../helpers/tiny-gpt2.ts';

let dir: string;
let model: string;
// A long context, so that requests can run for hundreds of steps (cancel and batch overlap tests).
const N_CTX = 1024;
const engines: EngineProcess[] = [];

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'opsr-gen-'));
  model = join(dir, 'model');
  await makeTinyModel(model, { nPositions: N_CTX });
});
after(async () => {
  await Promise.all(engines.map((e) => e.stop()));
  await rm(dir, { recursive: true, force: true });
});

async function startEngine(
  maxBatch: number,
  dtype: 'fp32' | 'bf16' = 'fp32',
  threads = 2,
): Promise<EngineProcess> {
  const e = new EngineProcess({ modelDir: model, enginePath: ENGINE, threads, maxBatch, dtype });
  engines.push(e);
  await e.start();
  return e;
}

const BASE: EngineRequest = {
  prompt: [1, 2, 3],
  maxTokens: 16,
  temperature: 0,
  topP: 1,
  topK: 0,
  seed: 0,
  stopTokenIds: [],
  logprobs: false,
  topLogprobs: 0,
};

type Result = { tokens: EngineToken[]; done: EngineDone; id: number };

function run(
  e: EngineProcess,
  req: Partial<EngineRequest>,
  onFirst?: (id: number) => void,
  onEach?: () => void,
): Promise<Result> {
  return new Promise((resolve, reject) => {
    const tokens: EngineToken[] = [];
    const id = e.generate(
      { ...BASE, ...req },
      {
        onToken: (t) => {
          tokens.push(t);
          onEach?.();
          if (tokens.length === 1) onFirst?.(id);
        },
        onDone: (done) => resolve({ tokens, done, id }),
        onError: reject,
      },
    );
  });
}

const ids = (r: Result) => r.tokens.map((t) => t.token);

const PROMPTS = [
  [1, 2, 3],
  [50, 60, 70, 80],
  [200],
  Array.from({ length: 30 }, (_, i) => (i * 37) % 272),
];
let reference: ReturnType<typeof transformersGreedy> | null = null;
const greedyReference = () => (reference ??= transformersGreedy(model, PROMPTS, 20));

test('greedy output and log-probs equal transformers greedy generate', async () => {
  const prompts = PROMPTS;
  const ref = greedyReference();
  const e = await startEngine(3); // 4 prompts on 3 slots: one waits and is admitted mid-flight
  const got = await Promise.all(
    prompts.map((prompt) => run(e, { prompt, maxTokens: 20, logprobs: true })),
  );
  for (let i = 0; i < prompts.length; i++) {
    assert.deepEqual(ids(got[i]), ref[i].tokens, `prompt ${i}`);
    assert.ok(
      new Set(ref[i].tokens).size > 2,
      'the reference output varies (the test can tell models apart)',
    );
    got[i].tokens.forEach((t, j) =>
      assert.ok(Math.abs(t.logprob! - ref[i].logprobs[j]) < 1e-4, `prompt ${i} token ${j} logprob`),
    );
    assert.deepEqual(got[i].done, {
      finishReason: 'length',
      stopToken: null,
      promptTokens: prompts[i].length,
      completionTokens: 20,
    });
  }
});

test('same seed and prompt: same tokens and log-probs whatever else is in the batch', async () => {
  const x: Partial<EngineRequest> = {
    prompt: [5, 6, 7, 8],
    maxTokens: 300,
    temperature: 1.0,
    topP: 0.9,
    topK: 100,
    seed: 42,
    logprobs: true,
    topLogprobs: 3,
  };
  const alone = await run(await startEngine(1), x);
  const busy = await startEngine(8);
  // Token events of every request on the busy engine, in the order they arrive.
  const order: string[] = [];
  const waiting = new Map<string, () => void>();
  const nextToken = (label: string) => new Promise<void>((r) => waiting.set(label, r));
  const tracked = (label: string, req: Partial<EngineRequest>, onFirst?: (id: number) => void) =>
    run(busy, req, onFirst, () => {
      order.push(label);
      waiting.get(label)?.();
      waiting.delete(label);
    });
  // Three requests that could run to the end of the context start first; x is submitted once each
  // of them is generating, and four short ones are submitted once x is generating.
  const long = [0, 1, 2].map((i) => {
    let started!: (id: number) => void;
    const id = new Promise<number>((r) => (started = r));
    return {
      id,
      done: tracked(
        `long${i}`,
        { prompt: [10 + i, 20, 30 + i], maxTokens: N_CTX - 3, temperature: 0.8, seed: i },
        started,
      ),
    };
  });
  const longIds = await Promise.all(long.map((l) => l.id));
  const late: Promise<Result>[] = [];
  const inBatch = await tracked('x', x, () => {
    for (let i = 0; i < 4; i++)
      late.push(
        tracked(`late${i}`, {
          prompt: Array.from({ length: 10 + i }, (_, k) => k + i),
          maxTokens: 12,
          temperature: 1,
          seed: 100 + i,
        }),
      );
  });
  await Promise.all(late);
  // Cancel only once each long one has emitted a token after x ended: the events of x's last step
  // may come in any order, and a cancel sent at once could land before the next step.
  await Promise.all([0, 1, 2].map((i) => nextToken(`long${i}`)));
  longIds.forEach((id) => busy.cancel(id));
  const longs = await Promise.all(long.map((l) => l.done));
  // The overlap really happened: the long ones emitted tokens before, during and after x, and
  // the late ones emitted theirs while x was generating.
  const first = order.indexOf('x'),
    last = order.lastIndexOf('x');
  const during = new Set(order.slice(first, last));
  for (let i = 0; i < 3; i++) {
    assert.ok(
      order.indexOf(`long${i}`) < first && order.lastIndexOf(`long${i}`) > last,
      `long${i} generated all through x`,
    );
    assert.ok(during.has(`long${i}`));
    assert.equal(longs[i].done.finishReason, 'cancelled');
  }
  for (let i = 0; i < 4; i++) assert.ok(during.has(`late${i}`), `late${i} generated while x did`);
  assert.equal(inBatch.tokens.length, 300);
  assert.deepEqual(ids(inBatch), ids(alone));
  assert.deepEqual(inBatch.tokens, alone.tokens, 'log-probs and top log-probs are bit-identical');
  assert.equal(alone.tokens[0].topLogprobs!.length, 3);
  // Each row is computed by one thread with the same code, so the thread count does not matter
  // either.
  assert.deepEqual((await run(await startEngine(2, 'fp32', 1), x)).tokens, alone.tokens);
  const other = await run(busy, { ...x, seed: 43 });
  assert.notDeepEqual(ids(other), ids(alone), 'another seed samples differently');
  const again = await run(busy, x);
  assert.deepEqual(again.tokens, alone.tokens);
});

test('sampling filters: top_k 1 is greedy, temperature 0 ignores the seed', async () => {
  const e = await startEngine(4);
  const greedy = ids(await run(e, { maxTokens: 12 }));
  assert.deepEqual(
    ids(await run(e, { maxTokens: 12, temperature: 1.5, topK: 1, seed: 9 })),
    greedy,
  );
  assert.deepEqual(ids(await run(e, { maxTokens: 12, temperature: 0, seed: 123 })), greedy);
  // A tiny nucleus keeps only the most likely token too.
  assert.deepEqual(
    ids(await run(e, { maxTokens: 12, temperature: 1, topP: 1e-6, seed: 5 })),
    greedy,
  );
});

test('stop token ids end with finish stop; the stop token is counted but not emitted', async () => {
  const e = await startEngine(2);
  const greedy = ids(await run(e, { maxTokens: 16 }));
  // first new token from index 2
  const stopAt = greedy.findIndex((t, i) => i >= 2 && greedy.indexOf(t) === i);
  const r = await run(e, { maxTokens: 16, stopTokenIds: [greedy[stopAt]] });
  assert.deepEqual(ids(r), greedy.slice(0, stopAt));
  assert.deepEqual(r.done, {
    finishReason: 'stop',
    stopToken: greedy[stopAt],
    promptTokens: 3,
    completionTokens: stopAt + 1,
  });
});

test('cancel ends a running request; the context limit ends with length', async () => {
  const e = await startEngine(2);
  // 1000 tokens take far longer than a cancel takes to reach the engine.
  const r = await run(e, { maxTokens: 1000, temperature: 1, seed: 1 }, (id) => e.cancel(id));
  assert.deepEqual(r.done, {
    finishReason: 'cancelled',
    stopToken: null,
    promptTokens: 3,
    completionTokens: r.tokens.length,
  });
  assert.ok(
    r.tokens.length >= 1 && r.tokens.length < 1000,
    `cancelled after ${r.tokens.length} tokens`,
  );
  const long = await run(e, {
    prompt: Array.from({ length: N_CTX - 4 }, (_, i) => i % 272),
    maxTokens: 20,
  });
  assert.equal(long.tokens.length, 4, 'prompt + completion fill the context');
  assert.deepEqual(long.done, {
    finishReason: 'length',
    stopToken: null,
    promptTokens: N_CTX - 4,
    completionTokens: 4,
  });
});

test('continuous batching: more requests than slots all finish with their own length', async () => {
  const e = await startEngine(2);
  const lens = [3, 9, 1, 14, 6, 2, 11];
  const rs = await Promise.all(
    lens.map((n, i) =>
      run(e, { prompt: [i + 1, 2 * i + 3], maxTokens: n, temperature: 1, seed: i }),
    ),
  );
  rs.forEach((r, i) => {
    assert.equal(r.tokens.length, lens[i]);
    assert.equal(r.done.completionTokens, lens[i]);
  });
  // Each equals the same request run alone afterwards.
  for (const i of [1, 3])
    assert.deepEqual(
      ids(
        await run(e, { prompt: [i + 1, 2 * i + 3], maxTokens: lens[i], temperature: 1, seed: i }),
      ),
      ids(rs[i]),
    );
});

test('bad requests get an error naming the field and the engine keeps serving', async () => {
  const e = await startEngine(2);
  const bad: [Partial<EngineRequest>, RegExp][] = [
    [{ prompt: [1, 999] }, /prompt\[1\] = 999 is not a token id in \[0, 273\)/],
    [{ prompt: [] }, /prompt must be a non-empty array/],
    [
      { prompt: Array.from({ length: N_CTX }, () => 1) },
      new RegExp(`prompt has ${N_CTX} tokens; the context holds ${N_CTX}`),
    ],
    [{ temperature: -1 }, /temperature must be a finite number >= 0/],
    [{ topP: 0 }, /top_p must be in \(0, 1\]/],
    [{ maxTokens: 0 }, /max_tokens must be >= 1/],
    [{ topK: -2 }, /top_k must be >= 0/],
    [{ stopTokenIds: [5000] }, /stop_token_ids\[0\] = 5000/],
  ];
  for (const [req, msg] of bad) {
    await assert.rejects(
      run(e, req),
      (err: Error) =>
        err instanceof EngineError && err.kind === 'bad_request' && msg.test(err.message),
      String(msg),
    );
  }
  assert.equal((await run(e, { maxTokens: 3 })).tokens.length, 3);
});

test('bf16 (AMX): batch-independent like fp32, and close to transformers fp32', async (t) => {
  let alone: EngineProcess;
  try {
    alone = await startEngine(1, 'bf16');
  } catch (err) {
    if (/bf16_unavailable|needs AMX/.test((err as Error).message))
      return t.skip(`no AMX here: ${(err as Error).message}`);
    throw err;
  }
  assert.equal(alone.info!.dtype, 'bf16');
  const x: Partial<EngineRequest> = {
    prompt: [9, 8, 7],
    maxTokens: 25,
    temperature: 0.9,
    topP: 0.95,
    seed: 5,
    logprobs: true,
  };
  const single = await run(alone, x);
  const busy = await startEngine(6, 'bf16');
  const others = [0, 1, 2, 3].map((i) =>
    run(busy, {
      prompt: Array.from({ length: 5 + 7 * i }, (_, k) => (k * 11 + i) % 272),
      maxTokens: 30,
      temperature: 1,
      seed: i,
    }),
  );
  const inBatch = await run(busy, x);
  await Promise.all(others);
  assert.deepEqual(inBatch.tokens, single.tokens);
  // bf16 products move log-probs by about 1e-2 on this model; the greedy choices stay put.
  const ref = greedyReference();
  const got = await Promise.all(
    PROMPTS.map((prompt) => run(busy, { prompt, maxTokens: 20, logprobs: true })),
  );
  for (let i = 0; i < PROMPTS.length; i++) {
    assert.deepEqual(ids(got[i]).slice(0, 5), ref[i].tokens.slice(0, 5), `prompt ${i}`);
    got[i].tokens
      .slice(0, 5)
      .forEach((tk, j) =>
        assert.ok(Math.abs(tk.logprob! - ref[i].logprobs[j]) < 0.1, `prompt ${i} token ${j}`),
      );
  }
});

test('a missing model fails start with the engine error message', async () => {
  const e = new EngineProcess({ modelDir: join(dir, 'nowhere'), enginePath: ENGINE });
  await assert.rejects(e.start(), /engine exited \(code 2\): .*nowhere/);
});
