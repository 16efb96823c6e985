// samplePairs: the round's chosen/rejected answers for every prompt, through any OpenAI-compatible
// server, in durable shards: samples/shard-00000.jsonl holds the complete records of prompt
// indices [0, shardSize), and so on, each written atomically once all its prompts are answered.
// A retried attempt keeps every shard on disk and samples only the missing ones, so the result has
// no duplicates and no gaps; per-request seeds make a resampled shard equal to the one it replaces.
import { mkdir, readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { activityInfo, cancellationSignal, heartbeat, log } from '@temporalio/activity';
import OpenAI from 'openai';
import { writeFileAtomic, writeJsonAtomic } from '../lib/atomic.ts';
import { hashJson, modelHash, sha256 } from '../lib/hash.ts';
import { parseJsonl, readJsonl, toJsonl } from '../lib/jsonl.ts';
import { loadValidManifest, writeManifest } from '../lib/manifest.ts';
import { allowListeners, mapLimit } from '../lib/pool.ts';
import { loadTokenizer, type ChatMessage, type LoadedTokenizer } from '../lib/tokenizer.ts';
import { applyTemplate } from '../config/schema.ts';
import type {
  RoundSamplingCost,
  SamplePairsInput,
  SamplePairsResult,
  SamplingConfig,
} from '../contracts/activities.ts';
import { badInput, isRequestError } from './errors.ts';
import { progressNotifier, withKeepAlive } from './progress.ts';
import type { PromptItem } from './prompts.ts';
import type { SampleRecord } from './records.ts';
import { apiKeyOf, type SamplerPool } from './sampler-pool.ts';

// The prefix goes in front of a plain prompt, or in front of the last user turn of a chat.
export function prefixed(
  item: PromptItem,
  template: string,
  score: number,
): string | ChatMessage[] {
  if (!item.messages) return applyTemplate(template, score, item.prompt!);
  const msgs = item.messages.map((m) => ({ ...m }));
  const last = msgs.map((m) => m.role).lastIndexOf('user');
  msgs[last].content = applyTemplate(template, score, msgs[last].content);
  return msgs;
}

// A request's seed from the run seed, round, prompt index and side: the same config gives the
// same requests whatever order, shard or attempt they run in.
export function deriveSeed(seed: number, round: number, index: number, side: string): number {
  return parseInt(sha256(`${seed}/${round}/${index}/${side}`).slice(0, 8), 16) & 0x7fffffff;
}

function openaiClient(sampling: SamplingConfig, baseURL: string): OpenAI {
  // Temporal retries the activity; a client-side retry would duplicate work behind its back.
  return new OpenAI({ baseURL, apiKey: apiKeyOf(sampling), maxRetries: 0, timeout: 600_000 });
}

type Generate = (
  input: string | ChatMessage[],
  seed: number,
  opts?: { maxTokens?: number },
) => Promise<{ text: string; finish_reason: string; tokens: number }>;

// One answer per call, through the chat or completions API as configured. With the completions
// API, prompts go through the served model's own chat template when it has one (a plain prompt
// as one user turn), as the chat API would, and as buildDataset tokenizes them for training:
// the policy is trained on the context it answered in.
export async function generator(
  sampling: SamplingConfig,
  endpoint: { baseURL: string; model: string; modelDir: string },
  signal?: AbortSignal,
): Promise<Generate> {
  const client = openaiClient(sampling, endpoint.baseURL);
  allowListeners(signal, sampling.concurrency);
  let tok: Promise<LoadedTokenizer> | null = null;
  const render = async (input: string | ChatMessage[]): Promise<string> => {
    const t = await (tok ??= loadTokenizer(endpoint.modelDir));
    if (!t.hasChatTemplate) {
      if (typeof input === 'string') return input;
      throw badInput(
        `chat prompts ("messages") with sampling.api "completions" need a ` +
          `chat_template in ${endpoint.modelDir}/tokenizer_config.json`,
      );
    }
    const messages = typeof input === 'string' ? [{ role: 'user', content: input }] : input;
    return t.applyChatTemplate(messages, { addGenerationPrompt: true });
  };
  return (input, seed, opts = {}) =>
    linked(signal, async (signal) => {
      const body = {
        model: endpoint.model,
        n: 1,
        ...(sampling.perRequestSeeds ? { seed } : {}),
        temperature: sampling.temperature,
        top_p: sampling.topP,
        max_tokens: opts.maxTokens ?? sampling.maxTokens,
        ...sampling.extra,
      };
      if (sampling.api === 'chat') {
        const messages = typeof input === 'string' ? [{ role: 'user', content: input }] : input;
        const res = await client.chat.completions.create(
          { ...body, messages } as OpenAI.ChatCompletionCreateParamsNonStreaming,
          { signal },
        );
        return answerOf(
          res,
          endpoint.baseURL,
          'chat/completions',
          (c) => (c.message as { content?: unknown } | undefined)?.content,
        );
      }
      const prompt = await render(input);
      const res = await client.completions.create(
        { ...body, prompt } as OpenAI.CompletionCreateParamsNonStreaming,
        { signal },
      );
      return answerOf(res, endpoint.baseURL, 'completions', (c) => c.text);
    });
}

// The one answer of a response, checked: a server that answers another shape (not OpenAI's,
// several choices, a stream) answers it on every retry, so that is bad input, named once.
function answerOf(
  res: unknown,
  baseURL: string,
  route: string,
  textOf: (c: Record<string, unknown>) => unknown,
): { text: string; finish_reason: string; tokens: number } {
  const r = res as { choices?: unknown; usage?: { completion_tokens?: unknown } } | null;
  const c =
    Array.isArray(r?.choices) && r.choices.length === 1
      ? (r.choices[0] as Record<string, unknown> | null)
      : null;
  const text = c ? textOf(c) : undefined;
  const tokens = r?.usage?.completion_tokens ?? 0;
  if (
    !c ||
    typeof text !== 'string' ||
    typeof c.finish_reason !== 'string' ||
    !Number.isSafeInteger(tokens)
  ) {
    const got = JSON.stringify(res) ?? String(res);
    throw badInput(
      `${baseURL}/${route} answered an unexpected shape (allowed: one choice with a ` +
        `string answer and ` +
        `finish_reason; check sampling.baseURL and sampling.extra): ${got.slice(0, 200)}`,
    );
  }
  return { text, finish_reason: c.finish_reason, tokens: tokens as number };
}

// Each request gets its own signal that follows the activity's: the client leaves its abort
// listener on the signal it is given, so handing it the activity's one would pile up a listener
// per request for the activity's whole life.
async function linked<T>(
  outer: AbortSignal | undefined,
  body: (signal: AbortSignal | undefined) => Promise<T>,
): Promise<T> {
  if (!outer) return body(undefined);
  const inner = new AbortController();
  const forward = () => inner.abort(outer.reason);
  if (outer.aborted) forward();
  else outer.addEventListener('abort', forward, { once: true });
  try {
    return await body(inner.signal);
  } finally {
    outer.removeEventListener('abort', forward);
  }
}

// A 4xx answer (other than timeout, conflict, rate limit) says the request itself is wrong:
// retrying cannot fix it, so it fails the activity for good, naming what was asked.
export function requestFailure(err: unknown, what: string): unknown {
  const status = (err as { status?: number }).status;
  if (err instanceof OpenAI.APIError && status !== undefined && isRequestError(status)) {
    return badInput(`${what}: the server answered HTTP ${status}: ${err.message}`);
  }
  return err;
}

const shardName = (i: number) => `shard-${String(i).padStart(5, '0')}.jsonl`;

// A shard on disk counts when it parses and holds exactly its index range, in order.
async function readShard(file: string, lo: number, hi: number): Promise<SampleRecord[] | null> {
  try {
    const recs = parseJsonl<SampleRecord>(await readFile(file, 'utf8'), file);
    return recs.length === hi - lo && recs.every((r, k) => r.index === lo + k) ? recs : null;
  } catch {
    return null;
  }
}

export async function samplePairs(
  samplers: SamplerPool,
  input: SamplePairsInput,
): Promise<SamplePairsResult> {
  const s = input.sampling;
  const items = await readJsonl<PromptItem>(input.promptsFile);
  const total = items.length;
  const samplesFile = join(input.roundDir, 'samples.jsonl');
  const manifestPath = join(input.roundDir, 'samples.manifest.json');
  // What the samples depend on; a change discards earlier shards (API key and concurrency don't
  // count).
  // The policy counts by content: a model directory replaced in place must not reuse old answers.
  const configHash = hashJson({
    round: input.round,
    items,
    prefixes: input.prefixes,
    chosenScore: input.chosenScore,
    rejectedScore: input.rejectedScore,
    model: input.endpoint.model,
    modelDir: input.endpoint.modelDir,
    weights: await modelHash(input.endpoint.modelDir),
    api: s.api,
    temperature: s.temperature,
    topP: s.topP,
    maxTokens: s.maxTokens,
    seed: s.seed,
    ...(s.perRequestSeeds ? {} : { unseeded: true }),
    extra: s.extra,
    shardSize: s.shardSize,
  });
  const nShards = Math.ceil(total / s.shardSize);
  const done = await loadValidManifest(manifestPath, { step: 'sample', configHash });
  if (done) {
    const cost = samplingCost(await readJsonl<SampleRecord>(samplesFile));
    return { samplesFile, count: total, shards: nShards, resumedShards: nShards, cost };
  }

  const shardDir = join(input.roundDir, 'samples');
  await mkdir(shardDir, { recursive: true });
  const specFile = join(shardDir, 'spec.json');
  const spec = await readFile(specFile, 'utf8').then(
    (t) => JSON.parse(t) as { configHash?: string },
    () => null,
  );
  if (spec?.configHash !== configHash) {
    // Shards of another config (other model, prompts or settings) must not leak into this one.
    for (const f of await readdir(shardDir))
      if (f.startsWith('shard-')) await rm(join(shardDir, f), { force: true });
    await writeJsonAtomic(specFile, { configHash });
  }

  const rangeOf = (k: number) => [k * s.shardSize, Math.min(total, (k + 1) * s.shardSize)] as const;
  const shards: (SampleRecord[] | null)[] = [];
  for (let k = 0; k < nShards; k++)
    shards.push(await readShard(join(shardDir, shardName(k)), ...rangeOf(k)));
  const resumedShards = shards.filter(Boolean).length;
  const previous = activityInfo().heartbeatDetails as { shardsDone?: number } | undefined;
  if (previous?.shardsDone !== undefined && previous.shardsDone > resumedShards) {
    // The earlier attempt ran on a machine whose disk this one does not see: redo what is missing.
    log.warn(
      `samplePairs round ${input.round}: heartbeat reported ${previous.shardsDone} ` +
        `shards, ${resumedShards} found on disk`,
    );
  }
  let shardsDone = resumedShards;
  let samplesDone = shards.reduce((n, x) => n + (x?.length ?? 0), 0);
  const notify = progressNotifier(input.notify);
  const report = (final = false) => {
    heartbeat({ shardsDone, samplesDone });
    notify({ kind: 'sampling', round: input.round, done: samplesDone, total }, final);
  };
  report();

  const cancelled = cancellationSignal();
  const missing = items.filter((it) => shards[Math.floor(it.index / s.shardSize)] === null);
  const pending = new Map<number, SampleRecord[]>();
  // Heartbeats cover starting a server here too (a restarted worker may need a new one).
  if (missing.length > 0)
    await withKeepAlive(
      () => ({ shardsDone, samplesDone }),
      () =>
        samplers.with(s, input.endpoint.modelDir, async (endpoint) => {
          const generate = await generator(s, endpoint, cancelled);
          const sampleOne = async (item: PromptItem): Promise<SampleRecord> => {
            const seeds = {
              chosen: deriveSeed(s.seed, input.round, item.index, 'chosen'),
              rejected: deriveSeed(s.seed, input.round, item.index, 'rejected'),
            };
            const [c, r] = await Promise.all([
              generate(
                prefixed(item, input.prefixes.chosenTemplate, input.chosenScore),
                seeds.chosen,
              ),
              generate(
                prefixed(item, input.prefixes.rejectedTemplate, input.rejectedScore),
                seeds.rejected,
              ),
            ]).catch((err) => {
              throw requestFailure(err, `sampling prompt ${item.index} of ${input.promptsFile}`);
            });
            return {
              index: item.index,
              round: input.round,
              ...(item.messages ? { messages: item.messages } : { prompt: item.prompt }),
              chosen: { ...c, seed: seeds.chosen },
              rejected: { ...r, seed: seeds.rejected },
              chosenScore: input.chosenScore,
              rejectedScore: input.rejectedScore,
              seed: s.seed,
            };
          };

          // Each prompt is two requests, so sampling.concurrency requests means half as many
          // prompts.
          await mapLimit(missing, Math.max(1, Math.floor(s.concurrency / 2)), async (item) => {
            const rec = await sampleOne(item);
            const k = Math.floor(item.index / s.shardSize);
            const [lo, hi] = rangeOf(k);
            const got = pending.get(k) ?? [];
            got.push(rec);
            pending.set(k, got);
            if (got.length < hi - lo) return;
            got.sort((a, b) => a.index - b.index);
            await writeFileAtomic(join(shardDir, shardName(k)), toJsonl(got));
            shards[k] = got;
            pending.delete(k);
            shardsDone++;
            samplesDone += got.length;
            report();
          }).catch((err) => {
            // Aborted requests fail with the client's abort error; report the cancellation itself.
            throw cancelled.aborted ? cancelled.reason : err;
          });
        }),
    );

  report(true); // past the throttle: the display ends on the full count
  await writeFileAtomic(samplesFile, toJsonl(shards.flatMap((x) => x!)));
  // Without per-request seeds a resampled shard differs from the lost one: say so where it counts.
  const data = { reproducible: s.perRequestSeeds };
  await writeManifest(manifestPath, {
    step: 'sample',
    configHash,
    outputs: { samples: samplesFile },
    counts: { samples: total, shards: nShards },
    data,
  });
  const cost = samplingCost(shards.flatMap((x) => x!));
  return { samplesFile, count: total, shards: nShards, resumedShards, cost };
}

// Two requests per prompt, their generated tokens; prefix pairs need no judge.
function samplingCost(records: SampleRecord[]): RoundSamplingCost {
  const tokens = records.reduce((n, r) => n + r.chosen.tokens + r.rejected.tokens, 0);
  const judging = { requests: 0, cached: 0, tokens: 0 };
  return { sampling: { requests: 2 * records.length, tokens }, judging };
}
