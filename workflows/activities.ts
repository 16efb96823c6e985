// Activity proxies per task queue. Sampling and training heartbeat, so a dead worker is noticed
// within the heartbeat timeout and the retry (on any worker) resumes from durable shards or the
// newest checkpoint. Bad input is not retried.
import { proxyActivities, ActivityCancellationType } from '@temporalio/workflow';
import type { RetryPolicy } from '@temporalio/common';
import type { OpsrActivities } from '../contracts/activities.ts';
import { NON_RETRYABLE_ERRORS } from '../contracts/activities.ts';
import { TASK_QUEUES, type WorkflowTuning } from '../contracts/workflows.ts';
import type { RunConfig } from '../config/schema.ts';

type ActivityPolicy = RunConfig['activities'];
// The run config's defaults, for rounds recorded before the config had `activities`.
const DEFAULT_POLICY: ActivityPolicy = {
  heartbeatTimeoutS: { control: 60, sampler: 120, trainer: 300 },
  retry: { initialIntervalS: 1, maximumIntervalS: 60, backoffCoefficient: 2, maximumAttempts: 10 },
};

export function opsrActivities(policy: ActivityPolicy | undefined, tuning: WorkflowTuning = {}) {
  const p = policy ?? DEFAULT_POLICY;
  const retry: RetryPolicy = {
    initialInterval: tuning.retry?.initialIntervalMs ?? p.retry.initialIntervalS * 1000,
    backoffCoefficient: p.retry.backoffCoefficient,
    maximumInterval: tuning.retry?.maximumIntervalMs ?? p.retry.maximumIntervalS * 1000,
    // 0 (config) is unlimited: the SDK's "not set".
    maximumAttempts: (tuning.retry?.maximumAttempts ?? p.retry.maximumAttempts) || undefined,
    nonRetryableErrorTypes: [...NON_RETRYABLE_ERRORS],
  };
  const heartbeat = (queue: 'control' | 'sampler' | 'trainer') =>
    (tuning.heartbeatTimeoutS?.[queue] ?? p.heartbeatTimeoutS[queue]) * 1000;
  // Every activity heartbeats, so a worker that dies inside one is noticed within its queue's
  // heartbeat timeout; the start-to-close bounds only catch a live worker that hangs.
  const control = proxyActivities<OpsrActivities>({
    taskQueue: TASK_QUEUES.control,
    startToCloseTimeout: '30m',
    retry,
    heartbeatTimeout: heartbeat('control'),
  });
  // Starting vLLM on a big model takes minutes: it heartbeats while it waits for /health.
  const samplerLifecycle = proxyActivities<OpsrActivities>({
    taskQueue: TASK_QUEUES.sampler,
    startToCloseTimeout: '30m',
    retry,
    heartbeatTimeout: heartbeat('sampler'),
  });
  const sampler = proxyActivities<OpsrActivities>({
    taskQueue: TASK_QUEUES.sampler,
    startToCloseTimeout: '24h',
    retry,
    heartbeatTimeout: heartbeat('sampler'),
  });
  // Waiting for the cancellation to complete lets the activity stop the engine (SIGTERM, it
  // checkpoints the last step) before the workflow closes.
  const trainer = proxyActivities<OpsrActivities>({
    taskQueue: TASK_QUEUES.trainer,
    startToCloseTimeout: '7d',
    retry,
    heartbeatTimeout: heartbeat('trainer'),
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
