// The embedded OpenAI-compatible server (vLLM's API shapes) on node:http, generating with one
// long-lived `opsr-engine serve` child that it restarts when it dies. Endpoints in server/README.md.
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { randomBytes, randomInt } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import { loadTokenizer } from '../lib/tokenizer.ts';
import { EngineProcess, type EngineDtype, type EngineInfo } from './engine-supervisor.ts';
import {
  runChoice,
  choiceSeed,
  type ChoiceResult,
  type EngineSink,
  type TokenLogprob,
} from './choice.ts';
import {
  ApiError,
  bad,
  MAX_JSON_DEPTH,
  parseMessages,
  parsePrompts,
  parseSampling,
  preview,
  type GenerationDefaults,
  type Message,
  type Sampling,
} from './params.ts';

export interface ServerOptions {
  modelDir: string;
  host?: string;
  port?: number;
  servedModelName?: string;
  threads?: number;
  maxBatch?: number;
  /** 'fp32' (default, exact) or 'bf16' (AMX matrix products; faster, not bit-equal to fp32). */
  dtype?: EngineDtype;
  enginePath?: string;
  /** Logs one line per engine restart (default: stderr). */
  log?: (line: string) => void;
  /** Sequences (prompts x n) one request may ask for (default 256): more is a 400. */
  maxSequencesPerRequest?: number;
  /** Sequences all open requests may hold at once (default 4096): more is a 429. */
  maxQueuedSequences?: number;
  /** Start-up fails when the engine is not ready by then (default 120 s). */
  readyTimeoutMs?: number;
}

export interface RunningServer {
  url: string;
  port: number;
  close(): Promise<void>;
  /** The engine child's pid (undefined while it restarts). */
  enginePid(): number | undefined;
}

const MAX_BODY = 32 << 20;
const RESTART_DELAYS_MS = [100, 500, 1000, 2000, 5000];
// After this many failed restarts in a row, waiting requests fail (503) instead of hanging;
// restarts go on for the requests that come later.
const FAIL_WAITERS_AFTER = 3;

// Keeps the engine process up: requests wait while it restarts.
class Supervisor implements EngineSink {
  private engine: EngineProcess;
  private upWaiters: { resolve: () => void; reject: (e: Error) => void }[] = [];
  private closing = false;
  private restarts = 0;
  lastFailure = '';

  constructor(
    private readonly opts: ServerOptions,
    private readonly log: (l: string) => void,
  ) {
    this.engine = new EngineProcess({
      modelDir: opts.modelDir,
      enginePath: opts.enginePath,
      threads: opts.threads,
      maxBatch: opts.maxBatch,
      dtype: opts.dtype,
      readyTimeoutMs: opts.readyTimeoutMs,
    });
  }

  get up(): boolean {
    return this.engine.running;
  }
  get pid(): number | undefined {
    return this.engine.pid;
  }

  async start(): Promise<EngineInfo> {
    const info = await this.engine.start();
    this.engine.onExit = (reason) => void this.restart(reason);
    return info;
  }

  private async restart(reason: string): Promise<void> {
    this.lastFailure = reason;
    this.log(`opsr serve: ${reason}; restarting the engine`);
    while (!this.closing) {
      const delay = RESTART_DELAYS_MS[Math.min(this.restarts++, RESTART_DELAYS_MS.length - 1)];
      await new Promise((r) => setTimeout(r, delay));
      if (this.closing) return;
      try {
        await this.engine.start();
        this.engine.onExit = (why) => void this.restart(why);
        this.restarts = 0;
        this.log('opsr serve: engine restarted');
        for (const w of this.upWaiters.splice(0)) w.resolve();
        return;
      } catch (err) {
        this.lastFailure = (err as Error).message;
        this.log(`opsr serve: engine restart failed: ${this.lastFailure}`);
        if (this.restarts >= FAIL_WAITERS_AFTER) {
          // The reason goes to the log; responses carry no engine internals or paths.
          const e = new ApiError(
            503,
            `the engine is down and ${this.restarts} restarts failed; see the server log`,
          );
          for (const w of this.upWaiters.splice(0)) w.reject(e);
        }
      }
    }
  }

  async submit(
    req: Parameters<EngineSink['submit']>[0],
    h: Parameters<EngineSink['submit']>[1],
  ): Promise<number> {
    if (!this.engine.running) {
      if (this.closing) throw new ApiError(503, 'the server is shutting down');
      await new Promise<void>((resolve, reject) => this.upWaiters.push({ resolve, reject }));
    }
    return this.engine.generate(req, h);
  }

  cancel(id: number): void {
    this.engine.cancel(id);
  }

  async close(): Promise<void> {
    this.closing = true;
    for (const w of this.upWaiters.splice(0))
      w.reject(new ApiError(503, 'the server is shutting down'));
    await this.engine.stop();
  }
}

async function readGenerationDefaults(modelDir: string): Promise<{ defaults: GenerationDefaults }> {
  let cfg: Record<string, unknown>;
  try {
    cfg = JSON.parse(await readFile(join(modelDir, 'generation_config.json'), 'utf8'));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { defaults: {} };
    throw new Error(`${join(modelDir, 'generation_config.json')}: ${(err as Error).message}`);
  }
  // Only sampling checkpoints carry sampling defaults; greedy ones (do_sample false) do not apply.
  const sampling = cfg.do_sample === true;
  const pick = (k: string) => (sampling && typeof cfg[k] === 'number' ? cfg[k] : undefined);
  const defaults = { temperature: pick('temperature'), topP: pick('top_p'), topK: pick('top_k') };
  return { defaults };
}

export async function startServer(opts: ServerOptions): Promise<RunningServer> {
  const modelDir = resolve(opts.modelDir);
  const name = opts.servedModelName ?? basename(modelDir);
  const log = opts.log ?? ((l: string) => process.stderr.write(l + '\n'));
  const tok = await loadTokenizer(modelDir);
  const gen = await readGenerationDefaults(modelDir);
  const eosIds = tok.stopTokenIds;
  const engine = new Supervisor({ ...opts, modelDir }, log);
  const info = await engine.start();
  const host = opts.host ?? '127.0.0.1';
  if (!/^(127\.\d+\.\d+\.\d+|::1|localhost)$/.test(host)) {
    log(
      `opsr serve: warning: listening on ${host} makes the server reachable from other machines, without authentication`,
    );
  }
  const maxPerRequest = opts.maxSequencesPerRequest ?? 256;
  const maxQueued = opts.maxQueuedSequences ?? 4096;
  let queued = 0; // sequences of the open requests
  // A text longer than this many characters cannot fit the context whatever it tokenizes to:
  // refused without tokenizing it, so a huge prompt does not hold up the other requests.
  let maxTokenChars = 1;
  for (let id = 0; id < info.vocabSize; id++)
    maxTokenChars = Math.max(maxTokenChars, tok.decode([id]).length);
  const maxPromptChars = 2 * info.nCtx * maxTokenChars;
  const tooLong = (param: string, chars: number) =>
    bad(
      `This model's maximum context length is ${info.nCtx} tokens; the ${param} ` +
        `has ${chars} characters, more than that many tokens can hold.`,
      param,
      'context_length_exceeded',
    );
  const admit = (count: number, param: string) => {
    if (count > maxPerRequest) {
      throw bad(
        `this request asks for ${count} sequences (prompts x n); the server takes at most ${maxPerRequest} per request`,
        param,
        'too_many_sequences',
      );
    }
    if (queued + count > maxQueued) {
      throw new ApiError(
        429,
        `the server holds ${queued} sequences; with this request's ${count} it would exceed its queue of ${maxQueued}; retry later`,
        null,
        'queue_full',
        'rate_limit_error',
      );
    }
  };
  const applyTemplate = (messages: Message[], addGenerationPrompt: boolean): string => {
    const chars = messages.reduce((a, m) => a + m.content.length, 0);
    if (chars > maxPromptChars) throw tooLong('messages', chars);
    try {
      return tok.applyChatTemplate(messages, { addGenerationPrompt });
    } catch (err) {
      throw bad(
        `the chat template of ${name} refuses these messages: ${(err as Error).message}`,
        'messages',
        'chat_template_error',
      );
    }
  };
  const created = Math.floor(Date.now() / 1000);
  const openResponses = new Set<ServerResponse>();

  const checkModel = (body: Record<string, unknown>) => {
    if (body.model !== undefined && body.model !== null && body.model !== name) {
      throw new ApiError(
        400,
        `The model \`${typeof body.model === 'string' ? body.model.slice(0, 100) : preview(body.model)}\` does not exist; this server serves "${name}".`,
        'model',
        'model_not_found',
      );
    }
  };

  const encodePrompt = (p: string | number[], param: string, specials: boolean): number[] => {
    if (typeof p === 'string' && p.length > maxPromptChars) throw tooLong(param, p.length);
    if (typeof p !== 'string' && p.length >= info.nCtx) {
      throw bad(
        `This model's maximum context length is ${info.nCtx} tokens; the ${param} has ${p.length} tokens.`,
        param,
        'context_length_exceeded',
      );
    }
    const ids = typeof p === 'string' ? tok.encode(p, { addSpecialTokens: specials }) : p;
    if (ids.length === 0) throw bad(`${param} encodes to no tokens`, param);
    const badId = ids.find((t) => t >= info.vocabSize);
    if (badId !== undefined)
      throw bad(
        `${param} holds token id ${badId}; the vocabulary has ${info.vocabSize} ids`,
        param,
      );
    if (ids.length >= info.nCtx) {
      throw bad(
        `This model's maximum context length is ${info.nCtx} tokens; the ${param} has ${ids.length} tokens, which leaves no room for a completion.`,
        param,
        'context_length_exceeded',
      );
    }
    return ids;
  };

  const budget = (ids: number[], s: Sampling, param: string): number => {
    if (s.maxTokens === null) return info.nCtx - ids.length;
    if (ids.length + s.maxTokens > info.nCtx) {
      throw bad(
        `This model's maximum context length is ${info.nCtx} tokens. However, you requested ${ids.length + s.maxTokens} tokens (${ids.length} in the prompt, ${s.maxTokens} in the completion). Please reduce the prompt or ${param}.`,
        param,
        'context_length_exceeded',
      );
    }
    return s.maxTokens;
  };

  // Runs n choices for each prompt; choice index = prompt index * n + i.
  const runAll = (
    prompts: number[][],
    s: Sampling,
    maxTokens: number[],
    signal: AbortSignal,
    onDelta?: (index: number, text: string, lps: TokenLogprob[]) => void,
    onChoice?: (index: number, r: ChoiceResult) => void,
  ): Promise<ChoiceResult[]> => {
    const seed = s.seed ?? randomInt(0, 2 ** 48 - 1);
    // One failed choice ends the request: the others are cancelled in the engine.
    const group = new AbortController();
    const stop = () => group.abort();
    signal.addEventListener('abort', stop);
    const jobs: Promise<ChoiceResult>[] = [];
    const count = prompts.length * s.n;
    queued += count;
    prompts.forEach((prompt, j) => {
      for (let i = 0; i < s.n; i++) {
        const index = j * s.n + i;
        jobs.push(
          runChoice(engine, tok, {
            prompt,
            sampling: s,
            maxTokens: maxTokens[j],
            seed: choiceSeed(seed, i),
            eosIds,
            signal: group.signal,
            onDelta: onDelta && ((text, lps) => onDelta(index, text, lps)),
          }).then((r) => {
            onChoice?.(index, r);
            return r;
          }),
        );
      }
    });
    return Promise.all(jobs)
      .catch((err) => {
        stop();
        throw err;
      })
      .finally(() => {
        queued -= count;
        signal.removeEventListener('abort', stop);
      });
  };

  const tokenText = (id: number) => tok.decode([id]);
  const usage = (prompts: number[][], results: ChoiceResult[]) => {
    const p = prompts.reduce((a, x) => a + x.length, 0),
      c = results.reduce((a, r) => a + r.completionTokens, 0);
    return { prompt_tokens: p, completion_tokens: c, total_tokens: p + c };
  };

  const completionLogprobs = (lps: TokenLogprob[] | null, offset0: number) => {
    if (!lps) return null;
    let offset = offset0;
    const text_offset: number[] = [];
    const tokens = lps.map((l) => {
      const t = tokenText(l.token);
      text_offset.push(offset);
      offset += t.length;
      return t;
    });
    return {
      tokens,
      token_logprobs: lps.map((l) => l.logprob),
      text_offset,
      top_logprobs: lps.map((l) =>
        Object.fromEntries(
          (l.top.length ? l.top : [[l.token, l.logprob]]).map(([id, lp]) => [tokenText(id), lp]),
        ),
      ),
    };
  };
  const chatLogprobs = (lps: TokenLogprob[] | null) => {
    if (!lps) return null;
    const entry = (id: number, logprob: number) => {
      const token = tokenText(id);
      return { token, logprob, bytes: [...Buffer.from(token, 'utf8')] };
    };
    return {
      content: lps.map((l) => ({
        ...entry(l.token, l.logprob),
        top_logprobs: l.top.map(([id, lp]) => entry(id, lp)),
      })),
    };
  };

  async function completions(
    body: Record<string, unknown>,
    req: IncomingMessage,
    res: ServerResponse,
    signal: AbortSignal,
  ) {
    checkModel(body);
    const s = parseSampling(body, gen.defaults, false);
    const raw = parsePrompts(body);
    admit(raw.length * s.n, raw.length > 1 ? 'prompt' : 'n');
    const prompts: number[][] = [];
    for (const [i, p] of raw.entries()) {
      if (i > 0) await new Promise((r) => setImmediate(r)); // other requests (and /health) between prompts
      prompts.push(encodePrompt(p, raw.length > 1 ? `prompt[${i}]` : 'prompt', true));
    }
    admit(prompts.length * s.n, 'n'); // the queue may have filled while this tokenized
    const maxTokens = prompts.map((ids) => budget(ids, s, 'max_tokens'));
    const id = `cmpl-${randomBytes(12).toString('hex')}`;
    const head = {
      id,
      object: 'text_completion',
      created: Math.floor(Date.now() / 1000),
      model: name,
    };
    if (s.stream) {
      const sse = openStream(res, log);
      const results = await runAll(
        prompts,
        s,
        maxTokens,
        signal,
        (index, text, lps) =>
          sse.send({
            ...head,
            choices: [
              {
                index,
                text,
                logprobs: completionLogprobs(lps.length ? lps : null, 0),
                finish_reason: null,
                stop_reason: null,
              },
            ],
          }),
        (index, r) =>
          sse.send({
            ...head,
            choices: [
              {
                index,
                text: '',
                logprobs: null,
                finish_reason: r.finishReason,
                stop_reason: r.stopReason,
              },
            ],
          }),
      ).catch((err) => sse.fail(err));
      if (results && wantsUsage(body))
        sse.send({ ...head, choices: [], usage: usage(prompts, results) });
      return sse.end();
    }
    const results = await runAll(prompts, s, maxTokens, signal);
    sendJson(res, 200, {
      ...head,
      choices: results.map((r, index) => ({
        index,
        text: r.text,
        logprobs: completionLogprobs(r.logprobs, 0),
        finish_reason: r.finishReason,
        stop_reason: r.stopReason,
      })),
      usage: usage(prompts, results),
    });
  }

  async function chatCompletions(
    body: Record<string, unknown>,
    req: IncomingMessage,
    res: ServerResponse,
    signal: AbortSignal,
  ) {
    checkModel(body);
    const messages = parseMessages(body);
    const s = parseSampling(body, gen.defaults, true);
    if (!tok.hasChatTemplate)
      throw bad(
        `the model ${name} has no chat_template in tokenizer_config.json; use /v1/completions`,
        'messages',
        'chat_template_missing',
      );
    admit(s.n, 'n');
    const addGenerationPrompt =
      body.add_generation_prompt === undefined ? true : body.add_generation_prompt === true;
    const prompt = encodePrompt(applyTemplate(messages, addGenerationPrompt), 'messages', false);
    const maxTokens = [
      budget(
        prompt,
        s,
        body.max_completion_tokens !== undefined ? 'max_completion_tokens' : 'max_tokens',
      ),
    ];
    const id = `chatcmpl-${randomBytes(12).toString('hex')}`;
    const head = { id, created: Math.floor(Date.now() / 1000), model: name };
    if (s.stream) {
      const sse = openStream(res, log);
      const chunk = (index: number, delta: object, extra: object = {}) =>
        sse.send({
          ...head,
          object: 'chat.completion.chunk',
          choices: [{ index, delta, logprobs: null, finish_reason: null, ...extra }],
        });
      for (let i = 0; i < s.n; i++) chunk(i, { role: 'assistant', content: '' });
      const results = await runAll(
        [prompt],
        s,
        maxTokens,
        signal,
        (index, text, lps) =>
          chunk(index, { content: text }, { logprobs: chatLogprobs(lps.length ? lps : null) }),
        (index, r) =>
          chunk(index, {}, { finish_reason: r.finishReason, stop_reason: r.stopReason }),
      ).catch((err) => sse.fail(err));
      if (results && wantsUsage(body))
        sse.send({
          ...head,
          object: 'chat.completion.chunk',
          choices: [],
          usage: usage([prompt], results),
        });
      return sse.end();
    }
    const results = await runAll([prompt], s, maxTokens, signal);
    sendJson(res, 200, {
      ...head,
      object: 'chat.completion',
      choices: results.map((r, index) => ({
        index,
        message: { role: 'assistant', content: r.text },
        logprobs: chatLogprobs(r.logprobs),
        finish_reason: r.finishReason,
        stop_reason: r.stopReason,
      })),
      usage: usage([prompt], results),
    });
  }

  function tokenize(body: Record<string, unknown>, res: ServerResponse) {
    checkModel(body);
    let tokens: number[];
    if (body.messages !== undefined) {
      if (!tok.hasChatTemplate)
        throw bad(
          `the model ${name} has no chat_template in tokenizer_config.json`,
          'messages',
          'chat_template_missing',
        );
      const text = applyTemplate(parseMessages(body), body.add_generation_prompt !== false);
      tokens = tok.encode(text, { addSpecialTokens: body.add_special_tokens === true });
    } else {
      if (typeof body.prompt !== 'string')
        throw bad(
          'prompt must be a string (or give messages)',
          'prompt',
          'missing_required_parameter',
        );
      if (body.prompt.length > maxPromptChars) throw tooLong('prompt', body.prompt.length);
      tokens = tok.encode(body.prompt, { addSpecialTokens: body.add_special_tokens !== false });
    }
    sendJson(res, 200, { tokens, count: tokens.length, max_model_len: info.nCtx });
  }

  function detokenize(body: Record<string, unknown>, res: ServerResponse) {
    checkModel(body);
    const t = body.tokens;
    if (!Array.isArray(t) || !t.every((x) => Number.isInteger(x) && x >= 0 && x < info.vocabSize)) {
      throw bad(`tokens must be a list of token ids in [0, ${info.vocabSize})`, 'tokens');
    }
    sendJson(res, 200, { prompt: tok.decode(t as number[]) });
  }

  const routes: Record<
    string,
    Record<
      string,
      (
        body: Record<string, unknown>,
        req: IncomingMessage,
        res: ServerResponse,
        signal: AbortSignal,
      ) => unknown
    >
  > = {
    '/v1/completions': { POST: completions },
    '/v1/chat/completions': { POST: chatCompletions },
    '/tokenize': { POST: (b, _q, r) => tokenize(b, r) },
    '/detokenize': { POST: (b, _q, r) => detokenize(b, r) },
  };

  // The handler answers every failure itself; nothing is left to reject.
  const server = createServer(
    (req, res) =>
      void (async () => {
        openResponses.add(res);
        const abort = new AbortController();
        res.on('close', () => {
          openResponses.delete(res);
          if (!res.writableFinished) abort.abort();
        });
        try {
          const path = (req.url ?? '/').split('?')[0];
          if (path === '/health') {
            if (req.method !== 'GET') throw new ApiError(405, 'use GET /health');
            if (engine.up) {
              res.writeHead(200).end();
              return;
            }
            throw new ApiError(503, 'the engine is down; it is being restarted');
          }
          if (path === '/v1/models') {
            if (req.method !== 'GET') throw new ApiError(405, 'use GET /v1/models');
            sendJson(res, 200, {
              object: 'list',
              data: [
                {
                  id: name,
                  object: 'model',
                  created,
                  owned_by: 'opsr',
                  root: name,
                  parent: null,
                  max_model_len: info.nCtx,
                },
              ],
            });
            return;
          }
          const route = routes[path];
          if (!route)
            throw new ApiError(404, `no route ${req.method} ${path}; see server/README.md`);
          const handler = route[req.method ?? ''];
          if (!handler) throw new ApiError(405, `use ${Object.keys(route).join(' or ')} ${path}`);
          const body = await readJsonBody(req);
          await handler(body, req, res, abort.signal);
        } catch (err) {
          if (abort.signal.aborted) return; // the client is gone
          const e = err instanceof ApiError ? err : internalError(err, log);
          if (!res.headersSent) sendJson(res, e.status, e.body());
          else if (!res.writableEnded)
            res.end(`data: ${JSON.stringify(e.body())}\n\ndata: [DONE]\n\n`); // a stream ends with the error
        }
      })(),
  );

  // Node closes a keep-alive connection after 5 s idle by default, racing a client that reuses it
  // at that moment (ECONNRESET); a busy machine left pooled connections idle that long and failed
  // whole evaluations. Clients close first now (undici keeps idle connections 4 s).
  server.keepAliveTimeout = 65_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, opts.host ?? '127.0.0.1', () => resolve());
  }).catch(async (err) => {
    await engine.close();
    throw err;
  });
  const port = (server.address() as { port: number }).port;
  const urlHost = host.includes(':') ? `[${host}]` : host === '0.0.0.0' ? '127.0.0.1' : host;
  return {
    url: `http://${urlHost}:${port}/v1`,
    port,
    async close() {
      const closed = new Promise<void>((r) => server.close(() => r()));
      for (const res of openResponses) res.destroy();
      server.closeAllConnections();
      await engine.close();
      await closed;
    },
    enginePid: () => engine.pid,
  };
}

// An unexpected failure: its detail (paths, engine internals) goes to the log, not the client.
function internalError(err: unknown, log: (l: string) => void): ApiError {
  log(`opsr serve: internal error: ${(err as Error)?.stack ?? String(err)}`);
  return new ApiError(
    500,
    'internal error; see the server log',
    null,
    'internal_error',
    'server_error',
  );
}

function wantsUsage(body: Record<string, unknown>): boolean {
  const o = body.stream_options as { include_usage?: unknown } | undefined;
  return !!o && o.include_usage === true;
}

function sendJson(res: ServerResponse, status: number, value: unknown): void {
  const text = JSON.stringify(value);
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
  });
  res.end(text);
}

// Server-sent events as the OpenAI streaming API writes them, ending with [DONE].
function openStream(res: ServerResponse, log: (l: string) => void) {
  res.writeHead(200, {
    'content-type': 'text/event-stream',
    'cache-control': 'no-cache',
    connection: 'keep-alive',
  });
  return {
    send: (v: unknown) => {
      res.write(`data: ${JSON.stringify(v)}\n\n`);
    },
    fail: (err: unknown) => {
      const e = err instanceof ApiError ? err : internalError(err, log);
      res.write(`data: ${JSON.stringify(e.body())}\n\n`);
      return null;
    },
    end: () => {
      res.end('data: [DONE]\n\n');
    },
  };
}

async function readJsonBody(req: IncomingMessage): Promise<Record<string, unknown>> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY) throw new ApiError(413, `request body exceeds ${MAX_BODY} bytes`);
    chunks.push(chunk as Buffer);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch (err) {
    throw bad(`malformed JSON body: ${(err as Error).message}`, null, 'invalid_json');
  }
  if (!body || typeof body !== 'object' || Array.isArray(body))
    throw bad('the JSON body must be an object', null, 'invalid_json');
  // Deeply nested values would overflow the stack of whatever walks them later.
  const stack: [unknown, number][] = [[body, 1]];
  while (stack.length) {
    const [v, depth] = stack.pop()!;
    if (!v || typeof v !== 'object') continue;
    if (depth > MAX_JSON_DEPTH)
      throw bad(
        `the JSON body is nested deeper than ${MAX_JSON_DEPTH} levels`,
        null,
        'invalid_json',
      );
    for (const x of Object.values(v)) stack.push([x, depth + 1]);
  }
  return body as Record<string, unknown>;
}
