// Results that both the activities' and the workflows' contracts carry: a round's cost and the
// run report's judge-based evaluation lines. A leaf, so neither contract imports the other for
// them.

// What a round's pairs cost: the paper's efficiency argument, measured.
export interface RoundSamplingCost {
  sampling: { requests: number; tokens: number };
  judging: { requests: number; cached: number; tokens: number };
}
export interface RoundCost extends RoundSamplingCost {
  wallS: Record<string, number>; // phase -> seconds (sampling, filtering, dataset, training, ...)
  tokensPerKeptPair: number | null; // (sampling + judging tokens) / pairs kept after filtering
}

// One line of the run report per (set, label).
export interface JudgedSummaryRow {
  set: string;
  label: string;
  kind: 'pairwise' | 'grading';
  winRate: number | null;
  standardError: number | null;
  lcWinRate: number | null;
  lcStandardError: number | null;
  lcVariant: string | null; // which LC model gave the number
  firstPositionWins: number | null; // order bias
  flipRate: number | null;
  mean: number | null; // grading
  unparsable: number;
  judgeTokens: number;
}
