// The activities the workers register (names and signatures: contracts/activities.ts OpsrActivities).
import type { OpsrActivities } from '../contracts/activities.ts';
import { analyzeRewards } from './rewards.ts';
import { buildDataset } from './dataset.ts';
import { evaluatePolicy } from './evaluate.ts';
import { filterPairs } from './filter.ts';
import { prepareRun } from './prepare.ts';
import { heartbeating } from './progress.ts';
import { writeRoundManifest, writeRunReport } from './report.ts';
import { samplePairs } from './sample-pairs.ts';
import { findFinishedRun, writeStudyReport } from './study.ts';
import { ensureSampler, releaseSampler } from './sampler-pool.ts';
import { initPolicy, trainPolicy } from './train.ts';

// The long ones heartbeat with their own progress details; the rest heartbeat while they run.
export const activities: OpsrActivities = {
  prepareRun: heartbeating(prepareRun), initPolicy, ensureSampler: heartbeating(ensureSampler),
  releaseSampler: heartbeating(releaseSampler), samplePairs, filterPairs: heartbeating(filterPairs),
  analyzeRewards, buildDataset: heartbeating(buildDataset), trainPolicy, evaluatePolicy,
  writeRoundManifest: heartbeating(writeRoundManifest), writeRunReport: heartbeating(writeRunReport),
  findFinishedRun: heartbeating(findFinishedRun), writeStudyReport: heartbeating(writeStudyReport),
};

export {
  prepareRun, initPolicy, ensureSampler, releaseSampler, samplePairs, filterPairs,
  analyzeRewards, buildDataset, trainPolicy, evaluatePolicy, writeRoundManifest, writeRunReport,
  findFinishedRun, writeStudyReport,
};
// Stops a server this worker process started (embedded or managed vLLM); workers call it on shutdown.
export { releaseLocal as stopLocalSampler } from './sampler-pool.ts';
