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

function metricValue(r: RunResult, round: number, m: StudyMetric): number | null {
  if (round === 0) return m === 'policyReward' ? r.baseReward : null;
  const x = r.rounds.find((y) => y.round === round);
  return x ? x[m] : null;
}

export function summarizeStudy(
  runs: { name: string; seed: number | null; result: RunResult }[],
): StudySummary {
  const arms = [...new Set(runs.map((r) => r.name))];
  const seeds = [...new Set(runs.map((r) => r.seed))];
  const maxRound = Math.max(0, ...runs.map((r) => r.result.rounds.length));
  const rounds = Array.from({ length: maxRound + 1 }, (_, i) => i);
  const values = (arm: string, round: number, m: StudyMetric): Map<number, number> => {
    const out = new Map<number, number>();
    for (const r of runs) {
      const v = r.name === arm ? metricValue(r.result, round, m) : null;
      // Without seeds each arm ran once with the config's own seeds: those runs pair up too.
      if (v !== null && Number.isFinite(v)) out.set(r.seed ?? -1, v);
    }
    return out;
  };
  const cells: StudySummary['cells'] = [];
  const diffs: StudySummary['diffs'] = [];
  for (const arm of arms) {
    for (const round of rounds) {
      const stats = Object.fromEntries(
        STUDY_METRICS.map((m) => [m, meanSd([...values(arm, round, m).values()])]),
      ) as Record<StudyMetric, Stats>;
      if (STUDY_METRICS.every((m) => stats[m].n === 0)) continue;
      const scores = runs
        .filter((r) => r.name === arm)
        .flatMap((r) =>
          r.result.rounds.filter((x) => x.round === round).map((x) => x.rejectedScore),
        );
      cells.push({ arm, round, rejectedScores: [...new Set(scores)], stats });
      if (arm === arms[0] || round === 0) continue;
      for (const metric of STUDY_METRICS) {
        const diff = pairedDiff(values(arms[0], round, metric), values(arm, round, metric));
        if (diff.n) diffs.push({ arm, versus: arms[0], round, metric, diff });
      }
    }
  }
  return { arms, seeds, rounds, cells, diffs };
}
