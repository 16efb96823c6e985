// Judges: a verdict on two answers (pairwise), a 1-10 grade of an answer in a conversation
// (MT-Bench style), or an additive 0-5 rubric score (the self-rewarding baseline), from any
// OpenAI-compatible endpoint or from a builtin verifiable scorer of the tasks.
// Endpoint verdicts are cached on disk by the content hash of the judge's identity and the exact
// request body, so a retried or resumed evaluation never asks (or pays) twice for a verdict.
// Prompts come from files (config/prompts/ by default) with {placeholders}; users replace them.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import OpenAI from 'openai';
import { writeJsonAtomic } from '../lib/atomic.ts';
import { hashJson } from '../lib/hash.ts';
import { allowListeners } from '../lib/pool.ts';
import type { ChatMessage } from '../lib/tokenizer.ts';
import { getBuiltinScorer } from '../tasks/index.ts';
import type { JudgeConfig, JudgeUsage } from '../contracts/activities.ts';
import { badInput, isRequestError } from './errors.ts';

type EndpointJudgeConfig = Extract<JudgeConfig, { type: 'openai' }>;

const PROMPTS_DIR = join(import.meta.dirname, '..', 'config', 'prompts');
const DEFAULT_PROMPTS = {
  pairwise: join(PROMPTS_DIR, 'judge-pairwise.txt'),
  grading: join(PROMPTS_DIR, 'judge-grading.txt'),
  gradingReference: join(PROMPTS_DIR, 'judge-grading-reference.txt'),
  rubric: join(PROMPTS_DIR, 'self-judge-rubric.txt'),
} as const;
const PLACEHOLDERS: Record<keyof typeof DEFAULT_PROMPTS, string[]> = {
  pairwise: ['{instruction}', '{answer_a}', '{answer_b}'],
  grading: ['{conversation}'],
  gradingReference: ['{conversation}', '{reference}'],
  rubric: ['{instruction}', '{answer}'],
};

// How a verdict was read: the label tokens' log-probabilities, the answer's text, a builtin
// scorer, or not at all (counted and left out of every mean).
type VerdictSource = 'logprobs' | 'text' | 'builtin' | 'unparsable';
interface PairVerdict {
  pSecond: number | null;
  source: VerdictSource;
  text: string;
}
interface ScoreVerdict {
  score: number | null;
  source: VerdictSource;
  text: string;
}

export interface Judge {
  name: string;
  concurrency: number;
  usage: JudgeUsage;
  // P(the second answer is better), from labels A (first) and B (second).
  pairwise(instruction: string, first: string, second: string): Promise<PairVerdict>;
  // 1-10; with a reference answer the judge is told to grade correctness against it.
  grade(conversation: ChatMessage[], reference?: string): Promise<ScoreVerdict>;
  // 0-5 additive rubric points.
  rubric(instruction: string, answer: string): Promise<ScoreVerdict>;
}

interface JudgeOptions {
  cacheDir: string;
  // What the endpoint serves, for the cache key: a served name alone may stand for several
  // models (opsr serves every round's policy under one name). Default: baseURL + model.
  identity?: string;
  signal?: AbortSignal;
}

function emptyUsage(): JudgeUsage {
  return { requests: 0, cached: 0, promptTokens: 0, completionTokens: 0 };
}

export async function makeJudge(
  name: string,
  cfg: JudgeConfig,
  opts: JudgeOptions,
): Promise<Judge> {
  return cfg.type === 'builtin' ? builtinJudge(name, cfg.name) : endpointJudge(name, cfg, opts);
}

// ---- parsing --------------------------------------------------------------------------------

// P(B) from the top log-probabilities of the first answer token: softmax over the two labels, a
// label missing from the list counting as -inf. null when neither label is there.
export function labelProbability(top: [string, number][]): number | null {
  const best = (label: string) =>
    Math.max(-Infinity, ...top.filter(([t]) => t.trim() === label).map(([, l]) => l));
  const a = best('A');
  const b = best('B');
  if (a === -Infinity && b === -Infinity) return null;
  const m = Math.max(a, b);
  return Math.exp(b - m) / (Math.exp(a - m) + Math.exp(b - m));
}

// The label in a text answer: "B", "[[B]]", "Answer A", "A." ...; anything naming both or
// neither first is unparsable.
export function parsePairText(text: string): number | null {
  const m = /\[\[([AB])\]\]/.exec(text) ?? /^\W*(?:answer\s+)?([AB])\b/i.exec(text);
  if (!m) return null;
  return m[1].toUpperCase() === 'B' ? 1 : 0;
}

// MT-Bench's format: [[n]], falling back to [n]; only ratings in [1, 10] count.
export function parseRating(text: string): number | null {
  const m = /\[\[(\d+(?:\.\d+)?)\]\]/.exec(text) ?? /\[(\d+(?:\.\d+)?)\]/.exec(text);
  const n = m ? Number(m[1]) : NaN;
  return n >= 1 && n <= 10 ? n : null;
}

// "Score: n" with n in 0..5, the last one if the judge wrote several.
export function parseRubric(text: string): number | null {
  const all = [...text.matchAll(/score\s*[:=]\s*(\d+)/gi)];
  const n = all.length ? Number(all[all.length - 1][1]) : NaN;
  return Number.isInteger(n) && n >= 0 && n <= 5 ? n : null;
}

// The rubric score as the expected value over the digits 0..5 among the top log-probabilities of
// the token after "Score: ", their probabilities renormalised over those digits (" 3" and "3"
// both count as 3). null when no digit is there.
export function expectedRubricScore(top: [string, number][]): number | null {
  const p = new Map<number, number>();
  for (const [t, lp] of top) {
    if (!/^[0-5]$/.test(t.trim())) continue;
    const d = Number(t.trim());
    p.set(d, (p.get(d) ?? 0) + Math.exp(lp));
  }
  if (p.size === 0) return null;
  const mass = [...p.values()].reduce((a, b) => a + b, 0);
  return [...p].reduce((a, [d, q]) => a + (d * q) / mass, 0);
}

// The MT-Bench rating as the expected value over 1..10 from the top log-probabilities of the
// token after "[[" (`first`), renormalised over the ratings there. Tokenizers that split digits
// make "1" the start of both 1 and 10: `afterOne` (the token after "[[1") splits its mass by
// the odds of "0" against a closing "]". null when no rating is there.
export function expectedRating(
  first: [string, number][],
  afterOne: [string, number][] | null,
): number | null {
  const p = new Map<number, number>();
  for (const [t, lp] of first) {
    if (!/^(10|[1-9])$/.test(t.trim())) continue;
    const r = Number(t.trim());
    p.set(r, (p.get(r) ?? 0) + Math.exp(lp));
  }
  if (p.size === 0) return null;
  const one = p.get(1);
  if (one !== undefined && afterOne) {
    const mass = (re: RegExp) =>
      afterOne.filter(([t]) => re.test(t.trim())).reduce((a, [, lp]) => a + Math.exp(lp), 0);
    const ten = mass(/^0/),
      close = mass(/^\]/);
    if (ten + close > 0) {
      p.set(1, (one * close) / (ten + close));
      p.set(10, (p.get(10) ?? 0) + (one * ten) / (ten + close));
    }
  }
  const total = [...p.values()].reduce((a, b) => a + b, 0);
  return [...p].reduce((a, [r, q]) => a + (r * q) / total, 0);
}

// A conversation as the judge reads it: one block per turn.
function conversationText(conversation: ChatMessage[]): string {
  return conversation
    .map((m) => `[${m.role === 'assistant' ? 'Assistant' : 'User'}]\n${m.content}`)
    .join('\n\n');
}

// ---- builtin ------------------------------------------------------------------------------

function builtinJudge(name: string, scorerName: string): Judge {
  const score = getBuiltinScorer(scorerName);
  if (!score) throw badInput(`judges.${name}.name: "${scorerName}" is not a builtin scorer`);
  // The scorer judges the last answer against the last user turn (the task's question).
  const last = (c: ChatMessage[], role: string) =>
    [...c].reverse().find((m) => m.role === role)?.content ?? '';
  return {
    name,
    concurrency: 64,
    usage: emptyUsage(),
    async pairwise(instruction, first, second) {
      const d = score(instruction, second) - score(instruction, first);
      return { pSecond: d > 0 ? 1 : d < 0 ? 0 : 0.5, source: 'builtin', text: '' };
    },
    async grade(conversation) {
      return {
        score: 1 + 9 * score(last(conversation, 'user'), last(conversation, 'assistant')),
        source: 'builtin',
        text: '',
      };
    },
    async rubric(instruction, answer) {
      return { score: Math.round(5 * score(instruction, answer)), source: 'builtin', text: '' };
    },
  };
}

// ---- endpoints ------------------------------------------------------------------------------

interface Completion {
  text: string;
  top: [string, number][] | null;
  promptTokens: number;
  completionTokens: number;
}

// Enough alternatives for the scores' digits to be among them (20 is the OpenAI API's maximum).
const TOP_LOGPROBS_MAX = 20;

async function loadPrompt(
  kind: keyof typeof DEFAULT_PROMPTS,
  file: string | undefined,
  field: string,
): Promise<string> {
  const path = file ?? DEFAULT_PROMPTS[kind];
  const allowed =
    `allowed: a text file with ${PLACEHOLDERS[kind].join(', ')}, ` +
    `like ${DEFAULT_PROMPTS[kind]}`;
  const text = await readFile(path, 'utf8').catch((err: Error) => {
    throw badInput(`${field}: cannot read the prompt file ${path}: ${err.message} (${allowed})`);
  });
  const missing = PLACEHOLDERS[kind].filter((p) => !text.includes(p));
  if (missing.length)
    throw badInput(`${field}: the prompt file ${path} lacks ${missing.join(', ')} (${allowed})`);
  return text;
}

// A configured prompt file read and checked as a judge reads it, for the checks before a run
// starts: the problem, or null.
export type PromptKind = keyof typeof DEFAULT_PROMPTS;
export const promptFileProblem = (
  kind: PromptKind,
  file: string,
  field: string,
): Promise<string | null> =>
  loadPrompt(kind, file, field).then(
    () => null,
    (err: Error) => err.message,
  );

// Placeholders filled in one pass, inserting the texts literally (an answer may hold
// "{answer_b}").
function fill(template: string, values: Record<string, string>): string {
  return template.replace(/\{[a-z_]+\}/g, (k) => (Object.hasOwn(values, k) ? values[k] : k));
}

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve, reject) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener(
      'abort',
      () => {
        clearTimeout(t);
        reject(signal.reason as Error);
      },
      { once: true },
    );
  });

async function endpointJudge(
  name: string,
  cfg: EndpointJudgeConfig,
  opts: JudgeOptions,
): Promise<Judge> {
  const field = `judges.${name}.prompts`;
  const prompts = {
    pairwise: await loadPrompt('pairwise', cfg.prompts.pairwise, `${field}.pairwise`),
    grading: await loadPrompt('grading', cfg.prompts.grading, `${field}.grading`),
    gradingReference: await loadPrompt(
      'gradingReference',
      cfg.prompts.gradingReference,
      `${field}.gradingReference`,
    ),
    rubric: await loadPrompt('rubric', cfg.prompts.rubric, `${field}.rubric`),
  };
  // A named key that is not there would only show as the API's 401 after the policy answered.
  if (cfg.apiKeyEnv && !process.env[cfg.apiKeyEnv])
    throw badInput(
      `judges.${name}.apiKeyEnv: the environment variable ${cfg.apiKeyEnv} is not set ` +
        "(it must hold the judge's API key; local servers need no apiKeyEnv)",
    );
  // Local servers accept any key; the openai client insists on one being set.
  const apiKey = (cfg.apiKeyEnv ? process.env[cfg.apiKeyEnv] : undefined) || 'EMPTY';
  // Retries are this judge's own (cfg.retries), with backoff; the client's would hide them.
  const client = new OpenAI({ baseURL: cfg.baseURL, apiKey, maxRetries: 0, timeout: 600_000 });
  allowListeners(opts.signal, cfg.concurrency);
  const identity = opts.identity ?? `${cfg.baseURL} ${cfg.model}`;
  const usage = emptyUsage();

  const send = async (body: Record<string, unknown>): Promise<Completion> => {
    const res =
      cfg.api === 'chat'
        ? await client.chat.completions.create(
            body as unknown as OpenAI.ChatCompletionCreateParamsNonStreaming,
            { signal: opts.signal },
          )
        : await client.completions.create(
            body as unknown as OpenAI.CompletionCreateParamsNonStreaming,
            { signal: opts.signal },
          );
    const c = res.choices?.[0];
    if (!c) throw new Error(`judge ${name} (${cfg.baseURL}) answered without choices`);
    let top: [string, number][] | null = null;
    if ('message' in c) {
      const first = c.logprobs?.content?.[0];
      if (first) top = (first.top_logprobs ?? []).map((t) => [t.token, t.logprob]);
    } else {
      const first = c.logprobs?.top_logprobs?.[0];
      if (first) top = Object.entries(first);
    }
    return {
      text: 'message' in c ? (c.message?.content ?? '') : (c.text ?? ''),
      top,
      promptTokens: res.usage?.prompt_tokens ?? 0,
      completionTokens: res.usage?.completion_tokens ?? 0,
    };
  };

  // A prompt is a user turn for the chat API; `messages` replace it (chat API only).
  const complete = async (
    prompt: string,
    extra: Record<string, unknown>,
    messages?: ChatMessage[],
  ): Promise<Completion> => {
    const body = {
      model: cfg.model,
      seed: cfg.seed,
      temperature: cfg.temperature,
      max_tokens: cfg.maxTokens,
      n: 1,
      ...extra,
      ...(cfg.api === 'chat'
        ? { messages: messages ?? [{ role: 'user', content: prompt }] }
        : { prompt }),
    };
    const key = hashJson({ identity, api: cfg.api, body });
    const file = join(opts.cacheDir, key.slice(0, 2), `${key}.json`);
    const hit = await readFile(file, 'utf8')
      .then((t) => JSON.parse(t) as Completion)
      .catch(() => null);
    if (hit) {
      usage.cached++;
      return hit;
    }
    for (let attempt = 0; ; attempt++) {
      try {
        usage.requests++;
        const out = await send(body);
        usage.promptTokens += out.promptTokens;
        usage.completionTokens += out.completionTokens;
        await writeJsonAtomic(file, out);
        return out;
      } catch (err) {
        const status = (err as { status?: number }).status;
        if (err instanceof OpenAI.APIError && status !== undefined && isRequestError(status)) {
          throw badInput(
            `judge ${name} (${cfg.baseURL}, model ${cfg.model}) answered HTTP ${status}: ` +
              err.message,
          );
        }
        if (opts.signal?.aborted || attempt >= cfg.retries) throw err;
        await sleep(Math.min(30_000, 500 * 2 ** attempt), opts.signal);
      }
    }
  };

  const logprobs =
    cfg.api === 'chat'
      ? { logprobs: true, top_logprobs: cfg.topLogprobs }
      : { logprobs: cfg.topLogprobs };
  // The top log-probabilities of the one token after the judge's own answer continued with
  // `cont` (vLLM's continue_final_message on the chat API, prompt + answer on the completions API).
  const continued = async (prompt: string, cont: string) =>
    (
      await complete(
        prompt + cont,
        {
          max_tokens: 1,
          ...(cfg.api === 'chat'
            ? {
                logprobs: true,
                top_logprobs: TOP_LOGPROBS_MAX,
                continue_final_message: true,
                add_generation_prompt: false,
              }
            : { logprobs: TOP_LOGPROBS_MAX }),
        },
        [
          { role: 'user', content: prompt },
          { role: 'assistant', content: cont },
        ],
      )
    ).top;
  return {
    name,
    concurrency: cfg.concurrency,
    usage,
    async pairwise(instruction, first, second) {
      const c = await complete(
        fill(prompts.pairwise, {
          '{instruction}': instruction,
          '{answer_a}': first,
          '{answer_b}': second,
        }),
        { max_tokens: 1, ...logprobs },
      );
      const fromLogprobs = c.top ? labelProbability(c.top) : null;
      if (fromLogprobs !== null) return { pSecond: fromLogprobs, source: 'logprobs', text: c.text };
      const fromText = parsePairText(c.text);
      return { pSecond: fromText, source: fromText === null ? 'unparsable' : 'text', text: c.text };
    },
    async grade(conversation, reference) {
      const values = {
        '{conversation}': conversationText(conversation),
        '{reference}': reference ?? '',
      };
      const prompt = fill(
        reference === undefined ? prompts.grading : prompts.gradingReference,
        values,
      );
      const c = await complete(prompt, {});
      const score = parseRating(c.text);
      if (score !== null) return { score, source: 'text', text: c.text };
      if (!cfg.gradingLogprobs) return { score, source: 'unparsable', text: c.text };
      // No [[n]]: the judge's own answer continued with "Rating: [[" (and, when "1" is likely,
      // "Rating: [[1" to tell 1 from 10), the rating read from the log-probabilities.
      const cont = `${c.text.trim()}\nRating: [[`;
      const first = await continued(prompt, cont);
      const hasOne = first?.some(([t]) => t.trim() === '1') ?? false;
      const afterOne = hasOne ? await continued(prompt, `${cont}1`) : null;
      const expected = first ? expectedRating(first, afterOne) : null;
      return {
        score: expected,
        source: expected === null ? 'unparsable' : 'logprobs',
        text: c.text,
      };
    },
    async rubric(instruction, answer) {
      const prompt = fill(prompts.rubric, { '{instruction}': instruction, '{answer}': answer });
      const c = await complete(prompt, {});
      const score = parseRubric(c.text);
      if (score !== null) return { score, source: 'text', text: c.text };
      if (!cfg.rubricLogprobs) return { score, source: 'unparsable', text: c.text };
      // No "Score: n" in the text: the judge's own answer continued with "Score: ", one token,
      // the score read from the digits' log-probabilities (vLLM's continue_final_message).
      const top = await continued(prompt, `${c.text.trim()}\nScore: `);
      const expected = top ? expectedRubricScore(top) : null;
      return {
        score: expected,
        source: expected === null ? 'unparsable' : 'logprobs',
        text: c.text,
      };
    },
  };
}
