// sampleSelfJudgedPairs: the self-rewarding LLM-as-a-judge baseline's pairs (Yuan et al. 2024).
// The policy answers every prompt pairs.candidates times without any prefix; a judge (the policy
// itself with the additive 5-point rubric prompt, or a configured judge) scores each answer; the
// best and the worst become chosen and rejected. Prompts whose candidates all score the same, or
// with fewer than two parsable scores, are dropped and counted. The rest of the round (filter,
// dataset, training) is the prefix round's code: the output has samples.jsonl's line shape.
import { join } from 'node:path';
import { cancellationSignal } from '@temporalio/activity';
import { writeFileAtomic } from '../lib/atomic.ts';
import { hashJson, modelHash } from '../lib/hash.ts';
import { readJsonl, toJsonl } from '../lib/jsonl.ts';
import { loadValidManifest, writeManifest } from '../lib/manifest.ts';
import { mapLimit } from '../lib/pool.ts';
import type {
  JudgeConfig,
  SelfJudgePairsInput,
  SelfJudgePairsResult,
} from '../contracts/activities.ts';
import { makeJudge } from './judge.ts';
import { progressNotifier, withKeepAlive } from './progress.ts';
import type { PromptItem } from './prompts.ts';
import { promptText } from './rewards.ts';
import type { Answer, SampleRecord } from './records.ts';
import { deriveSeed, generator, requestFailure } from './sample-pairs.ts';
import type { SamplerPool } from './sampler-pool.ts';

export async function sampleSelfJudgedPairs(
  samplers: SamplerPool,
  input: SelfJudgePairsInput,
): Promise<SelfJudgePairsResult> {
  const s = input.sampling;
  const p = input.pairs;
  const items = await readJsonl<PromptItem>(input.promptsFile);
  const samplesFile = join(input.roundDir, 'samples.jsonl');
  const candidatesFile = join(input.roundDir, 'candidates.jsonl');
  const manifestPath = join(input.roundDir, 'samples.manifest.json');
  const weights = await modelHash(input.endpoint.modelDir);
  const configHash = hashJson({
    source: 'self-judge',
    round: input.round,
    items,
    pairs: p,
    judge: input.judge,
    weights,
    api: s.api,
    temperature: s.temperature,
    topP: s.topP,
    maxTokens: s.maxTokens,
    seed: s.seed,
    extra: s.extra,
  });
  const done = await loadValidManifest(manifestPath, { step: 'sample-self-judge', configHash });
  if (done) return done.data!.result as SelfJudgePairsResult;

  const cancelled = cancellationSignal();
  const notify = progressNotifier(input.notify);
  let answered = 0;
  const total = items.length;
  const sampling = { requests: 0, tokens: 0 };
  const result = await withKeepAlive(
    () => ({ answered, total }),
    () =>
      samplers.with(s, input.endpoint.modelDir, async (endpoint) => {
        // The policy as judge: its own server through the chat API (its chat template), greedy, and
        // cached under its weights' hash (every round's policy is served under the same name).
        const judgeCfg: JudgeConfig = input.judge ?? {
          type: 'openai',
          baseURL: endpoint.baseURL,
          model: endpoint.model,
          apiKeyEnv: s.apiKeyEnv,
          api: 'chat',
          concurrency: s.concurrency,
          retries: 3,
          seed: s.seed,
          temperature: 0,
          maxTokens: p.judgeMaxTokens,
          topLogprobs: 5,
          // The policy's server speaks vLLM's extensions: a small model that never writes
          // "Score: n" still gets a score from its log-probabilities.
          rubricLogprobs: true,
          gradingLogprobs: true,
          prompts: { rubric: p.rubricPrompt },
        };
        const judge = await makeJudge(input.judge ? 'pairs.judge' : 'policy', judgeCfg, {
          cacheDir: input.cacheDir,
          signal: cancelled,
          identity: input.judge ? undefined : `policy ${weights}`,
        });
        const generate = await generator(s, endpoint, cancelled);
        const perPrompt = await mapLimit(
          items,
          Math.max(1, Math.floor(s.concurrency / p.candidates)),
          async (item) => {
            const input1 = item.messages ?? item.prompt!;
            const candidates = await Promise.all(
              Array.from({ length: p.candidates }, async (_, c) => {
                const seed = deriveSeed(s.seed, input.round, item.index, `candidate-${c}`);
                const a = await generate(input1, seed).catch((err) => {
                  throw requestFailure(
                    err,
                    `sampling candidate ${c} for prompt ${item.index} of ${input.promptsFile}`,
                  );
                });
                sampling.requests++;
                sampling.tokens += a.tokens;
                return { ...a, seed };
              }),
            );
            const scores = await Promise.all(
              candidates.map((c) => judge.rubric(promptText(input1), c.text)),
            );
            answered++;
            notify({ kind: 'sampling', round: input.round, done: answered, total });
            return { item, candidates, scores: scores.map((v) => v.score) };
          },
        ).catch((err) => {
          throw cancelled.aborted ? cancelled.reason : err;
        });
        return { perPrompt, usage: { ...judge.usage } };
      }),
  );

  const kept: SampleRecord[] = [];
  const dropped = { tie: 0, unparsable: 0 };
  for (const { item, candidates, scores } of result.perPrompt) {
    const ok = scores.flatMap((sc, c) => (sc === null ? [] : [{ sc, c }]));
    if (ok.length < 2) {
      dropped.unparsable++;
      continue;
    }
    // The first best and the first worst, in candidate order.
    const best = ok.reduce((a, b) => (b.sc > a.sc ? b : a));
    const worst = ok.reduce((a, b) => (b.sc < a.sc ? b : a));
    if (best.sc === worst.sc) {
      dropped.tie++;
      continue;
    }
    const answer = (c: number): Answer => candidates[c];
    kept.push({
      index: item.index,
      round: input.round,
      ...(item.messages ? { messages: item.messages } : { prompt: item.prompt }),
      chosen: answer(best.c),
      rejected: answer(worst.c),
      chosenScore: best.sc,
      rejectedScore: worst.sc,
      seed: s.seed,
    });
  }
  const u = result.usage;
  const out: SelfJudgePairsResult = {
    samplesFile,
    candidatesFile,
    prompts: total,
    count: kept.length,
    dropped,
    cost: {
      sampling,
      judging: {
        requests: u.requests,
        cached: u.cached,
        tokens: u.promptTokens + u.completionTokens,
      },
    },
  };
  await writeFileAtomic(
    candidatesFile,
    toJsonl(
      result.perPrompt.map(({ item, candidates, scores }) => ({
        index: item.index,
        candidates: candidates.map((c, k) => ({ ...c, score: scores[k] })),
      })),
    ),
  );
  await writeFileAtomic(samplesFile, toJsonl(kept));
  await writeManifest(manifestPath, {
    step: 'sample-self-judge',
    configHash,
    outputs: { samples: samplesFile, candidates: candidatesFile },
    counts: { prompts: total, kept: kept.length, ...dropped },
    data: { result: out },
  });
  return out;
}
