// The requests of the OpenAI-compatible API (vLLM's protocol.py): zod schemas for the bodies of
// /v1/completions, /v1/chat/completions, /tokenize and /detokenize with vLLM's field names and
// defaults, their sampling parameters, and the one OpenAI-style error shape every failure takes.
import { z } from 'zod';

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
const MAX_STOP = 64;
const MAX_STOP_CHARS = 1024;
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

/**
 * Defaults a checkpoint's generation_config.json may set (vLLM applies them unless told not to).
 */
export interface GenerationDefaults {
  temperature?: number;
  topP?: number;
  topK?: number;
}

export interface Message {
  role: string;
  content: string;
}

type Body = Record<string, unknown>;

// The first problem, in the order the schema lists its fields, is the answer: a 400 naming the
// top-level field, with a code where the schema gave one.
export function parseBody<T>(schema: z.ZodType<T>, body: Body): T {
  const r = schema.safeParse(body);
  if (r.success) return r.data;
  const issue = r.error.issues[0];
  const code =
    issue.code === 'custom' ? ((issue.params?.code as string | undefined) ?? null) : null;
  throw bad(issue.message, issue.path.length ? String(issue.path[0]) : null, code);
}

// A field's own check reports at the field; a check across fields names the field it blames.
const fail = (ctx: z.RefinementCtx, message: string, code?: string, field?: string) =>
  ctx.addIssue({ code: 'custom', path: field ? [field] : [], message, params: { code } });

const isInt = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v);
const present = (v: unknown) => v !== undefined && v !== null;

// A number field (null or absent: the default): `<key> must be <allowed>; got <value>`.
function num(key: string, allowed: string, ok: (v: number) => boolean) {
  const error = (iss: { input?: unknown }) =>
    `${key} must be ${allowed}; got ${preview(iss.input)}`;
  return z.number({ error }).refine(ok, { error }).nullish();
}
const bool = (key: string) =>
  z
    .boolean({ error: (iss) => `${key} must be true or false; got ${preview(iss.input)}` })
    .nullish();
const int0to20 = (key: string) =>
  num(key, 'an integer in [0, 20]', (v) => isInt(v) && v >= 0 && v <= 20);
const maxTokensField = (key: string) => num(key, 'an integer >= 1', (v) => isInt(v) && v >= 1);

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
const unsupported = (key: string, neutral: unknown) =>
  `${key} is not supported by opsr serve (only ${JSON.stringify(neutral)} is accepted)`;
const isNeutral = (v: unknown, neutral: unknown) =>
  !present(v) || v === neutral || (Array.isArray(v) && v.length === 0);
const neutralFields = Object.fromEntries(
  NEUTRAL.map(([key, neutral]) => [
    key,
    // best_of equal to n is neutral too; the request schema checks that.
    key === 'best_of'
      ? z.unknown().optional()
      : z
          .unknown()
          .refine((v) => isNeutral(v, neutral), { error: unsupported(key, neutral) })
          .optional(),
  ]),
);

const stopField = z
  .unknown()
  .optional()
  .transform((s, ctx): string[] => {
    if (!present(s)) return [];
    let stop: string[];
    if (typeof s === 'string') stop = [s];
    else if (Array.isArray(s)) {
      const i = s.findIndex((x) => typeof x !== 'string' || x === '');
      if (i >= 0) return (fail(ctx, `stop[${i}] must be a non-empty string`), z.NEVER);
      stop = s as string[];
    } else return (fail(ctx, 'stop must be a string or a list of strings'), z.NEVER);
    if (stop.includes('')) return (fail(ctx, 'stop must not be the empty string'), z.NEVER);
    if (stop.length > MAX_STOP) {
      fail(ctx, `stop holds ${stop.length} strings; at most ${MAX_STOP} are allowed`);
      return z.NEVER;
    }
    const long = stop.findIndex((x) => x.length > MAX_STOP_CHARS);
    if (long >= 0) {
      const chars = stop[long].length;
      fail(ctx, `stop[${long}] has ${chars} characters; at most ${MAX_STOP_CHARS} are allowed`);
      return z.NEVER;
    }
    return stop;
  });

const stopTokenIdsField = z
  .unknown()
  .optional()
  .transform((s, ctx): number[] => {
    if (!present(s)) return [];
    if (!Array.isArray(s) || !s.every((x) => isInt(x) && x >= 0)) {
      fail(ctx, 'stop_token_ids must be a list of token ids');
      return z.NEVER;
    }
    if (s.length > MAX_STOP) {
      const message = `stop_token_ids holds ${s.length} ids; at most ${MAX_STOP} are allowed`;
      return (fail(ctx, message), z.NEVER);
    }
    return s as number[];
  });

// The sampling fields both generation endpoints share, in the order they are checked.
const samplingFields = {
  ...neutralFields,
  n: num('n', 'an integer in [1, 128]', (v) => isInt(v) && v >= 1 && v <= 128),
  temperature: num('temperature', 'a number >= 0', (v) => v >= 0),
  top_p: num('top_p', 'a number in (0, 1]', (v) => v > 0 && v <= 1),
  top_k: num('top_k', 'an integer >= 1, or 0 or -1 for no limit', (v) => isInt(v) && v >= -1),
  seed: num(
    'seed',
    'a non-negative integer',
    (v) => isInt(v) && v >= 0 && v <= Number.MAX_SAFE_INTEGER,
  ),
  stop: stopField,
  stop_token_ids: stopTokenIdsField,
};
const outputFields = {
  ignore_eos: bool('ignore_eos'),
  skip_special_tokens: bool('skip_special_tokens'),
  include_stop_str_in_output: bool('include_stop_str_in_output'),
  stream: bool('stream'),
  stream_options: z.unknown().optional(),
};

const isIds = (x: unknown): x is number[] =>
  Array.isArray(x) && x.length > 0 && x.every((t) => isInt(t) && t >= 0);
/**
 * Completions prompt: a string, a list of strings, a token id list, or a list of token id lists.
 */
const promptField = z
  .unknown()
  .optional()
  .transform((p, ctx): (string | number[])[] => {
    if (!present(p))
      return (fail(ctx, 'prompt is required', 'missing_required_parameter'), z.NEVER);
    if (typeof p === 'string' || isIds(p)) return [p];
    if (Array.isArray(p) && p.length > 0) {
      const i = p.findIndex((x) => typeof x !== 'string' && !isIds(x));
      if (i < 0) return p as (string | number[])[];
      return (fail(ctx, `prompt[${i}] must be a string or a list of token ids`), z.NEVER);
    }
    return (fail(ctx, 'prompt must be a string, a list of strings, or token ids'), z.NEVER);
  });

const isObject = (x: unknown): x is Body => !!x && typeof x === 'object';
/** Chat messages; content may be a string or a list of {type: "text", text} parts. */
const messagesField = z
  .unknown()
  .optional()
  .transform((m, ctx): Message[] => {
    if (!present(m))
      return (fail(ctx, 'messages is required', 'missing_required_parameter'), z.NEVER);
    if (!Array.isArray(m) || m.length === 0)
      return (fail(ctx, 'messages must be a non-empty list'), z.NEVER);
    const out: Message[] = [];
    for (const [i, x] of m.entries()) {
      if (!isObject(x) || typeof x.role !== 'string')
        return (fail(ctx, `messages[${i}].role must be a string`), z.NEVER);
      const c = x.content;
      if (typeof c === 'string') {
        out.push({ role: x.role, content: c });
        continue;
      }
      if (!Array.isArray(c)) {
        const message = `messages[${i}].content must be a string or a list of text parts`;
        return (fail(ctx, message), z.NEVER);
      }
      const j = c.findIndex(
        (part) => !isObject(part) || part.type !== 'text' || typeof part.text !== 'string',
      );
      if (j >= 0) {
        const message =
          `messages[${i}].content[${j}] must be {"type": "text", "text": string} ` +
          '(only text is supported)';
        return (fail(ctx, message), z.NEVER);
      }
      out.push({ role: x.role, content: c.map((part) => (part as Body).text as string).join('') });
    }
    return out;
  });

const bestOfIsNeutral = (r: { best_of?: unknown; n?: number | null }, ctx: z.RefinementCtx) => {
  if (!isNeutral(r.best_of, null) && r.best_of !== (r.n ?? 1))
    fail(ctx, unsupported('best_of', null), undefined, 'best_of');
};

// A field whose schema depends on another field: checked once that one is known.
function parseField<T>(schema: z.ZodType<T>, key: string, v: unknown, ctx: z.RefinementCtx) {
  const r = schema.safeParse(v);
  if (r.success) return r.data;
  fail(ctx, r.error.issues[0].message, undefined, key);
  return z.NEVER;
}

export const CompletionRequest = z
  .looseObject({
    ...samplingFields,
    max_tokens: maxTokensField('max_tokens'),
    logprobs: int0to20('logprobs'),
    ...outputFields,
    prompt: promptField,
  })
  .superRefine(bestOfIsNeutral)
  .transform((r) => ({ ...r, maxTokens: r.max_tokens ?? 16, logprobs: r.logprobs ?? null }));

// max_completion_tokens replaces max_tokens when given; top_logprobs counts only with logprobs.
export const ChatCompletionRequest = z
  .looseObject({
    messages: messagesField,
    ...samplingFields,
    max_completion_tokens: maxTokensField('max_completion_tokens'),
    max_tokens: z.unknown().optional(),
    logprobs: bool('logprobs'),
    top_logprobs: z.unknown().optional(),
    ...outputFields,
    add_generation_prompt: z.unknown().optional(),
    continue_final_message: bool('continue_final_message'),
  })
  .superRefine(bestOfIsNeutral)
  .transform((r, ctx) => {
    const maxTokens = present(r.max_completion_tokens)
      ? r.max_completion_tokens
      : parseField(maxTokensField('max_tokens'), 'max_tokens', r.max_tokens, ctx);
    let logprobs: number | null = null;
    if (r.logprobs === true)
      logprobs = parseField(int0to20('top_logprobs'), 'top_logprobs', r.top_logprobs, ctx) ?? 0;
    else if (present(r.top_logprobs) && r.top_logprobs !== 0)
      fail(ctx, 'top_logprobs needs logprobs: true', undefined, 'top_logprobs');
    return { ...r, maxTokens: maxTokens ?? null, logprobs };
  });

type SamplingRequest = z.output<typeof CompletionRequest> | z.output<typeof ChatCompletionRequest>;

/** The engine's sampling parameters for a parsed request (vLLM's to_sampling_params). */
export function toSampling(r: SamplingRequest, defaults: GenerationDefaults): Sampling {
  const topK = r.top_k ?? defaults.topK ?? 0;
  return {
    n: r.n ?? 1,
    maxTokens: r.maxTokens,
    temperature: r.temperature ?? defaults.temperature ?? 1,
    topP: r.top_p ?? defaults.topP ?? 1,
    topK: topK === -1 ? 0 : topK,
    seed: r.seed ?? null,
    stop: r.stop,
    stopTokenIds: r.stop_token_ids,
    ignoreEos: r.ignore_eos ?? false,
    skipSpecialTokens: r.skip_special_tokens ?? true,
    includeStopStrInOutput: r.include_stop_str_in_output ?? false,
    logprobs: r.logprobs,
    stream: r.stream ?? false,
  };
}

export const TokenizeChatRequest = z.looseObject({
  messages: messagesField,
  add_generation_prompt: z.unknown().optional(),
  continue_final_message: bool('continue_final_message'),
  add_special_tokens: z.unknown().optional(),
});
export const TokenizeRequest = z.looseObject({
  prompt: z
    .unknown()
    .optional()
    .transform((p, ctx): string => {
      if (typeof p === 'string') return p;
      fail(ctx, 'prompt must be a string (or give messages)', 'missing_required_parameter');
      return z.NEVER;
    }),
  add_special_tokens: z.unknown().optional(),
});
// Token ids are checked against the vocabulary, which only the serving side knows.
export const detokenizeRequest = (vocabSize: number) =>
  z.looseObject({
    tokens: z
      .unknown()
      .refine(
        (t) => Array.isArray(t) && t.every((x) => Number.isInteger(x) && x >= 0 && x < vocabSize),
        { error: `tokens must be a list of token ids in [0, ${vocabSize})` },
      ) as z.ZodType<number[]>,
  });
