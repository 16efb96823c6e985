// The activities the workers register (names and signatures: contracts/activities.ts OpsrActivities).
import type { OpsrActivities } from '../contracts/activities.ts';
import { analyzeRewards } from './rewards.ts';
import { buildDataset } from './dataset.ts';
import { evaluatePolicy } from './evaluate.ts';
import { evaluateJudged, summarizeJudgedEvals } from './evaluate-judged.ts';
import { filterPairs } from './filter.ts';
import { prepareRun } from './prepare.ts';
import { writeRoundManifest, writeRunReport } from './report.ts';
import { samplePairs } from './sample.ts';
import { sampleSelfJudgedPairs } from './self-judge.ts';
import { findFinishedRun, writeStudyReport } from './study.ts';
import { ensureSampler, releaseSampler } from './sampler.ts';
import { initPolicy, trainPolicy } from './train.ts';

export const activities: OpsrActivities = {
  prepareRun, initPolicy, ensureSampler, releaseSampler, samplePairs, filterPairs,
  analyzeRewards, buildDataset, trainPolicy, evaluatePolicy, writeRoundManifest, writeRunReport,
  findFinishedRun, writeStudyReport, evaluateJudged, summarizeJudgedEvals, sampleSelfJudgedPairs,
};

export {
  prepareRun, initPolicy, ensureSampler, releaseSampler, samplePairs, filterPairs,
  analyzeRewards, buildDataset, trainPolicy, evaluatePolicy, writeRoundManifest, writeRunReport,
  findFinishedRun, writeStudyReport, evaluateJudged, summarizeJudgedEvals, sampleSelfJudgedPairs,
};
// Stops a server this worker process started (embedded or managed vLLM); workers call it on shutdown.
export { releaseLocal as stopLocalSampler } from './sampler.ts';
