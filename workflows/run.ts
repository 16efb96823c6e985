// A whole only-prompting self-rewarding run: validate the config, prepare the run directory,
// the optional init stage (paper 3.2), then rounds 1..M as child workflows, each trained policy
// becoming the next round's reference and sampler. Held-out evaluation when configured.
import {
  ApplicationFailure,
  CancellationScope,
  continueAsNew,
  executeChild,
  isCancellation,
  patched,
  setCurrentDetails,
  setHandler,
  upsertSearchAttributes,
  workflowInfo,
} from '@temporalio/workflow';
import { ConfigError } from '../config/errors.ts';
import { isSafeId, parseRunConfig, SAFE_ID, type RunConfig } from '../config/schema.ts';
import type {
  EvaluatePolicyResult,
  JudgedEvalResult,
  PrepareRunResult,
  SamplerEndpoint,
} from '../contracts/activities.ts';
import type {
  RoundSummary,
  RunProgress,
  RunResult,
  WorkflowTuning,
} from '../contracts/workflows.ts';
import {
  progressQuery,
  RUN_HISTORY_EVENTS,
  SEARCH_ATTRIBUTES,
  stopAfterRoundSignal,
  TASK_QUEUES,
} from '../contracts/workflows.ts';
import { activityProgressSignal, roundPhaseSignal, type Phase } from '../contracts/progress.ts';
import { opsrActivities } from './activities.ts';
import { preferenceRound } from './round.ts';

// Config problems are the user's to fix: fail the workflow once, with every message.
function validateRunConfig(input: unknown): RunConfig {
  try {
    return parseRunConfig(input, { source: 'workflow input' });
  } catch (err) {
    if (err instanceof ConfigError)
      throw ApplicationFailure.nonRetryable(err.message, 'ConfigError', ...err.issues);
    throw ApplicationFailure.nonRetryable(`workflow input: ${String(err)}`, 'ConfigError');
  }
}

// A run's id (its directory name): the config's runId, else its workflow id with '/' (opsr's
// child ids) and ':' (the UTC time a Temporal Schedule appends: `<id>-2026-11-30T02:00:00Z`) as
// '-'. One derived from a workflow id (whoever started it) must be a safe directory name too, or
// the run fails once, saying so.
export function runIdOf(config: RunConfig, workflowId: string): string {
  if (config.runId !== undefined) return config.runId;
  const id = workflowId.replaceAll('/', '-').replaceAll(':', '-');
  if (!isSafeId(id)) {
    throw ApplicationFailure.nonRetryable(
      `workflow id ${JSON.stringify(workflowId.slice(0, 200))} becomes the run id ` +
        (`${JSON.stringify(id.slice(0, 200))}, a directory name: allowed ${SAFE_ID}; ` +
          `set runId in the config or start `) +
        'the workflow with such an id',
      'ConfigError',
    );
  }
  return id;
}

// What a run carries into its next execution: what the later rounds and the final result need.
interface RunCarry {
  prep: PrepareRunResult;
  nextRound: number;
  policy: string; // the latest trained policy: the next round's reference
  basePolicy: string; // the policy before round 1 (pairwise evals against "base")
  rounds: RoundSummary[];
  baseReward: number | null;
  prefixCurve: RunResult['prefixCurve'];
  judged: JudgedEvalResult[];
  stopRequested: boolean;
}

// A run's history stays bounded whatever its rounds: between rounds, once its history is long, it
// continues as new with `carry` (what finished rounds left for the rest). Under the same workflow
// id, so the progress query, the stopAfterRound signal, cancellation and the round workflows'
// ids (`<runId>/round-<k>`) reach the same run.
export async function preferenceRun(
  input: unknown,
  tuning: WorkflowTuning = {},
  carry?: RunCarry,
): Promise<RunResult> {
  const config = validateRunConfig(input);
  const self = workflowInfo().workflowId;
  const runId = runIdOf(config, self);
  const act = opsrActivities(config.activities, tuning);
  const schedule = config.prefixes.rejectedScores;

  const progress: RunProgress = {
    runId,
    phase: 'pending',
    round: 0,
    rounds: config.rounds,
    rejectedScore: null,
    sampled: { done: 0, total: 0 },
    train: { step: 0, totalSteps: 0 },
    completed: carry?.rounds.slice() ?? [],
    stopRequested: carry?.stopRequested ?? false,
  };
  let baseReward: number | null = carry?.baseReward ?? null;
  const show = (phase: Phase): void => {
    progress.phase = phase;
    upsertSearchAttributes([
      { key: SEARCH_ATTRIBUTES.round, value: progress.round },
      { key: SEARCH_ATTRIBUTES.phase, value: phase },
      ...(progress.rejectedScore === null
        ? []
        : [{ key: SEARCH_ATTRIBUTES.rejectedScore, value: progress.rejectedScore }]),
    ]);
    setCurrentDetails(runDetails(progress, baseReward));
  };
  setHandler(progressQuery, () => progress);
  setHandler(stopAfterRoundSignal, () => {
    progress.stopRequested = true;
    setCurrentDetails(runDetails(progress, baseReward));
  });
  setHandler(roundPhaseSignal, ({ round, phase }) => {
    // A round's 'done' is not the run's: the run evaluates and reports after it. Patched, so runs
    // recorded before the change still replay.
    if (round === progress.round && (phase !== 'done' || !patched('run-ignores-round-done')))
      show(phase);
  });
  setHandler(activityProgressSignal, (p) => {
    if (p.round !== progress.round) return;
    if (p.kind === 'sampling') progress.sampled = { done: p.done, total: p.total };
    else progress.train = { step: p.step, totalSteps: p.totalSteps };
    setCurrentDetails(runDetails(progress, baseReward)); // not a command: costs no history events
  });

  if (!carry) show('pending');
  const prep = carry?.prep ?? (await act.prepareRun({ runId, config }));
  let policy = carry?.policy ?? prep.baseModel;
  let endpoint: SamplerEndpoint | null = null;
  // Serves `modelDir` (replacing what was served) and evaluates it on the held-out prompts.
  const evaluate = async (
    label: string,
    modelDir: string,
    prefixCurve: boolean,
  ): Promise<EvaluatePolicyResult | null> => {
    if (!config.evaluation || !config.rewardModel) return null;
    // Not cancellable while it starts, so the finally below can release what it started.
    endpoint = await CancellationScope.nonCancellable(() =>
      act.ensureSampler({ runId, modelDir, sampling: config.sampling }),
    );
    return act.evaluatePolicy({
      runId,
      label,
      runDir: prep.runDir,
      endpoint,
      evaluation: config.evaluation,
      sampling: config.sampling,
      prefixes: config.prefixes,
      rewardModel: config.rewardModel,
      prefixCurve,
      notify: [self],
    });
  };

  // Judge-based evaluations (config evals) of the policy after round k (0: before round 1).
  // Only runs with evals schedule them, so histories recorded before them replay unchanged.
  const judged: JudgedEvalResult[] = carry?.judged.slice() ?? [];
  let basePolicy = carry?.basePolicy ?? policy; // what a pairwise reference "base" means
  const judgeEval = async (k: number, label: string, modelDir: string): Promise<void> => {
    const evals = config.evals;
    if (!evals || (evals.rounds !== 'all' && !evals.rounds.includes(k))) return;
    show('evaluating');
    endpoint = await CancellationScope.nonCancellable(() =>
      act.ensureSampler({ runId, modelDir, sampling: config.sampling }),
    );
    for (const configured of evals.sets) {
      const set =
        configured.kind === 'pairwise' && configured.reference === 'base'
          ? { ...configured, reference: { model: basePolicy } }
          : configured;
      judged.push(
        await act.evaluateJudged({
          runId,
          label,
          runDir: prep.runDir,
          cacheDir: `${config.storage}/judge-cache`,
          endpoint,
          sampling: config.sampling,
          set,
          judgeName: set.judge,
          judge: config.judges[set.judge],
          notify: [self],
        }),
      );
    }
  };

  const rounds: RoundSummary[] = carry?.rounds.slice() ?? [];
  let stopped = false;
  let prefixCurve: RunResult['prefixCurve'] = carry?.prefixCurve ?? null;
  let continueAt: number | null = null; // the round the next execution starts with
  try {
    if (!carry && config.init && (config.init.sft || config.init.offline)) {
      show('init');
      const init = await act.initPolicy({
        runId,
        runDir: prep.runDir,
        baseModel: prep.baseModel,
        init: config.init,
        training: config.training,
        notify: [self],
      });
      policy = init.modelDir;
    }
    if (!carry && config.evaluation) {
      show('evaluating');
      const base = await evaluate('base', policy, config.evaluation.prefixCurve);
      baseReward = base?.meanReward ?? null;
      prefixCurve = base?.prefixCurve ?? null;
    }
    if (!carry) {
      basePolicy = policy;
      await judgeEval(0, 'base', policy);
    }

    for (let k = carry?.nextRound ?? 1; k <= config.rounds; k++) {
      progress.round = k;
      progress.rejectedScore = schedule[k - 1];
      progress.sampled = { done: 0, total: 0 };
      progress.train = { step: 0, totalSteps: 0 };
      show('serving');
      const summary = await executeChild(preferenceRound, {
        workflowId: `${runId}/round-${k}`,
        taskQueue: TASK_QUEUES.control,
        args: [
          {
            runId,
            round: k,
            runDir: prep.runDir,
            configHash: prep.configHash,
            promptsFile: prep.promptsFile,
            config,
            referenceModelDir: policy,
            rejectedScore: schedule[k - 1],
            learningRate: config.training.learningRate[k - 1],
            parentWorkflowId: self,
            tuning,
          },
        ],
      });
      policy = summary.modelDir;
      if (config.evaluation) {
        show('evaluating');
        summary.policyReward = (await evaluate(`round-${k}`, policy, false))?.meanReward ?? null;
      }
      await judgeEval(k, `round-${k}`, policy);
      rounds.push(summary);
      progress.completed = rounds.slice();
      if (progress.stopRequested && k < config.rounds) {
        stopped = true;
        break;
      }
      if (k < config.rounds && historyIsLong(tuning, 'run-continue-as-new')) {
        continueAt = k + 1;
        break;
      }
    }
  } catch (err) {
    show(isCancellation(err) ? 'stopped' : 'failed'); // searchable: OpsrPhase="failed"
    throw err;
  } finally {
    // Also on failure and cancellation: a managed vLLM server must not outlive the run.
    const served = endpoint as SamplerEndpoint | null;
    if (served)
      await CancellationScope.nonCancellable(() => act.releaseSampler({ runId, endpoint: served }));
  }

  // After the finally above released this execution's sampler: the next one starts its own.
  if (continueAt !== null) {
    const next: RunCarry = {
      prep,
      nextRound: continueAt,
      policy,
      basePolicy,
      rounds,
      baseReward,
      prefixCurve,
      judged,
      stopRequested: progress.stopRequested,
    };
    return continueAsNew<typeof preferenceRun>(input, tuning, next);
  }

  // LC win rates refitted over every evaluated policy together (instruction difficulty).
  const judgedRows = judged.length
    ? await act.summarizeJudgedEvals({ runDir: prep.runDir, results: judged })
    : null;
  const result: RunResult = {
    runId,
    runDir: prep.runDir,
    configHash: prep.configHash,
    rounds,
    finalModel: policy,
    baseReward,
    prefixCurve,
    stopped,
    ...(judgedRows ? { judged: judgedRows } : {}),
  };
  await act.writeRunReport({ runDir: prep.runDir, result });
  show(stopped ? 'stopped' : 'done');
  return result;
}

// Whether this execution's history is long enough to continue as new (Temporal's suggestion or
// the event budget). Patched, so workflows that went on past the budget before this replay
// unchanged.
export function historyIsLong(tuning: WorkflowTuning, patch: string): boolean {
  const info = workflowInfo();
  const budget = tuning.historyEvents ?? RUN_HISTORY_EVENTS;
  return (info.continueAsNewSuggested || info.historyLength >= budget) && patched(patch);
}

// Markdown for the Web UI's "current details".
function runDetails(p: RunProgress, baseReward: number | null): string {
  const fmt = (x: number | null | undefined) =>
    x === null || x === undefined ? '–' : x.toFixed(4);
  const lines = [
    `### opsr run \`${p.runId}\``,
    `round **${p.round}/${p.rounds}**, phase **${p.phase}**` +
      (p.rejectedScore === null ? '' : `, rejected score **${p.rejectedScore}**`) +
      (p.stopRequested ? ' (stop requested after this round)' : ''),
    `sampled ${p.sampled.done}/${p.sampled.total} · train step ` +
      `${p.train.step}/${p.train.totalSteps}` +
      ` · base reward ${fmt(baseReward)}`,
  ];
  if (p.completed.length) {
    lines.push(
      '',
      '| round | rejected | kept | filtered | chosen | rejected reward | policy | loss |',
      '|---|---|---|---|---|---|---|---|',
    );
    for (const r of p.completed) {
      lines.push(
        `| ${r.round} | ${r.rejectedScore} | ${r.pairsKept} | ${r.pairsFiltered} | ` +
          `${fmt(r.chosenReward)} ` +
          `| ${fmt(r.rejectedReward)} | ${fmt(r.policyReward)} | ${fmt(r.train.loss)} |`,
      );
    }
  }
  return lines.join('\n');
}
