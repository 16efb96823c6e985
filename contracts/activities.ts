// The activity interface: what each activity takes and returns. Plain JSON in and out, so a
// workflow (which imports this file with `import type` only) can schedule them on any worker.
//
// Layout of the artifacts (every file written atomically, every activity idempotent: a retry
// or a re-run reuses finished work and never duplicates it):
//   <storage>/runs/<runId>/config.json            resolved config snapshot (prepareRun)
//   <storage>/runs/<runId>/prompts.jsonl          the run's prompt list, limit + shuffle applied
//   <storage>/runs/<runId>/init/                  SFT and offline stages (initPolicy)
//   <storage>/runs/<runId>/eval/<label>/          evaluation answers and rewards (evaluatePolicy)
//   <storage>/runs/<runId>/round-<k>/             samples, pairs, dataset, train/, manifest.json
//   <storage>/runs/<runId>/report.{json,md,html}  the run's result and figures/ (writeRunReport)
//   <storage>/runs/<runId>/tensorboard/           per-step trainer and per-round run scalars
//
// Errors: bad input (config, data, model files) fails with ApplicationFailure type 'BadInput'
// (non-retryable: retrying cannot fix it); a diverged training run with 'NonFiniteLoss';
// everything else is a plain error and is retried by Temporal.
import type { RunConfig } from '../config/schema.ts';
import type { ProgressTarget } from './progress.ts';
import type { JudgedSummaryRow, RoundCost, RoundSamplingCost } from './results.ts';
export type { JudgedSummaryRow, RoundCost, RoundSamplingCost } from './results.ts';
import type { AblationResult, RunResult, StudySummary, TASK_QUEUES } from './workflows.ts';

export type SamplingConfig = RunConfig['sampling'];
export type FilterConfig = RunConfig['filter'];
export type TrainingConfig = RunConfig['training'];
export type InitConfig = NonNullable<RunConfig['init']>;
export type RewardModelConfig = NonNullable<RunConfig['rewardModel']>;
type EvaluationConfig = NonNullable<RunConfig['evaluation']>;

// Failure types the workflows treat as non-retryable.
export const NON_RETRYABLE_ERRORS = ['BadInput', 'NonFiniteLoss', 'ConfigError'] as const;

// ---- prepareRun ------------------------------------------------------------------------------
export interface PrepareRunInput {
  runId: string;
  config: RunConfig; // already validated by the workflow with parseRunConfig
}
export interface PrepareRunResult {
  runId: string;
  runDir: string; // <storage>/runs/<runId> (absolute)
  configHash: string; // sha256 of the canonical resolved config; recorded in every manifest
  configFile: string; // <runDir>/config.json
  promptsFile: string; // <runDir>/prompts.jsonl: {"index","prompt"} or {"index","messages"}
  promptCount: number;
  baseModel: string; // config.model, checked by lib/modeldir.ts checkModelDir
}

// ---- initPolicy (paper 3.2: SFT on seed data, then offline preference optimization) ----------
export interface InitPolicyInput extends ProgressTarget {
  runId: string;
  runDir: string;
  baseModel: string;
  init: InitConfig;
  training: TrainingConfig; // engine path/threads and defaults for fields the init stage leaves out
}
export interface InitStageResult {
  modelDir: string; // the stage's trained model (engine OUT/final)
  records: number;
  metrics: Record<string, number>; // last logged engine metrics
  cached: boolean; // reused from a previous run with the same content hash
}
export interface InitPolicyResult {
  modelDir: string; // the policy that round 1 samples from and uses as reference
  sft: InitStageResult | null;
  offline: InitStageResult | null;
}

// ---- ensureSampler / releaseSampler ----------------------------------------------------------
export interface EnsureSamplerInput {
  runId: string;
  modelDir: string; // the policy to serve
  sampling: SamplingConfig;
}
export interface SamplerEndpoint {
  lifecycle: SamplingConfig['lifecycle'];
  baseURL: string; // OpenAI-compatible, ends with /v1
  model: string; // served model name to put in requests
  modelDir: string; // what it serves. 'embedded' servers live in the sampler worker's process:
  // activities that use the endpoint re-ensure it locally for modelDir when
  // they run in another process or after a worker restart.
}
export interface ReleaseSamplerInput {
  runId: string;
  endpoint: SamplerEndpoint;
}

// ---- samplePairs -----------------------------------------------------------------------------
export interface SamplePairsInput extends ProgressTarget {
  runId: string;
  round: number;
  roundDir: string; // <runDir>/round-<k>
  promptsFile: string;
  endpoint: SamplerEndpoint;
  sampling: SamplingConfig;
  prefixes: RunConfig['prefixes'];
  chosenScore: number;
  rejectedScore: number; // this round's score
}
export interface SamplePairsResult {
  samplesFile: string; // <roundDir>/samples.jsonl: one line per prompt index, in order:
  // {index, prompt|messages, chosen:{text,finish_reason,tokens}, rejected:{...},
  //  chosenScore, rejectedScore, seed}
  count: number; // = number of prompts
  shards: number;
  resumedShards: number; // shards reused from an earlier attempt
  cost?: RoundSamplingCost; // absent in results recorded before cost accounting
}

// ---- filterPairs -----------------------------------------------------------------------------
export interface FilterPairsInput {
  runId: string;
  round: number;
  roundDir: string;
  samplesFile: string;
  filter: FilterConfig;
}
export interface FilterPairsResult {
  pairsFile: string; // <roundDir>/pairs.jsonl (kept samples, same line shape)
  kept: number;
  filtered: number;
  filteredBy: Record<string, number>; // reason -> count: scoreTalk, empty, truncated, identical
}

// ---- analyzeRewards (optional external reward model, paper Fig. 4) -----------------------------
export interface AnalyzeRewardsInput extends ProgressTarget {
  runId: string;
  round: number;
  roundDir: string;
  pairsFile: string;
  rewardModel: RewardModelConfig;
}
export interface RewardSummary {
  rewardsFile: string; // <roundDir>/rewards.jsonl: {index, chosen, rejected}
  count: number;
  chosenMean: number | null; // null when count = 0
  rejectedMean: number | null;
  gap: number | null; // chosenMean - rejectedMean
  chosenBetter: number | null; // fraction of pairs with chosen > rejected
}

// ---- buildDataset ----------------------------------------------------------------------------
export interface BuildDatasetInput {
  runId: string;
  round: number;
  roundDir: string;
  pairsFile: string;
  modelDir: string; // tokenizer and chat template come from here
  training: TrainingConfig; // maxLength / maxPromptLength
}
export interface BuildDatasetResult {
  trlFile: string; // <roundDir>/dataset.jsonl: TRL {prompt, chosen, rejected} + provenance
  dataFile: string; // <roundDir>/dataset.bin: engine preference data (lib/tokdata.ts)
  records: number;
  truncated: number; // pairs whose prompt or responses were cut to the max lengths
}

// ---- trainPolicy -----------------------------------------------------------------------------
export interface TrainPolicyInput extends ProgressTarget {
  runId: string;
  round: number;
  roundDir: string;
  referenceModelDir: string; // the round's reference = the policy that sampled it
  dataFile: string;
  training: TrainingConfig;
  learningRate: number; // this round's (the config may give one per round)
}
export interface TrainPolicyResult {
  modelDir: string; // <roundDir>/train/final: next round's reference and sampler
  outDir: string; // <roundDir>/train
  steps: number;
  resumedFrom: number | null; // checkpoint step a retry resumed from
  metrics: Record<string, number>; // last step's TRL-named metrics
}

// ---- evaluatePolicy --------------------------------------------------------------------------
export interface EvaluatePolicyInput extends ProgressTarget {
  runId: string;
  label: string; // 'base' or 'round-<k>'; output under <runDir>/eval/<label>/
  runDir: string;
  endpoint: SamplerEndpoint; // serving the model to evaluate
  evaluation: EvaluationConfig;
  sampling: SamplingConfig;
  prefixes: RunConfig['prefixes'];
  rewardModel: RewardModelConfig;
  prefixCurve: boolean; // also score answers to prompts prefixed with each of prefixScores
}
export interface PrefixCurvePoint {
  score: number;
  meanReward: number;
}
export interface EvaluatePolicyResult {
  label: string;
  modelDir: string;
  count: number;
  meanReward: number; // unprefixed answers to the held-out prompts
  prefixCurve: PrefixCurvePoint[] | null;
  file: string; // <runDir>/eval/<label>/results.json
}

// ---- writeRoundManifest ----------------------------------------------------------------------
export interface WriteRoundManifestInput {
  runId: string;
  round: number;
  roundDir: string;
  configHash: string;
  referenceModelDir: string;
  rejectedScore: number;
  artifacts: Record<string, string>; // name -> path (samples, pairs, rewards, dataset, model, ...)
  counts: Record<string, number>; // name -> count
  metrics: Record<string, number>;
  cost?: RoundCost; // tokens, requests and wall time per phase
}
export interface WriteRoundManifestResult {
  // <roundDir>/manifest.json: {runId, round, configHash, artifacts: {name: {path, sha256, bytes}},
  // counts, metrics}
  manifest: string;
  sha256: string;
}

// ---- writeRunReport --------------------------------------------------------------------------
export interface WriteRunReportInput {
  runDir: string;
  result: RunResult;
}
export interface WriteRunReportResult {
  json: string; // <runDir>/report.json
  markdown: string; // <runDir>/report.md: per-round table, figures linked
  html: string; // <runDir>/report.html: the same with every figure inline (self-contained)
  figures: string[]; // <runDir>/figures/*.svg
  tensorboard: string; // <runDir>/tensorboard/run/ event file: per-round metrics, step = round
}

// ---- findFinishedRun / writeStudyReport (ablation studies) -----------------------------------
export interface FindFinishedRunInput {
  runId: string;
  config: RunConfig; // the run's config; a finished run counts only if it ran this config
}
export interface WriteStudyReportInput {
  storage: string; // <storage>/studies/<studyId>/ and <storage>/ablation-history.jsonl
  result: AblationResult;
  finishedAt: string; // ISO time, the history's x axis
}
export interface WriteStudyReportResult {
  json: string; // <storage>/studies/<studyId>/report.json (the AblationResult)
  markdown: string; // report.md: Table 2 with error bars, paired differences, figures linked
  html: string; // report.html: the same, figures inline
  history: string; // <storage>/ablation-history.jsonl: one summary line per study id
  // The workflow's, LC win rates refitted over every arm's policies (absent: recorded before).
  summary?: StudySummary;
}

// ---- judge-based evaluation (evaluateJudged, summarizeJudgedEvals) ----------------------------
export type JudgeConfig = RunConfig['judges'][string];
export type EvalSetConfig = NonNullable<RunConfig['evals']>['sets'][number];
type PairsConfig = RunConfig['pairs'];

export interface JudgeUsage {
  requests: number; // sent to the endpoint (cache hits excluded, retried attempts included)
  cached: number; // verdicts read from the verdict cache
  promptTokens: number; // of the requests sent
  completionTokens: number;
}

export interface EvaluateJudgedInput extends ProgressTarget {
  runId: string;
  label: string; // 'base' or 'round-<k>': output under <runDir>/eval/<label>/<set>.json
  runDir: string;
  cacheDir: string; // the judges' verdict cache, shared by runs: <storage>/judge-cache
  endpoint: SamplerEndpoint; // serving the policy to evaluate
  sampling: SamplingConfig;
  set: EvalSetConfig;
  judgeName: string;
  judge: JudgeConfig;
}

interface EvalCost {
  answerRequests: number;
  answerTokens: number; // generated by the policy (and a reference model) for this evaluation
  judge: JudgeUsage;
  wallS: { answering: number; judging: number };
}

export interface OrderBias {
  firstPositionWins: number; // mean P(the answer shown first wins) over both orders: 0.5 = none
  flipRate: number; // share of pairs whose winner changes when the answers swap places
  swappedWinRate: number; // the win rate read from the other order
  pairs: number; // pairs parsable in both orders
}

interface LcResult {
  lcWinRate: number;
  lcStandardError: number;
  variant: 'difficulty' | 'minimal';
  note: string; // which model gave the number, shown next to it
  C: number;
  weights: { length: number; difficulty: number; model: number };
}

export interface PairwiseEvalResult {
  kind: 'pairwise';
  name: string;
  label: string;
  modelDir: string;
  judge: string;
  count: number; // instructions judged
  unparsable: number; // left out of every number
  sources: Record<string, number>; // how verdicts were read: logprobs, text, builtin
  winRate: number;
  standardError: number;
  lc: LcResult | null; // null with fewer than 5 parsable verdicts
  orderBias: OrderBias;
  cost: EvalCost;
  file: string;
  annotationsFile: string; // <set>.jsonl: per instruction verdicts, lengths, answers
}

export interface GradingEvalResult {
  kind: 'grading';
  name: string;
  label: string;
  modelDir: string;
  judge: string;
  questions: number;
  turns: number; // turns rated
  unparsable: number;
  mean: number | null; // over parsable turns
  perCategory: Record<string, { mean: number | null; turns: number; unparsable: number }>;
  cost: EvalCost;
  file: string;
}

export type JudgedEvalResult = PairwiseEvalResult | GradingEvalResult;

export interface SummarizeJudgedInput {
  runDir: string; // writes <runDir>/eval/summary.json
  results: JudgedEvalResult[];
}

// ---- sampleSelfJudgedPairs (the self-rewarding baseline's pairs) ------------------------------
export interface SelfJudgePairsInput extends ProgressTarget {
  runId: string;
  round: number;
  roundDir: string;
  promptsFile: string;
  endpoint: SamplerEndpoint; // the policy: it answers, and judges unless pairs.judge names a judge
  sampling: SamplingConfig;
  pairs: PairsConfig;
  judge: JudgeConfig | null; // null: the policy judges with the rubric prompt
  cacheDir: string;
}
export interface SelfJudgePairsResult {
  samplesFile: string; // <roundDir>/samples.jsonl: kept pairs, SampleRecord lines (scores = points)
  candidatesFile: string; // <roundDir>/candidates.jsonl: every candidate with its rubric score
  prompts: number;
  count: number; // pairs kept (best and worst differ)
  dropped: { tie: number; unparsable: number };
  cost: RoundSamplingCost;
}

// The activities createActivities (activities/index.ts) builds.
export interface OpsrActivities {
  prepareRun: (input: PrepareRunInput) => Promise<PrepareRunResult>;
  initPolicy: (input: InitPolicyInput) => Promise<InitPolicyResult>;
  ensureSampler: (input: EnsureSamplerInput) => Promise<SamplerEndpoint>;
  releaseSampler: (input: ReleaseSamplerInput) => Promise<void>;
  samplePairs: (input: SamplePairsInput) => Promise<SamplePairsResult>;
  filterPairs: (input: FilterPairsInput) => Promise<FilterPairsResult>;
  analyzeRewards: (input: AnalyzeRewardsInput) => Promise<RewardSummary>;
  buildDataset: (input: BuildDatasetInput) => Promise<BuildDatasetResult>;
  trainPolicy: (input: TrainPolicyInput) => Promise<TrainPolicyResult>;
  evaluatePolicy: (input: EvaluatePolicyInput) => Promise<EvaluatePolicyResult>;
  evaluateJudged: (input: EvaluateJudgedInput) => Promise<JudgedEvalResult>;
  summarizeJudgedEvals: (input: SummarizeJudgedInput) => Promise<JudgedSummaryRow[]>;
  sampleSelfJudgedPairs: (input: SelfJudgePairsInput) => Promise<SelfJudgePairsResult>;
  writeRoundManifest: (input: WriteRoundManifestInput) => Promise<WriteRoundManifestResult>;
  writeRunReport: (input: WriteRunReportInput) => Promise<WriteRunReportResult>;
  findFinishedRun: (input: FindFinishedRunInput) => Promise<RunResult | null>;
  writeStudyReport: (input: WriteStudyReportInput) => Promise<WriteStudyReportResult>;
}

// Which worker runs which activity: sampler-side work talks to inference servers, the trainer
// owns the engine, everything else is light file work on the control queue.
export const ACTIVITY_QUEUES = {
  prepareRun: 'control',
  initPolicy: 'trainer',
  ensureSampler: 'sampler',
  releaseSampler: 'sampler',
  samplePairs: 'sampler',
  filterPairs: 'control',
  analyzeRewards: 'sampler',
  buildDataset: 'control',
  trainPolicy: 'trainer',
  evaluatePolicy: 'sampler',
  evaluateJudged: 'sampler',
  summarizeJudgedEvals: 'control',
  sampleSelfJudgedPairs: 'sampler',
  writeRoundManifest: 'control',
  writeRunReport: 'control',
  findFinishedRun: 'control',
  writeStudyReport: 'control',
} as const satisfies Record<keyof OpsrActivities, keyof typeof TASK_QUEUES>;
