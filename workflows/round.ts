// One round of only-prompting self-rewarding: the reference policy answers every prompt with the
// chosen prefix and with this round's rejected prefix, the pairs are filtered, tokenized and
// train the policy. The trained model is the next round's reference and sampler.
import {
  ApplicationFailure, CancellationScope, getExternalWorkflowHandle, setHandler, setCurrentDetails, upsertSearchAttributes,
  workflowInfo,
} from '@temporalio/workflow';
import type { RoundInput, RoundSummary, RunProgress } from '../contracts/workflows.ts';
import { progressQuery, SEARCH_ATTRIBUTES } from '../contracts/workflows.ts';
import { activityProgressSignal, roundPhaseSignal, type Phase } from '../contracts/progress.ts';
import { opsrActivities } from './activities.ts';

export async function preferenceRound(input: RoundInput): Promise<RoundSummary> {
  const { runId, round, config, rejectedScore } = input;
  const act = opsrActivities(config.activities, input.tuning);
  const roundDir = `${input.runDir}/round-${round}`;
  const self = workflowInfo().workflowId;
  const progress: RunProgress = {
    runId, phase: 'pending', round, rounds: config.rounds, rejectedScore,
    sampled: { done: 0, total: 0 }, train: { step: 0, totalSteps: 0 }, completed: [], stopRequested: false,
  };
  setHandler(progressQuery, () => progress);
  const details = () => setCurrentDetails(`**${runId}** round ${round}/${config.rounds}, rejected score ${rejectedScore}: `
    + `**${progress.phase}**\n\nsampled ${progress.sampled.done}/${progress.sampled.total}, `
    + `train step ${progress.train.step}/${progress.train.totalSteps}`);
  setHandler(activityProgressSignal, (p) => {
    if (p.kind === 'sampling') progress.sampled = { done: p.done, total: p.total };
    else progress.train = { step: p.step, totalSteps: p.totalSteps };
    details();
  });

  const parent = input.parentWorkflowId ? getExternalWorkflowHandle(input.parentWorkflowId) : null;
  async function enter(phase: Phase): Promise<void> {
    progress.phase = phase;
    upsertSearchAttributes([
      { key: SEARCH_ATTRIBUTES.round, value: round },
      { key: SEARCH_ATTRIBUTES.phase, value: phase },
      { key: SEARCH_ATTRIBUTES.rejectedScore, value: rejectedScore },
    ]);
    details();
    if (parent) await parent.signal(roundPhaseSignal, { round, phase });
  }
  // Sampling and training report to this round and straight to the run, which shows them live.
  const notify = input.parentWorkflowId ? [self, input.parentWorkflowId] : [self];

  await enter('serving');
  // Not cancellable while it starts: a server started for a cancelled run must still be released.
  const endpoint = await CancellationScope.nonCancellable(
    () => act.ensureSampler({ runId, modelDir: input.referenceModelDir, sampling: config.sampling }));

  let samples;
  try {
    await enter('sampling');
    samples = await act.samplePairs({
      runId, round, roundDir, promptsFile: input.promptsFile, endpoint, sampling: config.sampling,
      prefixes: config.prefixes, chosenScore: config.prefixes.chosenScore, rejectedScore, notify,
    });
  } finally {
    // The reference's server is done once its answers are in; free its memory for training.
    await CancellationScope.nonCancellable(() => act.releaseSampler({ runId, endpoint }));
  }
  progress.sampled = { done: samples.count, total: samples.count };

  await enter('filtering');
  const pairs = await act.filterPairs({ runId, round, roundDir, samplesFile: samples.samplesFile, filter: config.filter });

  let rewards = null;
  if (config.rewardModel) {
    await enter('analysis');
    rewards = await act.analyzeRewards({
      runId, round, roundDir, pairsFile: pairs.pairsFile, rewardModel: config.rewardModel, notify,
    });
  }

  await enter('dataset');
  const dataset = await act.buildDataset({
    runId, round, roundDir, pairsFile: pairs.pairsFile, modelDir: input.referenceModelDir, training: config.training,
  });
  if (dataset.records === 0) {
    throw ApplicationFailure.nonRetryable(
      `round ${round}: no training pairs left (${samples.count} sampled, ${pairs.filtered} filtered: `
      + `${JSON.stringify(pairs.filteredBy)}); loosen filter.* or raise sampling.maxTokens`, 'NoTrainingData');
  }

  await enter('training');
  const trained = await act.trainPolicy({
    runId, round, roundDir, referenceModelDir: input.referenceModelDir, dataFile: dataset.dataFile,
    training: config.training, learningRate: input.learningRate, notify,
  });
  progress.train = { step: trained.steps, totalSteps: trained.steps };

  const artifacts: Record<string, string> = {
    samples: samples.samplesFile, pairs: pairs.pairsFile, dataset: dataset.trlFile, data: dataset.dataFile,
    model: trained.modelDir, // hashed as a directory: weights, config and tokenizer files
  };
  if (rewards) artifacts.rewards = rewards.rewardsFile;
  const manifest = await act.writeRoundManifest({
    runId, round, roundDir, configHash: input.configHash, referenceModelDir: input.referenceModelDir, rejectedScore,
    artifacts,
    counts: { prompts: samples.count, kept: pairs.kept, filtered: pairs.filtered, records: dataset.records,
      truncated: dataset.truncated, steps: trained.steps },
    metrics: trained.metrics,
  });
  await enter('done');
  return {
    round, rejectedScore, pairsKept: pairs.kept, pairsFiltered: pairs.filtered, filteredBy: pairs.filteredBy,
    chosenReward: rewards?.chosenMean ?? null, rejectedReward: rewards?.rejectedMean ?? null, policyReward: null,
    train: trained.metrics, modelDir: trained.modelDir, manifest: manifest.manifest,
  };
}
