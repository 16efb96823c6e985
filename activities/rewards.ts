// Reward-model scoring for analysis (paper Fig. 3 and 4): a vLLM classifier (/classify), a vLLM
// pooling model (/pooling), a generic HTTP scorer, or a builtin scorer of the demo tasks.
// Scores always judge the original prompt (without prefix) and the answer.
import { join } from 'node:path';
import { cancellationSignal } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import { writeFileAtomic } from '../lib/atomic.ts';
import { hashJson, sha256File } from '../lib/hash.ts';
import { readJsonl, toJsonl } from '../lib/jsonl.ts';
import { loadValidManifest, writeManifest } from '../lib/manifest.ts';
import { mapLimit } from '../lib/pool.ts';
import type { ChatMessage } from '../lib/tokenizer.ts';
import { BUILTIN_SCORER_NAMES } from '../config/schema.ts';
import { getBuiltinScorer } from '../tasks/index.ts';
import type {
  AnalyzeRewardsInput,
  RewardModelConfig,
  RewardSummary,
} from '../contracts/activities.ts';
import { badInput, isRequestError } from './errors.ts';
import { withKeepAlive } from './progress.ts';
import type { SampleRecord } from './records.ts';

interface ScoreItem {
  prompt: string | ChatMessage[];
  response: string;
}
type Scorer = (items: ScoreItem[], signal?: AbortSignal) => Promise<number[]>;

const BATCH = 64; // inputs per request
const IN_FLIGHT = 4; // requests at once

// A chat prompt as plain text for scorers that take one string: its turns, one per line.
export function promptText(p: string | ChatMessage[]): string {
  return typeof p === 'string' ? p : p.map((m) => `${m.role}: ${m.content}`).join('\n');
}

function apiKeyHeader(env: string | undefined): Record<string, string> {
  const key = env ? process.env[env] : undefined;
  return key ? { authorization: `Bearer ${key}` } : {};
}

async function postJson(
  url: string,
  body: unknown,
  headers: Record<string, string>,
  signal?: AbortSignal,
): Promise<unknown> {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
    signal,
  }).catch((err: Error) => {
    if (signal?.aborted) throw err;
    const cause = (err.cause as Error | undefined)?.message;
    throw new Error(`reward model ${url}: ${err.message}${cause ? ` (${cause})` : ''}`);
  });
  const text = await res.text();
  if (!res.ok) {
    const message = `reward model ${url} answered HTTP ${res.status}: ${text.slice(0, 300)}`;
    throw isRequestError(res.status) ? badInput(message) : new Error(message);
  }
  try {
    return JSON.parse(text);
  } catch {
    throw badInput(`reward model ${url} answered with non-JSON: ${text.slice(0, 300)}`);
  }
}

// A reward model that answers another shape answers it on every retry: bad input, failed once.
function finite(x: unknown, where: string): number {
  if (typeof x !== 'number' || !Number.isFinite(x))
    throw badInput(`reward model: ${where} is ${JSON.stringify(x)}, not a finite number`);
  return x;
}

// vLLM's /classify and /pooling live at the server root, beside /v1.
const serverRoot = (baseURL: string) => baseURL.replace(/\/+$/, '').replace(/\/v1$/, '');

export function makeScorer(rm: RewardModelConfig): Scorer {
  if (rm.type === 'builtin') {
    const fn = getBuiltinScorer(rm.name);
    if (!fn)
      throw badInput(
        `rewardModel.name "${rm.name}" is not a builtin scorer (allowed: ` +
          `${BUILTIN_SCORER_NAMES.join(', ')})`,
      );
    return async (items) =>
      items.map((it, i) =>
        finite(fn(promptText(it.prompt), it.response), `builtin scorer "${rm.name}" on item ${i}`),
      );
  }
  const batched =
    (one: (items: ScoreItem[], signal?: AbortSignal) => Promise<number[]>): Scorer =>
    async (items, signal) => {
      const parts: ScoreItem[][] = [];
      for (let i = 0; i < items.length; i += BATCH) parts.push(items.slice(i, i + BATCH));
      const scored = await mapLimit(parts, IN_FLIGHT, async (part) => {
        const got = await one(part, signal);
        if (got.length !== part.length)
          throw badInput(`reward model returned ${got.length} scores for ${part.length} inputs`);
        return got;
      });
      return scored.flat();
    };
  const text = (it: ScoreItem) => `${promptText(it.prompt)}\n${it.response}`;
  if (rm.type === 'vllm-classify') {
    const url = `${serverRoot(rm.baseURL)}/classify`;
    return batched(async (items, signal) => {
      const body = (await postJson(
        url,
        { model: rm.model, input: items.map(text), use_activation: rm.useActivation },
        apiKeyHeader(rm.apiKeyEnv),
        signal,
      )) as { data?: { probs?: number[] }[] };
      // A single-logit reward head gives one value; a two-class head's last class is "good".
      return (body.data ?? []).map((d, i) =>
        finite(d.probs?.[d.probs.length - 1], `${url} data[${i}].probs`),
      );
    });
  }
  if (rm.type === 'vllm-pooling') {
    const url = `${serverRoot(rm.baseURL)}/pooling`;
    // The head's raw output: vLLM's pooler would otherwise put a sigmoid on a one-logit head.
    const request = (items: ScoreItem[]) => ({
      model: rm.model,
      input: items.map(text),
      use_activation: false,
    });
    return batched(async (items, signal) => {
      const body = (await postJson(url, request(items), apiKeyHeader(rm.apiKeyEnv), signal)) as {
        data?: { data?: unknown }[];
      };
      return (body.data ?? []).map((d, i) => {
        let v: unknown = d.data;
        while (Array.isArray(v)) v = v[v.length - 1]; // reward heads pool to [1] or [[1]]
        return finite(v, `${url} data[${i}].data`);
      });
    });
  }
  // Generic scorer: POST [{prompt, response}, ...] answers [score, ...] (or {"scores": [...]}).
  return batched(async (items, signal) => {
    const body = await postJson(
      rm.url,
      items.map((it) => ({ prompt: promptText(it.prompt), response: it.response })),
      apiKeyHeader(rm.apiKeyEnv),
      signal,
    );
    const scores = Array.isArray(body) ? body : (body as { scores?: unknown }).scores;
    if (!Array.isArray(scores))
      throw badInput(
        `reward model ${rm.url} answered neither a list of scores nor {"scores": [...]}`,
      );
    return scores.map((s, i) => finite(s, `${rm.url} scores[${i}]`));
  });
}

// One score of a fixed text, before any sampling is spent: a wrong URL, model name, key or answer
// shape is reported at the start of a run, not after its first round of sampling.
export async function checkRewardModel(rm: RewardModelConfig): Promise<void> {
  if (rm.type === 'builtin') return; // the config loader checks the name
  const scorer = makeScorer(rm);
  try {
    await scorer([{ prompt: 'opsr reward model check', response: 'ok' }]);
  } catch (err) {
    const message = `rewardModel (checked before sampling): ${(err as Error).message}`;
    if (err instanceof ApplicationFailure && err.nonRetryable) throw badInput(message);
    throw new Error(message, { cause: err });
  }
}

export const mean = (xs: number[]) =>
  xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : null;

export async function analyzeRewards(input: AnalyzeRewardsInput): Promise<RewardSummary> {
  const rewardsFile = join(input.roundDir, 'rewards.jsonl');
  const manifestPath = join(input.roundDir, 'rewards.manifest.json');
  const configHash = hashJson({ rewardModel: input.rewardModel });
  const inputs = { pairs: await sha256File(input.pairsFile) };
  const done = await loadValidManifest(manifestPath, { step: 'rewards', configHash, inputs });
  if (done) return done.data!.summary as RewardSummary;

  const pairs = await readJsonl<SampleRecord>(input.pairsFile);
  const scorer = makeScorer(input.rewardModel);
  const prompt = (p: SampleRecord) => p.messages ?? p.prompt!;
  const scores = await withKeepAlive(
    () => ({ pairs: pairs.length }),
    () =>
      scorer(
        pairs.flatMap((p) => [
          { prompt: prompt(p), response: p.chosen.text },
          { prompt: prompt(p), response: p.rejected.text },
        ]),
        cancellationSignal(),
      ),
  );
  const rows = pairs.map((p, i) => ({
    index: p.index,
    chosen: scores[2 * i],
    rejected: scores[2 * i + 1],
  }));
  await writeFileAtomic(rewardsFile, toJsonl(rows));
  const chosenMean = mean(rows.map((r) => r.chosen));
  const rejectedMean = mean(rows.map((r) => r.rejected));
  const summary: RewardSummary = {
    rewardsFile,
    count: rows.length,
    chosenMean,
    rejectedMean,
    gap: chosenMean === null || rejectedMean === null ? null : chosenMean - rejectedMean,
    chosenBetter: rows.length
      ? rows.filter((r) => r.chosen > r.rejected).length / rows.length
      : null,
  };
  await writeManifest(manifestPath, {
    step: 'rewards',
    configHash,
    inputs,
    outputs: { rewards: rewardsFile },
    counts: { pairs: rows.length },
    data: { summary },
  });
  return summary;
}
