// A seeded ablation's summary (the paper's Table 2 shape: arms as rows, rounds as columns): per arm
// and round the mean and standard deviation over seeds of each metric, and each arm's paired
// difference from the first arm with a 95% confidence interval. Pure: the workflow computes it.
import {
  STUDY_METRICS,
  type RunResult,
  type Stats,
  type StudyMetric,
  type StudySummary,
} from '../contracts/workflows.ts';
import { meanSd, pairedDiff } from './stats.ts';

// A study's LC win rates fitted over all its runs together, by runKey (activities/study.ts).
export type StudyLc = { variant: string; byRun: Map<string, { lc: number; se: number }> };
export const runKey = (arm: string, seed: number | null, round: number) =>
  `${arm}\0${seed ?? ''}\0${round}`;
const evalLabel = (round: number) => (round === 0 ? 'base' : `round-${round}`);

function metricValue(r: RunResult, round: number, m: StudyMetric, set: string | null) {
  if (m === 'winRate' || m === 'lcWinRate') {
    const row = r.judged?.find(
      (j) => j.kind === 'pairwise' && j.set === set && j.label === evalLabel(round),
    );
    return row
      ? { value: row[m], se: m === 'winRate' ? row.standardError : row.lcStandardError }
      : null;
  }
  if (round === 0) return m === 'policyReward' ? { value: r.baseReward, se: null } : null;
  const x = r.rounds.find((y) => y.round === round);
  if (!x) return null;
  return {
    value: m === 'tokensPerKeptPair' ? (x.cost?.tokensPerKeptPair ?? null) : x[m],
    se: null,
  };
}

export function summarizeStudy(
  runs: { name: string; seed: number | null; result: RunResult }[],
  lc?: StudyLc,
): StudySummary {
  const arms = [...new Set(runs.map((r) => r.name))];
  const seeds = [...new Set(runs.map((r) => r.seed))];
  const maxRound = Math.max(0, ...runs.map((r) => r.result.rounds.length));
  const rounds = Array.from({ length: maxRound + 1 }, (_, i) => i);
  const set = runs.flatMap((r) => r.result.judged ?? []).find((j) => j.kind === 'pairwise')?.set;
  const runLcVariant = runs
    .flatMap((r) => r.result.judged ?? [])
    .find((j) => j.set === set && j.lcVariant !== null)?.lcVariant;
  const value = (r: (typeof runs)[number], round: number, m: StudyMetric) => {
    if (m !== 'lcWinRate' || !lc) return metricValue(r.result, round, m, set ?? null);
    const x = lc.byRun.get(runKey(r.name, r.seed, round));
    return x ? { value: x.lc, se: x.se } : null;
  };
  // Without seeds each arm ran once with the config's own seeds: those runs pair up too.
  const values = (arm: string, round: number, m: StudyMetric, field: 'value' | 'se' = 'value') => {
    const out = new Map<number, number>();
    for (const r of runs) {
      const v = r.name === arm ? (value(r, round, m)?.[field] ?? null) : null;
      if (v !== null && Number.isFinite(v)) out.set(r.seed ?? -1, v);
    }
    return out;
  };
  const meanSe = (arm: string, round: number, m: StudyMetric) =>
    meanSd([...values(arm, round, m, 'se').values()]).mean;
  const cells: StudySummary['cells'] = [];
  const diffs: StudySummary['diffs'] = [];
  for (const arm of arms) {
    for (const round of rounds) {
      const stats = Object.fromEntries(
        STUDY_METRICS.map((m) => [m, meanSd([...values(arm, round, m).values()])]),
      ) as Record<StudyMetric, Stats>;
      if (STUDY_METRICS.every((m) => stats[m].n === 0)) continue;
      // Self-judge rounds (those with `dropped`) use no rejected score.
      const scores = runs
        .filter((r) => r.name === arm)
        .flatMap((r) =>
          r.result.rounds
            .filter((x) => x.round === round && !x.dropped)
            .map((x) => x.rejectedScore),
        );
      cells.push({
        arm,
        round,
        rejectedScores: [...new Set(scores)],
        stats,
        ...(set
          ? {
              standardError: {
                winRate: meanSe(arm, round, 'winRate'),
                lcWinRate: meanSe(arm, round, 'lcWinRate'),
              },
            }
          : {}),
      });
      if (arm === arms[0] || round === 0) continue;
      for (const metric of STUDY_METRICS) {
        const diff = pairedDiff(values(arms[0], round, metric), values(arm, round, metric));
        if (diff.n) diffs.push({ arm, versus: arms[0], round, metric, diff });
      }
    }
  }
  return {
    arms,
    seeds,
    rounds,
    cells,
    diffs,
    ...(set ? { judged: { set, lcVariant: lc?.variant ?? runLcVariant ?? null } } : {}),
  };
}
