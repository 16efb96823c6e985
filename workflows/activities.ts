// Activity proxies per task queue. Sampling and training heartbeat, so a dead worker is noticed
// within the heartbeat timeout and the retry (on any worker) resumes from durable shards or the
// newest checkpoint. Bad input is not retried.
import { proxyActivities, ActivityCancellationType } from '@temporalio/workflow';
import type { RetryPolicy } from '@temporalio/common';
import type { OpsrActivities } from '../contracts/activities.ts';
import { NON_RETRYABLE_ERRORS } from '../contracts/activities.ts';
import { TASK_QUEUES, type WorkflowTuning } from '../contracts/workflows.ts';

export function opsrActivities(tuning: WorkflowTuning = {}) {
  const retry: RetryPolicy = {
    initialInterval: tuning.retry?.initialIntervalMs ?? 1000,
    backoffCoefficient: 2,
    maximumInterval: tuning.retry?.maximumIntervalMs ?? 60_000,
    maximumAttempts: tuning.retry?.maximumAttempts ?? 10,
    nonRetryableErrorTypes: [...NON_RETRYABLE_ERRORS],
  };
  const control = proxyActivities<OpsrActivities>({
    taskQueue: TASK_QUEUES.control, startToCloseTimeout: '30m', retry,
  });
  // Starting vLLM on a big model takes minutes; no heartbeat, a generous bound instead.
  const samplerLifecycle = proxyActivities<OpsrActivities>({
    taskQueue: TASK_QUEUES.sampler, startToCloseTimeout: '30m', retry,
  });
  const sampler = proxyActivities<OpsrActivities>({
    taskQueue: TASK_QUEUES.sampler, startToCloseTimeout: '24h', retry,
    heartbeatTimeout: (tuning.heartbeatTimeoutS?.sampler ?? 120) * 1000,
  });
  // Waiting for the cancellation to complete lets the activity stop the engine (SIGTERM, it
  // checkpoints the last step) before the workflow closes.
  const trainer = proxyActivities<OpsrActivities>({
    taskQueue: TASK_QUEUES.trainer, startToCloseTimeout: '7d', retry,
    heartbeatTimeout: (tuning.heartbeatTimeoutS?.trainer ?? 300) * 1000,
    cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
  });
  return {
    prepareRun: control.prepareRun,
    filterPairs: control.filterPairs,
    buildDataset: control.buildDataset,
    writeRoundManifest: control.writeRoundManifest,
    writeRunReport: control.writeRunReport,
    findFinishedRun: control.findFinishedRun,
    writeStudyReport: control.writeStudyReport,
    summarizeJudgedEvals: control.summarizeJudgedEvals,
    ensureSampler: samplerLifecycle.ensureSampler,
    releaseSampler: samplerLifecycle.releaseSampler,
    samplePairs: sampler.samplePairs,
    analyzeRewards: sampler.analyzeRewards,
    evaluatePolicy: sampler.evaluatePolicy,
    evaluateJudged: sampler.evaluateJudged,
    sampleSelfJudgedPairs: sampler.sampleSelfJudgedPairs,
    initPolicy: trainer.initPolicy,
    trainPolicy: trainer.trainPolicy,
  } satisfies OpsrActivities;
}
