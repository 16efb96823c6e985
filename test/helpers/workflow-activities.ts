// Test activities for the workflow tests (Temporal's documented practice for workflow logic):
// the same interface as activities/, small deterministic file work instead of servers and the
// engine (the manifest and report writers are the real ones). They keep the real activities'
// durability rules (atomic files, shards and checkpoints reused after a retry) so a killed worker's
// run can be compared file by file with a clean one.
// Every unit of work appends an event to `log` (JSONL), which is how tests see duplicates.
import { appendFile, mkdir, readFile, readdir } from 'node:fs/promises';
import path from 'node:path';
import { activityInfo, Context, heartbeat } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import type { OpsrActivities, RewardSummary } from '../../contracts/activities.ts';
import { progressNotifier } from '../../activities/progress.ts';
import { writeRoundManifest, writeRunReport } from '../../activities/report.ts';
import { findFinishedRun, writeStudyReport } from '../../activities/study.ts';
import { summarizeJudgedEvals } from '../../activities/evaluate-judged.ts';
import { writeFileAtomic, writeJsonAtomic } from '../../lib/atomic.ts';
import { hashJson, sha256, sha256File } from '../../lib/hash.ts';
import { readJsonl, writeJsonlAtomic } from '../../lib/jsonl.ts';

export interface TestControls {
  log: string; // events file (JSONL)
  shardDelayMs?: number; // time per sampling shard
  trainStepDelayMs?: number; // time per training step
  failFilterAttempts?: number; // filterPairs fails this many attempts before succeeding
  // filterPairs fails with an ApplicationFailure of this type (not marked non-retryable)
  filterErrorType?: string;
}

type TestEvent =
  | { event: 'attempt'; activity: string; round: number; attempt: number; pid: number }
  | { event: 'shard'; round: number; shard: number; pid: number }
  | { event: 'step'; round: number; step: number; pid: number }
  | { event: 'serve' | 'release'; modelDir: string; pid: number }
  | { event: 'cancelled'; round: number; step: number; pid: number };

export async function readEvents(log: string): Promise<TestEvent[]> {
  try {
    return await readJsonl<TestEvent>(log);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
}

interface Sample {
  index: number;
  prompt: string;
  chosen: string;
  rejected: string;
  chosenScore: number;
  rejectedScore: number;
}

// A "model" here is a directory whose model.safetensors names how it was made, so the chain of
// references is visible in the files.
async function modelTag(dir: string): Promise<string> {
  return (await sha256File(path.join(dir, 'model.safetensors'))).slice(0, 12);
}

export function testActivities(c: TestControls): OpsrActivities {
  const record = (e: TestEvent) => appendFile(c.log, JSON.stringify(e) + '\n');
  const attempt = (activity: string, round: number) =>
    record({
      event: 'attempt',
      activity,
      round,
      attempt: activityInfo().attempt,
      pid: process.pid,
    });
  const sleep = (ms: number | undefined) => (ms ? Context.current().sleep(ms) : Promise.resolve());

  return {
    async prepareRun({ runId, config }) {
      const runDir = path.join(config.storage, 'runs', runId);
      const prompts = (await readJsonl<{ prompt: string }>(config.prompts.file)).slice(
        0,
        config.prompts.limit,
      );
      const promptsFile = path.join(runDir, 'prompts.jsonl');
      await writeJsonlAtomic(
        promptsFile,
        prompts.map((p, index) => ({ index, prompt: p.prompt })),
      );
      const configFile = path.join(runDir, 'config.json');
      await writeJsonAtomic(configFile, config);
      return {
        runId,
        runDir,
        configHash: hashJson(config),
        configFile,
        promptsFile,
        promptCount: prompts.length,
        baseModel: config.model,
      };
    },

    async initPolicy({ runDir, baseModel }) {
      const modelDir = path.join(runDir, 'init', 'final');
      await writeFileAtomic(
        path.join(modelDir, 'model.safetensors'),
        `init from ${await modelTag(baseModel)}\n`,
      );
      return {
        modelDir,
        sft: { modelDir, records: 1, metrics: { loss: 1 }, cached: false },
        offline: null,
      };
    },

    async ensureSampler({ modelDir, sampling }) {
      await record({ event: 'serve', modelDir, pid: process.pid });
      return {
        lifecycle: sampling.lifecycle,
        baseURL: 'http://127.0.0.1:1/v1',
        model: 'test-policy',
        modelDir,
      };
    },

    async releaseSampler({ endpoint }) {
      await record({ event: 'release', modelDir: endpoint.modelDir, pid: process.pid });
    },

    async samplePairs(input) {
      await attempt('samplePairs', input.round);
      const prompts = await readJsonl<{ index: number; prompt: string }>(input.promptsFile);
      const size = input.sampling.shardSize;
      const nShards = Math.ceil(prompts.length / size);
      const tag = await modelTag(input.endpoint.modelDir);
      const notify = progressNotifier(input.notify, 0);
      const shardFile = (k: number) =>
        path.join(input.roundDir, 'samples', `shard-${String(k).padStart(5, '0')}.jsonl`);
      const all: Sample[] = [];
      let resumedShards = 0;
      for (let k = 0; k < nShards; k++) {
        let shard: Sample[];
        try {
          shard = await readJsonl<Sample>(shardFile(k));
          resumedShards++;
        } catch {
          await sleep(c.shardDelayMs);
          shard = prompts.slice(k * size, (k + 1) * size).map((p) => ({
            index: p.index,
            prompt: p.prompt,
            chosenScore: input.chosenScore,
            rejectedScore: input.rejectedScore,
            chosen: `${tag} answers "${p.prompt}" for ${input.chosenScore}`,
            rejected:
              p.index % 4 === 3
                ? `${tag} answers "${p.prompt}" for ${input.chosenScore}`
                : `${tag} answers "${p.prompt}" for ${input.rejectedScore}`,
          }));
          await writeJsonlAtomic(shardFile(k), shard);
          await record({ event: 'shard', round: input.round, shard: k, pid: process.pid });
        }
        all.push(...shard);
        heartbeat({ shardsDone: k + 1 });
        notify({ kind: 'sampling', round: input.round, done: all.length, total: prompts.length });
      }
      const samplesFile = path.join(input.roundDir, 'samples.jsonl');
      await writeJsonlAtomic(samplesFile, all);
      return { samplesFile, count: all.length, shards: nShards, resumedShards };
    },

    async filterPairs(input) {
      await attempt('filterPairs', input.round);
      if (activityInfo().attempt <= (c.failFilterAttempts ?? 0)) {
        throw new Error(`injected failure on attempt ${activityInfo().attempt}`);
      }
      if (c.filterErrorType)
        throw ApplicationFailure.retryable(
          `filter.scoreTalkPatterns: injected ${c.filterErrorType}`,
          c.filterErrorType,
        );
      const samples = await readJsonl<Sample>(input.samplesFile);
      const kept = samples.filter((s) => !(input.filter.dropIdentical && s.chosen === s.rejected));
      const pairsFile = path.join(input.roundDir, 'pairs.jsonl');
      await writeJsonlAtomic(pairsFile, kept);
      const filtered = samples.length - kept.length;
      return { pairsFile, kept: kept.length, filtered, filteredBy: { identical: filtered } };
    },

    async analyzeRewards(input): Promise<RewardSummary> {
      const pairs = await readJsonl<Sample>(input.pairsFile);
      const rows = pairs.map((p) => ({
        index: p.index,
        chosen: p.chosenScore / 10,
        rejected: p.rejectedScore / 10,
      }));
      const rewardsFile = path.join(input.roundDir, 'rewards.jsonl');
      await writeJsonlAtomic(rewardsFile, rows);
      const mean = (xs: number[]) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : null);
      const chosenMean = mean(rows.map((r) => r.chosen));
      const rejectedMean = mean(rows.map((r) => r.rejected));
      return {
        rewardsFile,
        count: rows.length,
        chosenMean,
        rejectedMean,
        gap: chosenMean === null || rejectedMean === null ? null : chosenMean - rejectedMean,
        chosenBetter: mean(rows.map((r) => (r.chosen > r.rejected ? 1 : 0))),
      };
    },

    async buildDataset(input) {
      const pairs = await readJsonl<Sample>(input.pairsFile);
      const trlFile = path.join(input.roundDir, 'dataset.jsonl');
      await writeJsonlAtomic(
        trlFile,
        pairs.map((p) => ({
          prompt: p.prompt,
          chosen: p.chosen,
          rejected: p.rejected,
          round: input.round,
        })),
      );
      const dataFile = path.join(input.roundDir, 'dataset.bin');
      await writeFileAtomic(dataFile, pairs.map((p) => `${p.index}\n`).join(''));
      return { trlFile, dataFile, records: pairs.length, truncated: 0 };
    },

    // One "step" per record; a checkpoint after every step; a retry resumes from the newest.
    async trainPolicy(input) {
      await attempt('trainPolicy', input.round);
      const outDir = path.join(input.roundDir, 'train');
      const ckDir = path.join(outDir, 'checkpoints');
      await mkdir(ckDir, { recursive: true });
      const steps = (await readFile(input.dataFile, 'utf8')).split('\n').filter(Boolean).length;
      const done = (await readdir(ckDir))
        .map((n) => Number(n.replace('step-', '')))
        .filter(Number.isFinite);
      const resumedFrom = done.length ? Math.max(...done) : null;
      const notify = progressNotifier(input.notify, 0);
      for (let step = (resumedFrom ?? 0) + 1; step <= steps; step++) {
        try {
          await sleep(c.trainStepDelayMs);
        } catch (err) {
          // Cancelled: the engine would checkpoint the last completed step on SIGTERM.
          await record({
            event: 'cancelled',
            round: input.round,
            step: step - 1,
            pid: process.pid,
          });
          throw err;
        }
        await writeFileAtomic(
          path.join(ckDir, `step-${String(step).padStart(8, '0')}`),
          `${step}\n`,
        );
        await record({ event: 'step', round: input.round, step, pid: process.pid });
        heartbeat({ step });
        notify({ kind: 'training', round: input.round, step, totalSteps: steps });
      }
      const modelDir = path.join(outDir, 'final');
      const ref = await modelTag(input.referenceModelDir);
      const data = sha256(await readFile(input.dataFile));
      await writeFileAtomic(
        path.join(modelDir, 'model.safetensors'),
        `trained round ${input.round} from ${ref} lr ${input.learningRate} data ${data}\n`,
      );
      return {
        modelDir,
        outDir,
        steps,
        resumedFrom,
        metrics: { loss: 1 / input.round, 'rewards/accuracies': 1 - 1 / (input.round + 1) },
      };
    },

    async evaluatePolicy(input) {
      const text = await readFile(path.join(input.endpoint.modelDir, 'model.safetensors'), 'utf8');
      const round = Number(/trained round (\d+)/.exec(text)?.[1] ?? 0);
      const file = path.join(input.runDir, 'eval', input.label, 'results.json');
      const result = {
        label: input.label,
        modelDir: input.endpoint.modelDir,
        count: 4,
        meanReward: 0.2 + 0.1 * round + 0.01 * input.sampling.seed, // seeds spread the reward
        prefixCurve: input.prefixCurve
          ? input.evaluation.prefixScores.map((score) => ({ score, meanReward: score / 10 }))
          : null,
        file,
      };
      await writeJsonAtomic(file, result);
      return result;
    },

    // Pairwise win rate 0.5 + 0.1 per round of training behind the policy, over 6 instructions.
    async evaluateJudged(input) {
      const text = await readFile(path.join(input.endpoint.modelDir, 'model.safetensors'), 'utf8');
      const round = Number(/trained round (\d+)/.exec(text)?.[1] ?? 0);
      const dir = path.join(input.runDir, 'eval', input.label);
      const file = path.join(dir, `${input.set.name}.json`);
      const annotationsFile = path.join(dir, `${input.set.name}.jsonl`);
      const pref = Math.min(1, 0.5 + 0.1 * round);
      await writeJsonlAtomic(
        annotationsFile,
        [0, 1, 2, 3, 4, 5].map((index) => ({
          index,
          preference: index % 2 ? pref : Math.max(0, 2 * pref - 1),
          modelLength: 10 + index,
          referenceLength: 10,
        })),
      );
      const usage = { requests: 12, cached: 0, promptTokens: 1200, completionTokens: 12 };
      const result = {
        kind: 'pairwise' as const,
        name: input.set.name,
        label: input.label,
        modelDir: input.endpoint.modelDir,
        judge: input.judgeName,
        count: 6,
        unparsable: 0,
        sources: { builtin: 6 },
        winRate: pref,
        standardError: 0,
        lc: null,
        orderBias: { firstPositionWins: 0.5, flipRate: 0, swappedWinRate: pref, pairs: 6 },
        cost: {
          answerRequests: 6,
          answerTokens: 60,
          judge: usage,
          wallS: { answering: 0, judging: 0 },
        },
        file,
        annotationsFile,
      };
      await writeJsonAtomic(file, result);
      return result;
    },

    // Four candidates per prompt scored 0-5 by a stand-in rubric; every fourth prompt ties.
    async sampleSelfJudgedPairs(input) {
      await attempt('sampleSelfJudgedPairs', input.round);
      const prompts = await readJsonl<{ index: number; prompt: string }>(input.promptsFile);
      const tag = await modelTag(input.endpoint.modelDir);
      const kept = prompts
        .filter((p) => p.index % 4 !== 3)
        .map((p) => ({
          index: p.index,
          prompt: p.prompt,
          chosenScore: 5,
          rejectedScore: 1,
          chosen: `${tag} candidate for "${p.prompt}" scored 5`,
          rejected: `${tag} candidate for "${p.prompt}" scored 1`,
        }));
      const samplesFile = path.join(input.roundDir, 'samples.jsonl');
      const candidatesFile = path.join(input.roundDir, 'candidates.jsonl');
      await writeJsonlAtomic(samplesFile, kept);
      await writeJsonlAtomic(candidatesFile, kept);
      const n = prompts.length * input.pairs.candidates;
      return {
        samplesFile,
        candidatesFile,
        prompts: prompts.length,
        count: kept.length,
        dropped: { tie: prompts.length - kept.length, unparsable: 0 },
        cost: {
          sampling: { requests: n, tokens: 10 * n },
          judging: { requests: n, cached: 0, tokens: 100 * n },
        },
      };
    },

    summarizeJudgedEvals,
    writeRoundManifest,
    writeRunReport,
    findFinishedRun,
    writeStudyReport,
  };
}
