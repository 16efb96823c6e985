// Means, standard deviations and paired differences with Student-t confidence intervals over
// seeds. Pure (no Node APIs): the ablationStudy workflow computes its summary with these.

import type { Interval, Stats } from '../contracts/workflows.ts';

export function meanSd(xs: number[]): Stats {
  const n = xs.length;
  if (n === 0) return { n, mean: null, sd: null };
  const mean = xs.reduce((s, x) => s + x, 0) / n;
  if (n < 2) return { n, mean, sd: null };
  return { n, mean, sd: Math.sqrt(xs.reduce((s, x) => s + (x - mean) ** 2, 0) / (n - 1)) };
}

// Two-sided 95% quantiles t(0.975, df) for df 1..30; beyond, the Cornish-Fisher expansion around
// the normal quantile (error below 1e-4 there).
const T975 = [
  12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.16, 2.145,
  2.131, 2.12, 2.11, 2.101, 2.093, 2.086, 2.08, 2.074, 2.069, 2.064, 2.06, 2.056, 2.052, 2.048,
  2.045, 2.042,
];

function tQuantile975(df: number): number {
  if (!Number.isInteger(df) || df < 1)
    throw new RangeError(`degrees of freedom must be a positive integer (got ${df})`);
  if (df <= T975.length) return T975[df - 1];
  const z = 1.959964;
  return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2);
}

function meanCi(xs: number[]): Interval {
  const s = meanSd(xs);
  if (s.sd === null || s.mean === null) return { ...s, lo: null, hi: null };
  const half = (tQuantile975(s.n - 1) * s.sd) / Math.sqrt(s.n);
  return { ...s, lo: s.mean - half, hi: s.mean + half };
}

// b - a over the seeds both have, paired by seed: the arms of one seed share data and init, so
// the seed-to-seed spread cancels out of the difference.
export function pairedDiff(a: Map<number, number>, b: Map<number, number>): Interval {
  const d: number[] = [];
  for (const [seed, x] of a) {
    const y = b.get(seed);
    if (y !== undefined) d.push(y - x);
  }
  return meanCi(d);
}
