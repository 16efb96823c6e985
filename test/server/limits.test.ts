// The embedded server under hostile requests: caps on sequences per request (400) and in the
// queue (429) naming the limit, huge stop lists and deeply nested JSON as OpenAI-style 400s, a
// huge prompt refused without holding up /health, chat-template errors as 400, an engine that
// never becomes ready failing start-up, a warning for a non-loopback host, no paths in answers,
// and idle keep-alive connections kept past Node's 5 s default (clients close them first).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from 'node:net';
import { once } from 'node:events';
import { startServer, type RunningServer } from '../../server/index.ts';
import { writeTinyTokenizer } from '../helpers/tiny-tokenizer.ts';

const ENGINE = join(import.meta.dirname, '..', '..', 'engine', 'build', 'opsr-engine');
const root = await mkdtemp(join(tmpdir(), 'opsr-server-limits-'));
const model = join(root, 'model');
let s: RunningServer;
const logged: string[] = [];

before(async () => {
  const vocab = await writeTinyTokenizer(model);
  await writeFile(
    join(root, 'gpt2.json'),
    JSON.stringify({ n_embd: 16, n_layer: 1, n_head: 2, n_positions: 64, vocab_size: vocab }),
  );
  execFileSync(
    ENGINE,
    ['init', '--config', join(root, 'gpt2.json'), '--out', model, '--seed', '1'],
    { stdio: 'pipe' },
  );
  // A template that refuses roles that do not alternate, as many real ones do.
  const cfgFile = join(model, 'tokenizer_config.json');
  const cfg = JSON.parse(await readFile(cfgFile, 'utf8')) as Record<string, unknown>;
  cfg.chat_template =
    "{% for m in messages %}{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ " +
    "raise_exception('Conversation roles must alternate " +
    "user/assistant/user/assistant/...') }}{% endif %}<|{{ m['role'] }}|>{{ " +
    "m['content'] }}\n{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif " +
    '%}';
  await writeFile(cfgFile, JSON.stringify(cfg));
  s = await startServer({
    modelDir: model,
    servedModelName: 'm',
    enginePath: ENGINE,
    threads: 1,
    maxSequencesPerRequest: 8,
    maxQueuedSequences: 6,
    log: (l) => logged.push(l),
  });
});
after(async () => {
  await s?.close();
  await rm(root, { recursive: true, force: true });
});

const post = (path: string, body: unknown) =>
  fetch(s.url + path, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
async function error(
  res: Response,
  status: number,
): Promise<{ message: string; type: string; param: string | null; code: string | null }> {
  assert.equal(res.status, status, await res.clone().text());
  const body = (await res.json()) as {
    error: { message: string; type: string; param: string | null; code: string | null };
  };
  assert.deepEqual(Object.keys(body.error).sort(), ['code', 'message', 'param', 'type']);
  return body.error;
}

test('sequences per request and in the queue are capped, the limit named', async () => {
  const e = await error(
    await post('/completions', { model: 'm', prompt: ['a', 'b', 'c'], n: 3, max_tokens: 2 }),
    400,
  );
  assert.match(
    e.message,
    /asks for 9 sequences \(prompts x n\); the server takes at most 8 per request/,
  );
  assert.equal(e.code, 'too_many_sequences');
  const q = await error(
    await post('/completions', { model: 'm', prompt: ['a', 'b', 'c', 'd'], n: 2, max_tokens: 2 }),
    429,
  );
  assert.match(q.message, /would exceed its queue of 6; retry later/);
  assert.equal(q.type, 'rate_limit_error');
  // Within the caps it answers.
  const ok = await post('/completions', { model: 'm', prompt: ['a', 'b'], n: 3, max_tokens: 2 });
  assert.equal(ok.status, 200);
  assert.equal(((await ok.json()) as { choices: unknown[] }).choices.length, 6);
});

test('huge stop lists and deeply nested JSON are 400s, streamed or not', async () => {
  for (const stream of [false, true]) {
    const e = await error(
      await post('/completions', {
        model: 'm',
        prompt: 'a',
        stream,
        stop: Array.from({ length: 10_000 }, (_, i) => `s${i}`),
      }),
      400,
    );
    assert.match(e.message, /stop holds 10000 strings; at most 64 are allowed/);
    assert.equal(e.param, 'stop');
    const long = await error(
      await post('/chat/completions', {
        model: 'm',
        messages: [{ role: 'user', content: 'a' }],
        stream,
        stop: ['x'.repeat(5000)],
      }),
      400,
    );
    assert.match(long.message, /stop\[0\] has 5000 characters/);
  }
  const deep = '['.repeat(100_000) + ']'.repeat(100_000);
  for (const body of [
    `{"model":"m","prompt":"a","temperature":${deep}}`,
    `{"model":"m","prompt":${deep}}`,
    `{"model":"m","prompt":"a","user":${deep}}`,
  ]) {
    const e = await error(await post('/completions', body), 400);
    assert.match(e.message, /nested deeper than 32 levels/);
  }
  const odd = await error(
    await post('/completions', {
      model: { a: { b: { c: { d: 'x'.repeat(100_000) } } } },
      prompt: 'a',
    }),
    400,
  );
  assert.ok(odd.message.length < 300, 'the echoed value is bounded');
});

test('a huge prompt is refused without holding up /health', async () => {
  const base = s.url.replace(/\/v1$/, '');
  const huge = post('/completions', {
    model: 'm',
    prompt: 'word '.repeat(3_000_000),
    max_tokens: 1,
  });
  const t0 = Date.now();
  const health = await fetch(base + '/health');
  const healthMs = Date.now() - t0;
  assert.equal(health.status, 200);
  const e = await error(await huge, 400);
  assert.equal(e.code, 'context_length_exceeded');
  assert.match(
    e.message,
    /maximum context length is 64 tokens; the prompt has 15000000 characters/,
  );
  assert.ok(healthMs < 2000, `/health took ${healthMs} ms`);
  const chat = await error(
    await post('/chat/completions', {
      model: 'm',
      messages: [{ role: 'user', content: 'x'.repeat(2_000_000) }],
    }),
    400,
  );
  assert.equal(chat.code, 'context_length_exceeded');
});

test('a chat template that refuses the messages is a 400; answers carry no paths', async () => {
  const e = await error(
    await post('/chat/completions', {
      model: 'm',
      messages: [
        { role: 'user', content: 'a' },
        { role: 'user', content: 'b' },
      ],
    }),
    400,
  );
  assert.match(e.message, /chat template of m refuses these messages: .*roles must alternate/);
  assert.equal(e.code, 'chat_template_error');
  const tok = await fetch(s.url.replace(/\/v1$/, '') + '/tokenize', {
    method: 'POST',
    body: JSON.stringify({ model: 'm', messages: [{ role: 'assistant', content: 'x' }] }),
  });
  assert.equal((await error(tok, 400)).code, 'chat_template_error');
  const models = await (await fetch(s.url + '/models')).text();
  assert.ok(!models.includes(root), `/v1/models shows a path: ${models}`);
});

test('engine never ready fails start-up after the timeout; non-loopback host warns', async () => {
  const fake = join(root, 'silent-engine.sh');
  await writeFile(fake, '#!/bin/sh\nexec sleep 60\n');
  await chmod(fake, 0o755);
  const t0 = Date.now();
  await assert.rejects(
    startServer({ modelDir: model, enginePath: fake, readyTimeoutMs: 1500, log: () => {} }),
    /the engine did not become ready within 1\.5 s/,
  );
  assert.ok(Date.now() - t0 < 10_000);
  const lines: string[] = [];
  const open = await startServer({
    modelDir: model,
    enginePath: ENGINE,
    threads: 1,
    host: '0.0.0.0',
    log: (l) => lines.push(l),
  });
  await open.close();
  assert.ok(
    lines.some((l) =>
      /warning: listening on 0\.0\.0\.0 makes the server reachable from other machines/.test(l),
    ),
    lines.join('\n'),
  );
  assert.ok(!logged.some((l) => /warning: listening/.test(l)), 'no warning on 127.0.0.1');
});

test('idle keep-alive connection stays open past 5 s; a client reusing it is served', async () => {
  const sock = connect(s.port, '127.0.0.1');
  await once(sock, 'connect');
  let got = '';
  let closed = false;
  sock.on('data', (d: Buffer) => (got += d.toString()));
  sock.on('close', () => (closed = true));
  const health = 'GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n';
  const answered = async (n: number) => {
    while ((got.match(/HTTP\/1\.1 200/g) ?? []).length < n && !closed)
      await new Promise((r) => setTimeout(r, 20));
  };
  sock.write(health);
  await answered(1);
  await new Promise((r) => setTimeout(r, 6000)); // Node's default closes it at 5 s
  assert.equal(closed, false, 'the server closed the idle connection');
  sock.write(health);
  await answered(2);
  assert.equal((got.match(/HTTP\/1\.1 200/g) ?? []).length, 2, got);
  sock.destroy();
});
