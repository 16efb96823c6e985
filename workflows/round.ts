// One round of only-prompting self-rewarding: the reference policy answers every prompt with the
// chosen prefix and with this round's rejected prefix, the pairs are filtered, tokenized and
// train the policy. The trained model is the next round's reference and sampler.
import {
  ApplicationFailure,
  CancellationScope,
  getExternalWorkflowHandle,
  setHandler,
  setCurrentDetails,
  upsertSearchAttributes,
  workflowInfo,
} from '@temporalio/workflow';
import type { RoundInput, RoundSummary, RunProgress } from '../contracts/workflows.ts';
import type { RoundCost, RoundSamplingCost } from '../contracts/activities.ts';
import { progressQuery, SEARCH_ATTRIBUTES } from '../contracts/workflows.ts';
import { activityProgressSignal, roundPhaseSignal, type Phase } from '../contracts/progress.ts';
import { opsrActivities } from './activities.ts';

export async function preferenceRound(input: RoundInput): Promise<RoundSummary> {
  const { runId, round, config, rejectedScore } = input;
  const act = opsrActivities(config.activities, input.tuning);
  const roundDir = `${input.runDir}/round-${round}`;
  const self = workflowInfo().workflowId;
  const progress: RunProgress = {
    runId,
    phase: 'pending',
    round,
    rounds: config.rounds,
    rejectedScore,
    sampled: { done: 0, total: 0 },
    train: { step: 0, totalSteps: 0 },
    completed: [],
    stopRequested: false,
  };
  setHandler(progressQuery, () => progress);
  const details = () =>
    setCurrentDetails(
      `**${runId}** round ${round}/${config.rounds}, rejected score ${rejectedScore}: ` +
        `**${progress.phase}**\n\nsampled ${progress.sampled.done}/${progress.sampled.total}, ` +
        `train step ${progress.train.step}/${progress.train.totalSteps}`,
    );
  setHandler(activityProgressSignal, (p) => {
    if (p.kind === 'sampling') progress.sampled = { done: p.done, total: p.total };
    else progress.train = { step: p.step, totalSteps: p.totalSteps };
    details();
  });

  const parent = input.parentWorkflowId ? getExternalWorkflowHandle(input.parentWorkflowId) : null;
  // Wall time per phase from workflow time (replay-safe): a phase ends where the next begins.
  const began: [Phase, number][] = [];
  async function enter(phase: Phase): Promise<void> {
    began.push([phase, Date.now()]);
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
  const endpoint = await CancellationScope.nonCancellable(() =>
    act.ensureSampler({ runId, modelDir: input.referenceModelDir, sampling: config.sampling }),
  );

  let samples: { samplesFile: string; count: number; cost?: RoundSamplingCost };
  let dropped: RoundSummary['dropped'];
  try {
    await enter('sampling');
    // `pairs` is absent from configs recorded before self-judge pairs: those are prefix rounds.
    const pairsCfg = config.pairs as RoundInput['config']['pairs'] | undefined;
    if (pairsCfg?.source === 'self-judge') {
      const judged = await act.sampleSelfJudgedPairs({
        runId,
        round,
        roundDir,
        promptsFile: input.promptsFile,
        endpoint,
        sampling: config.sampling,
        pairs: pairsCfg,
        judge: pairsCfg.judge === 'policy' ? null : config.judges[pairsCfg.judge],
        cacheDir: `${config.storage}/judge-cache`,
        notify,
      });
      dropped = judged.dropped;
      samples = judged;
    } else {
      samples = await act.samplePairs({
        runId,
        round,
        roundDir,
        promptsFile: input.promptsFile,
        endpoint,
        sampling: config.sampling,
        prefixes: config.prefixes,
        chosenScore: config.prefixes.chosenScore,
        rejectedScore,
        notify,
      });
    }
  } finally {
    // The reference's server is done once its answers are in; free its memory for training.
    await CancellationScope.nonCancellable(() => act.releaseSampler({ runId, endpoint }));
  }
  progress.sampled = { done: samples.count, total: samples.count };

  await enter('filtering');
  const pairs = await act.filterPairs({
    runId,
    round,
    roundDir,
    samplesFile: samples.samplesFile,
    filter: config.filter,
  });

  let rewards = null;
  if (config.rewardModel) {
    await enter('analysis');
    rewards = await act.analyzeRewards({
      runId,
      round,
      roundDir,
      pairsFile: pairs.pairsFile,
      rewardModel: config.rewardModel,
      notify,
    });
  }

  await enter('dataset');
  const dataset = await act.buildDataset({
    runId,
    round,
    roundDir,
    pairsFile: pairs.pairsFile,
    modelDir: input.referenceModelDir,
    training: config.training,
  });
  if (dataset.records === 0) {
    throw ApplicationFailure.nonRetryable(
      `round ${round}: no training pairs left (${samples.count} sampled, ` +
        `${pairs.filtered} filtered: ` +
        `${JSON.stringify(pairs.filteredBy)}); loosen filter.* or raise sampling.maxTokens`,
      'NoTrainingData',
    );
  }

  await enter('training');
  const trained = await act.trainPolicy({
    runId,
    round,
    roundDir,
    referenceModelDir: input.referenceModelDir,
    dataFile: dataset.dataFile,
    training: config.training,
    learningRate: input.learningRate,
    notify,
  });
  progress.train = { step: trained.steps, totalSteps: trained.steps };

  const artifacts: Record<string, string> = {
    samples: samples.samplesFile,
    pairs: pairs.pairsFile,
    dataset: dataset.trlFile,
    data: dataset.dataFile,
    model: trained.modelDir, // hashed as a directory: weights, config and tokenizer files
  };
  if (rewards) artifacts.rewards = rewards.rewardsFile;
  const cost = roundCost(samples.cost, began, Date.now(), pairs.kept);
  const manifest = await act.writeRoundManifest({
    runId,
    round,
    roundDir,
    configHash: input.configHash,
    referenceModelDir: input.referenceModelDir,
    rejectedScore,
    artifacts,
    counts: {
      prompts: samples.count,
      kept: pairs.kept,
      filtered: pairs.filtered,
      records: dataset.records,
      truncated: dataset.truncated,
      steps: trained.steps,
      ...(dropped ? { droppedTie: dropped.tie, droppedUnparsable: dropped.unparsable } : {}),
    },
    metrics: trained.metrics,
    cost,
  });
  await enter('done');
  return {
    round,
    rejectedScore,
    pairsKept: pairs.kept,
    pairsFiltered: pairs.filtered,
    filteredBy: pairs.filteredBy,
    chosenReward: rewards?.chosenMean ?? null,
    rejectedReward: rewards?.rejectedMean ?? null,
    policyReward: null,
    train: trained.metrics,
    modelDir: trained.modelDir,
    manifest: manifest.manifest,
    cost,
    ...(dropped ? { dropped } : {}),
  };
}

// Tokens and requests of the round's pairs, wall time per phase (each until the next began, the
// last until `end`), and tokens per pair kept after filtering: OPSR's 2 generations and no judge
// against the self-rewarding baseline's N candidates and N judgements.
function roundCost(
  s: RoundSamplingCost | undefined,
  began: [Phase, number][],
  end: number,
  kept: number,
): RoundCost {
  const sampling = s?.sampling ?? { requests: 0, tokens: 0 };
  const judging = s?.judging ?? { requests: 0, cached: 0, tokens: 0 };
  const wallS: Record<string, number> = {};
  began.forEach(([phase, t], i) => {
    wallS[phase] = ((i + 1 < began.length ? began[i + 1][1] : end) - t) / 1000;
  });
  const tokensPerKeptPair = kept ? (sampling.tokens + judging.tokens) / kept : null;
  return { sampling, judging, wallS, tokensPerKeptPair };
}
