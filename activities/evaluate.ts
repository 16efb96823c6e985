// evaluatePolicy: the policy's own unprefixed answers to held-out prompts, scored by the reward
// model (mean policyReward); optionally the prefix curve (paper Fig. 3): answers to prompts
// prefixed with the chosen template at each score in evaluation.prefixScores.
import { join } from 'node:path';
import { cancellationSignal } from '@temporalio/activity';
import { writeFileAtomic } from '../lib/atomic.ts';
import { hashJson, modelHash, sha256File } from '../lib/hash.ts';
import { toJsonl } from '../lib/jsonl.ts';
import { loadValidManifest, writeManifest } from '../lib/manifest.ts';
import { mapLimit } from '../lib/pool.ts';
import type {
  EvaluatePolicyInput,
  EvaluatePolicyResult,
  PrefixCurvePoint,
} from '../contracts/activities.ts';
import { withKeepAlive } from './progress.ts';
import { loadPromptsFor } from './prompts.ts';
import { makeScorer, mean } from './rewards.ts';
import { deriveSeed, generator, prefixed, requestFailure } from './sample-pairs.ts';
import type { SamplerPool } from './sampler-pool.ts';

export async function evaluatePolicy(
  samplers: SamplerPool,
  input: EvaluatePolicyInput,
): Promise<EvaluatePolicyResult> {
  const ev = input.evaluation;
  const s = input.sampling;
  const dir = join(input.runDir, 'eval', input.label);
  const file = join(dir, 'results.json');
  const answersFile = join(dir, 'answers.jsonl');
  const manifestPath = join(dir, 'manifest.json');
  const scores = input.prefixCurve ? ev.prefixScores : [];
  const configHash = hashJson({
    label: input.label,
    prompts: ev.prompts,
    maxTokens: ev.maxTokens ?? s.maxTokens,
    scores,
    chosenTemplate: input.prefixes.chosenTemplate,
    rewardModel: input.rewardModel,
    api: s.api,
    temperature: s.temperature,
    topP: s.topP,
    seed: s.seed,
    ...(s.perRequestSeeds ? {} : { unseeded: true }),
    extra: s.extra,
  });
  const items = await loadPromptsFor('evaluation.prompts.file', ev.prompts);
  const inputs = {
    model: await modelHash(input.endpoint.modelDir),
    prompts: await sha256File(ev.prompts.file),
  };
  const done = await loadValidManifest(manifestPath, { step: 'evaluate', configHash, inputs });
  if (done) return done.data!.result as EvaluatePolicyResult;

  const scorer = makeScorer(input.rewardModel);
  // Side "plain" = the unprefixed prompt; "prefix-<s>" = the chosen template at score s.
  const jobs = [
    ...items.map((it) => ({ it, side: 'plain', input: it.messages ?? it.prompt! })),
    ...scores.flatMap((sc) =>
      items.map((it) => ({
        it,
        side: `prefix-${sc}`,
        input: prefixed(it, input.prefixes.chosenTemplate, sc),
      })),
    ),
  ];
  let answered = 0;
  const cancelled = cancellationSignal();
  // Heartbeats cover starting a server here too (a restarted worker may need a new one).
  const answers = await withKeepAlive(
    () => ({ answered, total: jobs.length }),
    () =>
      samplers.with(s, input.endpoint.modelDir, async (endpoint) => {
        const generate = await generator(s, endpoint, cancelled);
        return mapLimit(jobs, s.concurrency, async (j) => {
          const seed = deriveSeed(s.seed, 0, j.it.index, `eval/${j.side}`);
          const a = await generate(j.input, seed, { maxTokens: ev.maxTokens ?? s.maxTokens }).catch(
            (err) => {
              throw requestFailure(
                err,
                `evaluating prompt ${j.it.index} (${j.side}) of ${ev.prompts.file}`,
              );
            },
          );
          answered++;
          return { index: j.it.index, side: j.side, seed, ...a };
        });
      }),
  ).catch((err) => {
    // Aborted requests fail with the client's abort error; report the cancellation itself.
    throw cancelled.aborted ? cancelled.reason : err;
  });
  const rewards = await withKeepAlive(
    () => ({ answered, total: jobs.length, scoring: true }),
    () =>
      scorer(
        jobs.map((j, i) => ({ prompt: j.it.messages ?? j.it.prompt!, response: answers[i].text })),
        cancelled,
      ),
  );
  const rows = answers.map((a, i) => ({ ...a, reward: rewards[i] }));
  const meanOf = (side: string) =>
    mean(rows.filter((r) => r.side === side).map((r) => r.reward)) ?? 0;
  const prefixCurve: PrefixCurvePoint[] | null = input.prefixCurve
    ? scores.map((score) => ({ score, meanReward: meanOf(`prefix-${score}`) }))
    : null;
  const result: EvaluatePolicyResult = {
    label: input.label,
    modelDir: input.endpoint.modelDir,
    count: items.length,
    meanReward: meanOf('plain'),
    prefixCurve,
    file,
  };
  await writeFileAtomic(answersFile, toJsonl(rows));
  await writeFileAtomic(file, JSON.stringify(result, null, 2) + '\n');
  await writeManifest(manifestPath, {
    step: 'evaluate',
    configHash,
    inputs,
    outputs: { answers: answersFile, results: file },
    counts: { prompts: items.length, answers: rows.length },
    data: { result },
  });
  return result;
}
