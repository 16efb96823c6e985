// Names shared by workflows, workers and clients (CLI, Web UI users, schedules).
// Importable from workflow code (no Node APIs here).
import { defineQuery, defineSignal } from '@temporalio/workflow';
import { defineSearchAttributeKey } from '@temporalio/common';
import type { RunConfig } from '../config/schema.ts';
import type { Phase } from './progress.ts';
import type { JudgedSummaryRow, RoundCost } from './results.ts';
import type { JudgedEvalResult, PrepareRunResult } from './activities.ts';

export const TASK_QUEUES = {
  control: 'opsr-control', // workflows and light activities (filter, dataset, manifests)
  sampler: 'opsr-sampler', // sampling and reward analysis: talk to inference servers
  trainer: 'opsr-trainer', // the engine: run this worker where the accelerator is
} as const;

export const WORKFLOW_TYPES = {
  run: 'preferenceRun',
  round: 'preferenceRound',
  ablation: 'ablationStudy',
} as const;

export interface RoundSummary {
  round: number;
  rejectedScore: number;
  pairsKept: number;
  pairsFiltered: number;
  filteredBy: Record<string, number>;
  chosenReward: number | null; // mean reward-model score of chosen answers (analysis, optional)
  rejectedReward: number | null;
  // mean reward of the trained policy's unprefixed answers (eval, optional)
  policyReward: number | null;
  train: Record<string, number>; // last logged engine metrics (TRL names)
  modelDir: string; // the round's trained policy
  manifest: string; // path of the round manifest
  cost?: RoundCost; // absent in rounds recorded before cost accounting
  dropped?: { tie: number; unparsable: number }; // self-judge pairs: prompts without a pair
}

export interface RunProgress {
  runId: string;
  phase: Phase;
  round: number; // current round, 0 during init
  rounds: number; // M
  rejectedScore: number | null;
  sampled: { done: number; total: number };
  train: { step: number; totalSteps: number };
  completed: RoundSummary[];
  stopRequested: boolean;
}

export const progressQuery = defineQuery<RunProgress>('progress');
export const stopAfterRoundSignal = defineSignal('stopAfterRound');

// Typed search attributes, registered on the dev server by `opsr dev` and the tests.
export const SEARCH_ATTRIBUTES = {
  round: defineSearchAttributeKey('OpsrRound', 'INT'),
  phase: defineSearchAttributeKey('OpsrPhase', 'KEYWORD'),
  rejectedScore: defineSearchAttributeKey('OpsrRejectedScore', 'INT'),
} as const;

// What preferenceRun returns (and writes as report.json).
export interface RunResult {
  runId: string;
  runDir: string;
  configHash: string;
  rounds: RoundSummary[];
  finalModel: string;
  baseReward: number | null; // held-out reward before round 1
  prefixCurve: { score: number; meanReward: number }[] | null; // round-1 reference, prefix scores
  stopped: boolean; // stopAfterRound ended it early
  judged?: JudgedSummaryRow[] | null; // judge-based evaluations (evals), LC refitted jointly
}

// One arm's per-round metrics in an ablation study, side by side with the others.
export interface AblationResult {
  studyId: string;
  seeds?: number[]; // absent: one run per arm with the arm's own seeds (studies before seeds)
  // One entry per arm and seed (seed null without `seeds`); `reused`: a finished run of an
  // earlier attempt of this study, not run again.
  arms: {
    name: string;
    seed?: number | null;
    workflowId: string;
    result: RunResult;
    reused?: boolean;
  }[];
  table: {
    // the first seed's runs side by side
    round: number;
    arms: Record<
      string,
      {
        rejectedScore: number;
        pairsKept: number;
        chosenReward: number | null;
        rejectedReward: number | null;
        policyReward: number | null;
        loss: number | null;
      }
    >;
  }[];
  summary?: StudySummary; // over seeds (absent in studies before seeds)
  // writeStudyReport's files
  report?: { json: string; markdown: string; html: string; history: string };
}

// A seeded study's summary (report/summary.ts computes it, report/stats.ts the statistics).
export interface Stats {
  n: number;
  mean: number | null;
  sd: number | null; // sample standard deviation (n - 1); null below 2 values
}

export interface Interval extends Stats {
  lo: number | null; // 95% confidence interval of the mean; null below 2 values
  hi: number | null;
}

export const STUDY_METRICS = [
  'policyReward',
  'chosenReward',
  'rejectedReward',
  'pairsKept',
  'pairsFiltered',
  'winRate', // judged against the base policy (the runs' first pairwise eval set)
  'lcWinRate',
  'tokensPerKeptPair', // sampling + judging tokens per kept pair
] as const;
export type StudyMetric = (typeof STUDY_METRICS)[number];

export interface StudySummary {
  arms: string[];
  seeds: (number | null)[];
  rounds: number[]; // 0 = the base policy (policy reward only), then 1..M
  cells: {
    // one per arm and round
    arm: string;
    round: number;
    rejectedScores: number[]; // distinct scores over seeds (one, unless an arm's schedule varies)
    stats: Record<StudyMetric, Stats>;
    // Mean over seeds of each run's own standard error (win rates; absent before win rates).
    standardError?: { winRate: number | null; lcWinRate: number | null };
  }[];
  // The pairwise set behind winRate / lcWinRate and which LC model gave lcWinRate (a study
  // refits it jointly over the base and every round's policy of every arm and seed).
  judged?: { set: string; lcVariant: string | null };
  diffs: {
    // arm minus the first arm, paired by seed
    arm: string;
    versus: string;
    round: number;
    metric: StudyMetric;
    diff: Interval;
  }[];
}

// Optional second argument of preferenceRun/ablationStudy: activity timing over the run config's
// `activities` (the place to set it). Tests shorten it so a killed worker's activity is retried
// within seconds.
export interface WorkflowTuning {
  heartbeatTimeoutS?: { control?: number; sampler?: number; trainer?: number };
  retry?: { initialIntervalMs?: number; maximumIntervalMs?: number; maximumAttempts?: number };
  // History events after which a run continues as new between rounds (default
  // RUN_HISTORY_EVENTS); tests lower it to exercise continue-as-new in a few rounds.
  historyEvents?: number;
}

// A preferenceRun's execution continues as new between rounds once its history reaches this many
// events (or Temporal suggests it): a round adds about 250 events to the run's own history
// whatever its shards and steps, so every execution stays near 2,000 events, far below
// Temporal's warning at 10,240, however many rounds the run has.
export const RUN_HISTORY_EVENTS = 2000;

// What a run carries into its next execution: what the later rounds and the final result need.
export interface RunCarry {
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

// preferenceRound's input: everything a round needs, resolved by the parent run.
export interface RoundInput {
  runId: string;
  round: number;
  runDir: string;
  configHash: string;
  promptsFile: string;
  config: RunConfig;
  referenceModelDir: string; // the policy that samples this round and is DPO's reference
  rejectedScore: number;
  learningRate: number;
  parentWorkflowId: string | null; // gets roundPhase and activityProgress signals
  tuning?: WorkflowTuning;
}
