// The embedded OpenAI-compatible server through the unmodified `openai` client and raw HTTP:
// completions, chat, n > 1, seeds, stop strings, streaming, concurrency, errors, engine crash.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { cp, mkdtemp, rename, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import { startServer, type RunningServer } from '../../server/index.ts';
import { loadTokenizer, type LoadedTokenizer } from '../../lib/tokenizer.ts';
import { makeTinyModel, ENGINE } from '../helpers/tiny-gpt2.ts';

let dir: string;
let model: string;
let server: RunningServer;
let client: OpenAI;
let tok: LoadedTokenizer;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'opsr-srv-'));
  model = join(dir, 'policy');
  await makeTinyModel(model, { nPositions: 128, nEmbd: 48, nHead: 4 });
  tok = await loadTokenizer(model);
  server = await startServer({
    modelDir: model,
    enginePath: ENGINE,
    threads: 2,
    maxBatch: 4,
    log: () => {},
  });
  client = new OpenAI({ baseURL: server.url, apiKey: 'EMPTY', maxRetries: 0 });
});
after(async () => {
  await server?.close();
  await rm(dir, { recursive: true, force: true });
});

const post = (path: string, body: unknown, raw = false) =>
  fetch(server.url.replace(/\/v1$/, '') + path, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: raw ? (body as string) : JSON.stringify(body),
  });

const complete = (
  extra: Partial<OpenAI.CompletionCreateParamsNonStreaming> & Record<string, unknown> = {},
) =>
  client.completions.create({
    model: 'policy',
    prompt: 'the answer is',
    max_tokens: 24,
    temperature: 1,
    seed: 7,
    ...extra,
  } as OpenAI.CompletionCreateParamsNonStreaming);

test('models, health and tokenize', async () => {
  const models = await client.models.list();
  assert.deepEqual(
    models.data.map((m) => m.id),
    ['policy'],
  );
  assert.equal((models.data[0] as unknown as { max_model_len: number }).max_model_len, 128);
  const health = await fetch(server.url.replace(/\/v1$/, '') + '/health');
  assert.equal(health.status, 200);
  const t = await (await post('/tokenize', { prompt: 'the water' })).json();
  assert.deepEqual(t, {
    tokens: tok.encode('the water'),
    count: tok.encode('the water').length,
    max_model_len: 128,
  });
  const d = await (await post('/detokenize', { tokens: t.tokens })).json();
  assert.equal(d.prompt, 'the water');
});

test('completions: schema, usage, seed determinism, n > 1, prompt lists', async () => {
  const a = await complete();
  assert.match(a.id, /^cmpl-/);
  assert.equal(a.object, 'text_completion');
  assert.equal(a.model, 'policy');
  assert.equal(a.choices.length, 1);
  const c = a.choices[0];
  assert.ok(['stop', 'length'].includes(c.finish_reason));
  const ids = tok.encode(c.text);
  assert.ok(a.usage!.completion_tokens >= 1 && a.usage!.completion_tokens <= 24);
  assert.equal(a.usage!.prompt_tokens, tok.encode('the answer is').length);
  assert.equal(a.usage!.total_tokens, a.usage!.prompt_tokens + a.usage!.completion_tokens);
  assert.ok(ids.length > 0);
  const b = await complete();
  assert.equal(b.choices[0].text, c.text, 'same seed, same text');
  const other = await complete({ seed: 8 });
  assert.notEqual(other.choices[0].text, c.text);

  const many = await complete({ n: 3, max_tokens: 10, stop: undefined });
  assert.equal(many.choices.length, 3);
  assert.deepEqual(
    many.choices.map((x) => x.index),
    [0, 1, 2],
  );
  assert.equal(
    many.choices[0].text,
    (await complete({ max_tokens: 10 })).choices[0].text,
    'choice 0 keeps the seed',
  );
  assert.equal(new Set(many.choices.map((x) => x.text)).size, 3, 'n answers differ');
  assert.equal(many.usage!.prompt_tokens, tok.encode('the answer is').length);

  const list = await complete({ prompt: ['the answer is', 'in the water'], n: 2, max_tokens: 6 });
  assert.equal(list.choices.length, 4);
  assert.equal(list.choices[0].text, (await complete({ max_tokens: 6 })).choices[0].text);
  assert.equal(
    list.choices[2].text,
    (await complete({ prompt: 'in the water', max_tokens: 6 })).choices[0].text,
  );
  assert.equal(
    list.usage!.prompt_tokens,
    tok.encode('the answer is').length + tok.encode('in the water').length,
  );
});

test('greedy with max_tokens ends with length and logprobs have the OpenAI shape', async () => {
  const r = await complete({
    temperature: 0,
    max_tokens: 12,
    logprobs: 2,
    ignore_eos: true,
  } as never);
  const c = r.choices[0];
  assert.equal(c.finish_reason, 'length');
  assert.equal(r.usage!.completion_tokens, 12);
  const lp = c.logprobs!;
  assert.equal(lp.tokens!.length, 12);
  assert.equal(lp.tokens!.join(''), c.text);
  assert.equal(lp.text_offset![0], 0);
  lp.token_logprobs!.forEach((x, i) => {
    assert.ok(x! <= 0);
    // Keys are token texts: distinct byte tokens may share one text, so only the size is checked
    // here.
    const top = Object.values(lp.top_logprobs![i]);
    assert.ok(top.length >= 1 && top.length <= 2);
  });
  // Chat logprobs list alternatives by token: greedy's token is the most likely one.
  const chat = await client.chat.completions.create({
    model: 'policy',
    messages: [{ role: 'user', content: 'hi' }],
    max_tokens: 8,
    temperature: 0,
    logprobs: true,
    top_logprobs: 3,
  });
  const content = chat.choices[0].logprobs!.content!;
  assert.equal(content.length, chat.usage!.completion_tokens);
  for (const t of content) {
    assert.equal(t.top_logprobs.length, 3);
    assert.ok(
      Math.abs(t.top_logprobs[0].logprob - t.logprob) < 1e-6,
      'greedy picks the most likely token',
    );
    assert.ok(
      t.top_logprobs[0].logprob >= t.top_logprobs[1].logprob &&
        t.top_logprobs[1].logprob >= t.top_logprobs[2].logprob,
    );
  }
  // No seed given: a random one, and the request still works.
  assert.equal(
    (await client.completions.create({ model: 'policy', prompt: 'x', max_tokens: 2 })).choices
      .length,
    1,
  );
});

test('stop strings end the text before the stop, with finish_reason stop', async () => {
  const full = (await complete({ temperature: 0, max_tokens: 40, ignore_eos: true } as never))
    .choices[0].text;
  const stop = full.slice(Math.floor(full.length / 2), Math.floor(full.length / 2) + 2);
  assert.equal(stop.length, 2);
  const r = await complete({
    temperature: 0,
    max_tokens: 40,
    ignore_eos: true,
    stop: [stop, 'never-there'],
  } as never);
  const c = r.choices[0] as OpenAI.CompletionChoice & { stop_reason: string };
  assert.equal(c.text, full.slice(0, full.indexOf(stop)));
  assert.equal(c.finish_reason, 'stop');
  assert.equal(c.stop_reason, stop);
  assert.ok(r.usage!.completion_tokens < 40);
  const inc = await complete({
    temperature: 0,
    max_tokens: 40,
    ignore_eos: true,
    stop,
    include_stop_str_in_output: true,
  } as never);
  assert.equal(inc.choices[0].text, full.slice(0, full.indexOf(stop) + stop.length));
  // Streaming holds back text that could be the start of a stop string: no stop text leaks out.
  const stream = await client.completions.create({
    model: 'policy',
    prompt: 'the answer is',
    max_tokens: 40,
    temperature: 0,
    ignore_eos: true,
    stop,
    stream: true,
  } as OpenAI.CompletionCreateParamsStreaming);
  let streamed = '';
  let finish: string | null = null;
  for await (const chunk of stream) {
    for (const ch of chunk.choices) {
      streamed += ch.text;
      finish = ch.finish_reason ?? finish;
    }
  }
  assert.equal(streamed, c.text);
  assert.equal(finish, 'stop');
});

test('chat completions render the chat template; streamed deltas add up to same text', async () => {
  const messages = [{ role: 'user' as const, content: 'What is in the water?' }];
  const r = await client.chat.completions.create({
    model: 'policy',
    messages,
    max_tokens: 20,
    seed: 3,
    temperature: 0.9,
  });
  assert.match(r.id, /^chatcmpl-/);
  assert.equal(r.object, 'chat.completion');
  assert.equal(r.choices[0].message.role, 'assistant');
  const rendered = tok.applyChatTemplate(messages, { addGenerationPrompt: true });
  assert.equal(r.usage!.prompt_tokens, tok.encode(rendered, { addSpecialTokens: false }).length);
  const viaCompletions = await complete({
    prompt: rendered,
    max_tokens: 20,
    seed: 3,
    temperature: 0.9,
  });
  assert.equal(
    r.choices[0].message.content,
    viaCompletions.choices[0].text,
    'chat = completions on the rendered template',
  );

  const stream = await client.chat.completions.create({
    model: 'policy',
    messages,
    max_tokens: 20,
    seed: 3,
    temperature: 0.9,
    stream: true,
    stream_options: { include_usage: true },
  });
  let text = '';
  let finish: string | null = null;
  let usage: OpenAI.CompletionUsage | undefined;
  for await (const chunk of stream) {
    if (chunk.usage) usage = chunk.usage;
    for (const ch of chunk.choices) {
      text += ch.delta.content ?? '';
      finish = ch.finish_reason ?? finish;
    }
  }
  assert.equal(text, r.choices[0].message.content);
  assert.equal(finish, r.choices[0].finish_reason);
  assert.deepEqual(usage, r.usage);

  const s2 = await client.completions.create({
    model: 'policy',
    prompt: 'the answer is',
    max_tokens: 24,
    temperature: 1,
    seed: 7,
    stream: true,
  });
  let t2 = '';
  for await (const chunk of s2) t2 += chunk.choices.map((c) => c.text).join('');
  assert.equal(t2, (await complete()).choices[0].text);
});

test('continue_final_message continues the final assistant message; misuse gets 400', async () => {
  const user = { role: 'user' as const, content: 'What is in the water?' };
  // A trailing space: the cut keeps it, as the template rendered it.
  const prefix = 'Fish and weeds.\nScore: ';
  const messages = [user, { role: 'assistant' as const, content: prefix }];
  const expected = tok.encode(
    tok.applyChatTemplate([user], { addGenerationPrompt: true }) + prefix,
    { addSpecialTokens: false },
  );
  const body = { model: 'policy', messages, continue_final_message: true };
  const t = await (await post('/tokenize', { ...body, add_generation_prompt: false })).json();
  assert.deepEqual(t.tokens, expected);
  const sampling = { max_tokens: 6, seed: 5, temperature: 0.9 };
  const r = await post('/v1/chat/completions', {
    ...body,
    ...sampling,
    add_generation_prompt: false,
  });
  assert.equal(r.status, 200);
  const chat = await r.json();
  assert.equal(chat.usage.prompt_tokens, expected.length);
  const viaIds = await complete({ prompt: expected, ...sampling });
  assert.equal(chat.choices[0].message.content, viaIds.choices[0].text);

  const cases: [Record<string, unknown>, RegExp][] = [
    [body, /needs add_generation_prompt: false/], // absent means true
    [{ ...body, add_generation_prompt: true }, /needs add_generation_prompt: false/],
    [
      { ...body, messages: [user], add_generation_prompt: false },
      /last message to be the assistant's; got role "user"/,
    ],
    [{ ...body, continue_final_message: 'yes' }, /must be true or false; got "yes"/],
  ];
  for (const [b, msg] of cases) {
    for (const path of ['/v1/chat/completions', '/tokenize']) {
      const res = await post(path, b);
      assert.equal(res.status, 400, `${path} ${msg}`);
      const err = (await res.json()).error;
      assert.equal(err.type, 'invalid_request_error');
      assert.equal(err.param, 'continue_final_message');
      assert.match(err.message, msg);
    }
  }
});

test('concurrent requests beyond the batch all succeed with their own seeded answers', async () => {
  const prompts = Array.from({ length: 12 }, (_, i) => `prompt number ${i} is in the`);
  const together = await Promise.all(
    prompts.map((prompt, i) => complete({ prompt, seed: i, max_tokens: 16 + (i % 5) })),
  );
  for (const i of [0, 5, 11]) {
    const alone = await complete({ prompt: prompts[i], seed: i, max_tokens: 16 + (i % 5) });
    assert.equal(together[i].choices[0].text, alone.choices[0].text);
  }
  together.forEach((r) => assert.ok(r.usage!.completion_tokens >= 1));
});

test('bad requests get 400 with an OpenAI error body and the server keeps serving', async () => {
  const cases: [unknown, string | null, RegExp, boolean?][] = [
    [{ model: 'nope', prompt: 'x' }, 'model', /model `nope` does not exist/],
    [
      { model: 'policy', prompt: 'x', max_tokens: 500 },
      'max_tokens',
      /maximum context length is 128 tokens/,
    ],
    ['{"model": "policy", "prompt": ', null, /malformed JSON/, true],
    [
      { model: 'policy', prompt: 'x', temperature: -0.5 },
      'temperature',
      /temperature must be a number >= 0/,
    ],
    [{ model: 'policy', prompt: 'x', n: 0 }, 'n', /n must be an integer in \[1, 128\]/],
    [{ model: 'policy' }, 'prompt', /prompt is required/],
    [{ model: 'policy', prompt: 'x', top_p: 1.5 }, 'top_p', /top_p must be a number in \(0, 1\]/],
    [{ model: 'policy', prompt: 'x', presence_penalty: 0.5 }, 'presence_penalty', /not supported/],
    [{ model: 'policy', prompt: [1, 5000] }, 'prompt', /token id 5000/],
  ];
  for (const [body, param, msg, raw] of cases) {
    const res = await post('/v1/completions', body, raw);
    assert.equal(res.status, 400, String(msg));
    const err = (await res.json()).error;
    assert.equal(err.type, 'invalid_request_error');
    assert.equal(err.param, param);
    assert.match(err.message, msg);
  }
  const chat = await fetch(server.url + '/chat/completions', {
    method: 'POST',
    body: JSON.stringify({ model: 'policy' }),
  });
  assert.equal(chat.status, 400);
  assert.equal((await chat.json()).error.param, 'messages');
  await assert.rejects(
    client.completions.create({ model: 'policy', prompt: 'x', n: 0 }),
    (e: Error) => e instanceof OpenAI.BadRequestError,
  );
  assert.equal((await fetch(server.url + '/nothing')).status, 404);
  assert.equal((await complete({ max_tokens: 3 })).choices.length, 1);
});

test('engine crash: /health 503, restart; in-flight with nothing streamed retried', async () => {
  // Its own server on a model with a long context: 900-token answers keep the engine busy a while.
  const longModel = join(dir, 'long');
  await makeTinyModel(longModel, { nPositions: 1024, nEmbd: 64, nLayer: 4, nHead: 4 });
  const logs: string[] = [];
  const s = await startServer({
    modelDir: longModel,
    enginePath: ENGINE,
    threads: 2,
    maxBatch: 4,
    log: (l) => logs.push(l),
  });
  try {
    const base = s.url.replace(/\/v1$/, '');
    const body = {
      model: 'long',
      prompt: 'the answer is',
      max_tokens: 900,
      temperature: 1,
      seed: 99,
      ignore_eos: true,
    };
    const expected = await (await post2(s.url, body)).json();
    assert.equal(expected.usage.completion_tokens, 900);
    const pid = s.enginePid()!;
    const bytesRead = () =>
      Number(/^rchar: (\d+)$/m.exec(readFileSync(`/proc/${pid}/io`, 'utf8'))![1]);

    // A streams: once its first text arrives the engine is generating it.
    const a = await post2(s.url, { ...body, seed: 5, stream: true });
    const events = sseEvents(a);
    for (;;) {
      const ev = await events.next();
      assert.ok(!ev.done && ev.value !== '[DONE]', 'A streams text');
      if (JSON.parse(ev.value).choices[0].text) break;
    }
    // B (not streamed, the same length) is sent after A is running and killed once the engine has
    // read it: B is at most as far along as A, so B is unfinished if A is.
    const before = bytesRead();
    const b = post2(s.url, body).then((r) => r.json());
    while (bytesRead() === before) await new Promise((r) => setTimeout(r, 1));
    process.kill(pid, 'SIGKILL');

    let saw503 = false;
    for (let i = 0; i < 200; i++) {
      const h = await fetch(base + '/health');
      if (h.status === 503) {
        saw503 = true;
        assert.match((await h.json()).error.message, /engine is down/);
      } else if (saw503 && h.status === 200) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.ok(saw503, '/health reported the dead engine');
    assert.equal((await fetch(base + '/health')).status, 200);
    assert.ok(s.enginePid() !== undefined && s.enginePid() !== pid, 'a new engine process');
    assert.ok(logs.some((l) => /engine exited \(SIGKILL\).*restarting the engine/.test(l)));
    assert.ok(logs.includes('opsr serve: engine restarted'));

    // A was unfinished when the engine died (so B was too); its streamed text cannot be taken back,
    // so its stream ends with the error.
    const rest: string[] = [];
    for await (const ev of events) rest.push(ev);
    assert.equal(rest.at(-1), '[DONE]');
    const tail = rest.slice(0, -1).map((e) => JSON.parse(e));
    assert.ok(
      tail.slice(0, -1).every((e) => e.choices[0].finish_reason === null),
      'A never finished',
    );
    assert.deepEqual(tail.at(-1), {
      error: {
        message: tail.at(-1).error.message,
        type: 'service_unavailable_error',
        param: null,
        code: null,
      },
    });
    assert.match(
      tail.at(-1).error.message,
      /^the engine failed while answering; see the server log$/,
    ); // no engine internals
    // B had streamed nothing: it was rerun on the new engine and gives the seeded answer in full.
    const got = await b;
    assert.ok(got.choices, `B was not retried: ${JSON.stringify(got)}`);
    assert.equal(
      got.choices[0].text,
      expected.choices[0].text,
      'the retried request gives the seeded answer',
    );
    assert.equal(got.choices[0].finish_reason, 'length');
    assert.deepEqual(got.usage, expected.usage);
  } finally {
    await s.close();
  }
});

test('while restarts fail, waiting requests get 503; once one succeeds, it serves', async () => {
  const copy = join(dir, 'copy');
  await cp(model, copy, { recursive: true });
  const s = await startServer({
    modelDir: copy,
    enginePath: ENGINE,
    threads: 1,
    maxBatch: 2,
    log: () => {},
  });
  try {
    const base = s.url.replace(/\/v1$/, '');
    await rename(join(copy, 'model.safetensors'), join(copy, 'moved.safetensors'));
    process.kill(s.enginePid()!, 'SIGKILL');
    const res = await post2(s.url, { model: 'copy', prompt: 'the', max_tokens: 3 });
    assert.equal(res.status, 503);
    assert.match((await res.json()).error.message, /restarts failed; see the server log$/);
    assert.equal((await fetch(base + '/health')).status, 503);
    await rename(join(copy, 'moved.safetensors'), join(copy, 'model.safetensors'));
    let up = false;
    for (let i = 0; i < 300 && !up; i++) {
      up = (await fetch(base + '/health')).status === 200;
      if (!up) await new Promise((r) => setTimeout(r, 50));
    }
    assert.ok(up, 'the engine came back');
    const ok = await post2(s.url, {
      model: 'copy',
      prompt: 'the',
      max_tokens: 3,
      ignore_eos: true,
    });
    assert.equal((await ok.json()).usage.completion_tokens, 3);
  } finally {
    await s.close();
  }
});

function post2(url: string, body: unknown) {
  return fetch(url + '/completions', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
}

// The data payloads of a server-sent event stream, one by one.
async function* sseEvents(res: Response): AsyncGenerator<string> {
  const decoder = new TextDecoder();
  let buf = '';
  for await (const chunk of res.body!) {
    buf += decoder.decode(chunk as Uint8Array, { stream: true });
    let k: number;
    while ((k = buf.indexOf('\n\n')) >= 0) {
      const ev = buf.slice(0, k);
      buf = buf.slice(k + 2);
      if (ev.startsWith('data: ')) yield ev.slice(6);
    }
  }
}
