// The activities the workers register (names and signatures: contracts/activities.ts
// OpsrActivities), built once per worker process from their dependencies (Temporal samples'
// createActivities pattern): no activity keeps process-wide state.
import type { OpsrActivities } from '../contracts/activities.ts';
import { analyzeRewards } from './rewards.ts';
import { buildDataset } from './dataset.ts';
import { evaluatePolicy } from './evaluate.ts';
import { evaluateJudged, summarizeJudgedEvals } from './evaluate-judged.ts';
import { filterPairs } from './filter.ts';
import { prepareRun } from './prepare.ts';
import { heartbeating } from './progress.ts';
import { writeRoundManifest, writeRunReport } from './report.ts';
import { samplePairs } from './sample-pairs.ts';
import { sampleSelfJudgedPairs } from './self-judge.ts';
import { findFinishedRun, writeStudyReport } from './study.ts';
import { SamplerPool } from './sampler-pool.ts';
import { initPolicy, trainPolicy } from './train.ts';

export { SamplerPool };

interface ActivityDeps {
  // The embedded and managed-vLLM servers this process runs; its owner closes it on shutdown.
  samplers: SamplerPool;
}

// The long ones heartbeat with their own progress details; the rest heartbeat while they run.
export function createActivities({ samplers }: ActivityDeps): OpsrActivities {
  return {
    prepareRun: heartbeating(prepareRun),
    initPolicy,
    ensureSampler: heartbeating((input) => samplers.ensure(input)),
    releaseSampler: heartbeating((input) => samplers.release(input)),
    samplePairs: (input) => samplePairs(samplers, input),
    filterPairs: heartbeating(filterPairs),
    analyzeRewards,
    buildDataset: heartbeating(buildDataset),
    trainPolicy,
    evaluatePolicy: (input) => evaluatePolicy(samplers, input),
    writeRoundManifest: heartbeating(writeRoundManifest),
    writeRunReport: heartbeating(writeRunReport),
    findFinishedRun: heartbeating(findFinishedRun),
    writeStudyReport: heartbeating(writeStudyReport),
    evaluateJudged: (input) => evaluateJudged(samplers, input),
    summarizeJudgedEvals: heartbeating(summarizeJudgedEvals),
    sampleSelfJudgedPairs: (input) => sampleSelfJudgedPairs(samplers, input),
  };
}
