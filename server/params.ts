// Request validation for the OpenAI-compatible endpoints: vLLM's field names and defaults, and
// OpenAI-style 400 errors that name the offending field.

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly param: string | null = null,
    readonly code: string | null = null,
    readonly type = status === 404
      ? 'not_found_error'
      : status === 503
        ? 'service_unavailable_error'
        : 'invalid_request_error',
  ) {
    super(message);
  }
  body() {
    return {
      error: { message: this.message, type: this.type, param: this.param, code: this.code },
    };
  }
}

export const bad = (message: string, param: string | null = null, code: string | null = null) =>
  new ApiError(400, message, param, code);

// A request value as messages show it: bounded in depth and length, whatever the client sent.
export function preview(v: unknown): string {
  const walk = (x: unknown, depth: number): unknown =>
    depth > 3
      ? '...'
      : Array.isArray(x)
        ? x.slice(0, 8).map((y) => walk(y, depth + 1))
        : x && typeof x === 'object'
          ? Object.fromEntries(
              Object.entries(x)
                .slice(0, 8)
                .map(([k, y]) => [k, walk(y, depth + 1)]),
            )
          : x;
  const s = JSON.stringify(walk(v, 0)) ?? String(v);
  return s.length > 100 ? `${s.slice(0, 97)}...` : s;
}

// What one request may hold: stop strings (matched against every generated token) and the
// nesting of any JSON value in the body.
export const MAX_STOP = 64;
export const MAX_STOP_CHARS = 1024;
export const MAX_JSON_DEPTH = 32;

export interface Sampling {
  n: number;
  maxTokens: number | null; // null: whatever the context leaves
  temperature: number;
  topP: number;
  topK: number; // 0 = off
  seed: number | null;
  stop: string[];
  stopTokenIds: number[];
  ignoreEos: boolean;
  skipSpecialTokens: boolean;
  includeStopStrInOutput: boolean;
  logprobs: number | null; // null = none, else how many alternatives per token
  stream: boolean;
}

/** Defaults a checkpoint's generation_config.json may set (vLLM applies them unless told not to). */
export interface GenerationDefaults {
  temperature?: number;
  topP?: number;
  topK?: number;
}

type Body = Record<string, unknown>;

const isInt = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v);
const present = (body: Body, key: string) => body[key] !== undefined && body[key] !== null;

function num(
  body: Body,
  key: string,
  dflt: number,
  ok: (v: number) => boolean,
  allowed: string,
): number {
  if (!present(body, key)) return dflt;
  const v = body[key];
  if (typeof v !== 'number' || !Number.isFinite(v) || !ok(v))
    throw bad(`${key} must be ${allowed}; got ${preview(v)}`, key);
  return v;
}

function bool(body: Body, key: string, dflt: boolean): boolean {
  if (!present(body, key)) return dflt;
  if (typeof body[key] !== 'boolean')
    throw bad(`${key} must be true or false; got ${preview(body[key])}`, key);
  return body[key];
}

// Fields opsr's engine does not implement: accepted only at their neutral values, so a request
// relying on them fails loudly instead of being sampled differently.
const NEUTRAL: [string, unknown][] = [
  ['presence_penalty', 0],
  ['frequency_penalty', 0],
  ['repetition_penalty', 1],
  ['min_p', 0],
  ['min_tokens', 0],
  ['echo', false],
  ['best_of', null],
  ['logit_bias', null],
  ['suffix', null],
  ['use_beam_search', false],
  ['tools', null],
  ['response_format', null],
  ['prompt_logprobs', null],
];

export function parseSampling(body: Body, defaults: GenerationDefaults, chat: boolean): Sampling {
  for (const [key, neutral] of NEUTRAL) {
    const v = body[key];
    if (v === undefined || v === null || v === neutral) continue;
    if (key === 'best_of' && v === (body.n ?? 1)) continue;
    if (Array.isArray(v) && v.length === 0) continue;
    throw bad(
      `${key} is not supported by opsr serve (only ${JSON.stringify(neutral)} is accepted)`,
      key,
    );
  }
  const n = num(body, 'n', 1, (v) => isInt(v) && v >= 1 && v <= 128, 'an integer in [1, 128]');
  const tokensKey =
    chat && present(body, 'max_completion_tokens') ? 'max_completion_tokens' : 'max_tokens';
  const maxTokens = present(body, tokensKey)
    ? num(body, tokensKey, 0, (v) => isInt(v) && v >= 1, 'an integer >= 1')
    : chat
      ? null
      : 16;
  const temperature = num(
    body,
    'temperature',
    defaults.temperature ?? 1,
    (v) => v >= 0,
    'a number >= 0',
  );
  const topP = num(body, 'top_p', defaults.topP ?? 1, (v) => v > 0 && v <= 1, 'a number in (0, 1]');
  const topK = num(
    body,
    'top_k',
    defaults.topK ?? 0,
    (v) => isInt(v) && v >= -1,
    'an integer >= 1, or 0 or -1 for no limit',
  );
  const seed = present(body, 'seed')
    ? num(
        body,
        'seed',
        0,
        (v) => isInt(v) && v >= 0 && v <= Number.MAX_SAFE_INTEGER,
        'a non-negative integer',
      )
    : null;

  let stop: string[] = [];
  if (present(body, 'stop')) {
    const s = body.stop;
    stop =
      typeof s === 'string'
        ? [s]
        : Array.isArray(s)
          ? (s as unknown[]).map((x, i) => {
              if (typeof x !== 'string' || x === '')
                throw bad(`stop[${i}] must be a non-empty string`, 'stop');
              return x;
            })
          : (() => {
              throw bad('stop must be a string or a list of strings', 'stop');
            })();
    if (stop.includes('')) throw bad('stop must not be the empty string', 'stop');
    if (stop.length > MAX_STOP)
      throw bad(`stop holds ${stop.length} strings; at most ${MAX_STOP} are allowed`, 'stop');
    const long = stop.findIndex((x) => x.length > MAX_STOP_CHARS);
    if (long >= 0)
      throw bad(
        `stop[${long}] has ${stop[long].length} characters; at most ${MAX_STOP_CHARS} are allowed`,
        'stop',
      );
  }
  let stopTokenIds: number[] = [];
  if (present(body, 'stop_token_ids')) {
    const s = body.stop_token_ids;
    if (!Array.isArray(s) || !s.every((x) => isInt(x) && x >= 0))
      throw bad('stop_token_ids must be a list of token ids', 'stop_token_ids');
    if (s.length > MAX_STOP)
      throw bad(
        `stop_token_ids holds ${s.length} ids; at most ${MAX_STOP} are allowed`,
        'stop_token_ids',
      );
    stopTokenIds = s as number[];
  }

  let logprobs: number | null = null;
  if (chat) {
    if (bool(body, 'logprobs', false))
      logprobs = num(
        body,
        'top_logprobs',
        0,
        (v) => isInt(v) && v >= 0 && v <= 20,
        'an integer in [0, 20]',
      );
    else if (present(body, 'top_logprobs') && body.top_logprobs !== 0)
      throw bad('top_logprobs needs logprobs: true', 'top_logprobs');
  } else if (present(body, 'logprobs')) {
    logprobs = num(
      body,
      'logprobs',
      0,
      (v) => isInt(v) && v >= 0 && v <= 20,
      'an integer in [0, 20]',
    );
  }
  return {
    n,
    maxTokens,
    temperature,
    topP,
    topK: topK === -1 ? 0 : topK,
    seed,
    stop,
    stopTokenIds,
    ignoreEos: bool(body, 'ignore_eos', false),
    skipSpecialTokens: bool(body, 'skip_special_tokens', true),
    includeStopStrInOutput: bool(body, 'include_stop_str_in_output', false),
    logprobs,
    stream: bool(body, 'stream', false),
  };
}

/** Completions prompt: a string, a list of strings, a token id list, or a list of token id lists. */
export function parsePrompts(body: Body): (string | number[])[] {
  const p = body.prompt;
  if (p === undefined || p === null)
    throw bad('prompt is required', 'prompt', 'missing_required_parameter');
  const isIds = (x: unknown): x is number[] =>
    Array.isArray(x) && x.length > 0 && x.every((t) => isInt(t) && t >= 0);
  if (typeof p === 'string') return [p];
  if (isIds(p)) return [p];
  if (Array.isArray(p) && p.length > 0) {
    return p.map((x, i) => {
      if (typeof x === 'string' || isIds(x)) return x;
      throw bad(`prompt[${i}] must be a string or a list of token ids`, 'prompt');
    });
  }
  throw bad('prompt must be a string, a list of strings, or token ids', 'prompt');
}

export interface Message {
  role: string;
  content: string;
}

/** Chat messages; content may be a string or a list of {type: "text", text} parts. */
export function parseMessages(body: Body): Message[] {
  const m = body.messages;
  if (m === undefined || m === null)
    throw bad('messages is required', 'messages', 'missing_required_parameter');
  if (!Array.isArray(m) || m.length === 0)
    throw bad('messages must be a non-empty list', 'messages');
  return m.map((x, i) => {
    if (!x || typeof x !== 'object' || typeof (x as Body).role !== 'string')
      throw bad(`messages[${i}].role must be a string`, 'messages');
    const c = (x as Body).content;
    if (typeof c === 'string') return { role: (x as Body).role as string, content: c };
    if (Array.isArray(c)) {
      const parts = c.map((part, j) => {
        if (
          part &&
          typeof part === 'object' &&
          (part as Body).type === 'text' &&
          typeof (part as Body).text === 'string'
        )
          return (part as Body).text as string;
        throw bad(
          `messages[${i}].content[${j}] must be {"type": "text", "text": string} (only text is supported)`,
          'messages',
        );
      });
      return { role: (x as Body).role as string, content: parts.join('') };
    }
    throw bad(`messages[${i}].content must be a string or a list of text parts`, 'messages');
  });
}
