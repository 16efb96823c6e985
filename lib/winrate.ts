// Pairwise win rates the way AlpacaEval 2 computes them (alpaca_eval/metrics: winrate.py and
// glm_winrate.py), so opsr's numbers can be checked against that package on the same annotations.
//   win rate: mean soft preference for the model (ties 0.5), standard error = sample sd / sqrt(n);
//   length-controlled (LC) win rate: a logistic model of the soft preference on
//     tanh(standardized length difference) [+ instruction difficulty] + a model term, no intercept,
//   fitted with L1-regularized logistic regression whose C is picked by 5-fold grouped
//   cross-validation (scikit-learn's LogisticRegressionCV, liblinear, Cs = logspace(-4, 4, 10)),
//   then predicted with the length term at 0 and averaged over instructions.
// Instruction difficulty is fitted jointly over several models judged against one reference
// (jointDifficulty); with one model it is not identifiable and the 'minimal' variant is used.

export interface Annotation {
  instruction: number; // index of the instruction in its evaluation set
  preference: number; // probability that the model's answer beats the reference's, in [0, 1]
  modelLength: number; // answer lengths in characters (Unicode code points, as Python's len)
  referenceLength: number;
}

interface WinRate {
  winRate: number;
  standardError: number;
  n: number;
  wins: number;
  losses: number;
  ties: number;
}

type LcVariant = 'difficulty' | 'minimal';
interface LcWinRate {
  lcWinRate: number;
  lcStandardError: number;
  variant: LcVariant;
  C: number; // the regularization strength cross-validation chose
  weights: { length: number; difficulty: number; model: number };
}

export const LC_MIN_INSTRUCTIONS = 5; // the cross-validation's fold count

export function codePoints(s: string): number {
  let n = 0;
  for (const _ of s) n++;
  return n;
}

export function winRate(preferences: readonly number[]): WinRate {
  const n = preferences.length;
  if (n === 0) throw new Error('win rate: no annotations');
  for (const [i, p] of preferences.entries()) {
    if (!(p >= 0 && p <= 1)) {
      throw new Error(`win rate: preference ${i} is ${p}; allowed: a number in [0, 1]`);
    }
  }
  const m = mean(preferences);
  return {
    winRate: m,
    standardError: n > 1 ? sd(preferences, m) / Math.sqrt(n) : 0,
    n,
    wins: preferences.filter((p) => p > 0.5).length,
    losses: preferences.filter((p) => p < 0.5).length,
    ties: preferences.filter((p) => p === 0.5).length,
  };
}

// Per-instruction difficulty from every model's annotations against the same reference:
// logit P(model m wins on i) = theta_m + beta_m tanh(len_mi) + gamma_i, gamma ~ N(0, 1) (the
// prior keeps an instruction every model wins or loses finite and fixes the shift between
// theta and gamma). Block coordinate descent: each model's (theta, beta) given gamma, then each
// gamma_i given the models; both blocks are small exact Newton problems, the whole is convex.
export function jointDifficulty(
  byModel: ReadonlyMap<string, readonly Annotation[]>,
): Map<number, number> {
  const models = [...byModel.values()].map((anns) => ({
    anns,
    x: lengthFeature(anns),
    theta: 0,
    beta: 0,
  }));
  const gamma = new Map<number, number>();
  const rows = new Map<number, { m: number; k: number }[]>();
  models.forEach((mod, m) =>
    mod.anns.forEach((a, k) => {
      gamma.set(a.instruction, 0);
      rows.set(a.instruction, [...(rows.get(a.instruction) ?? []), { m, k }]);
    }),
  );
  for (let iter = 0; iter < 1000; iter++) {
    let change = 0;
    for (const mod of models) {
      const offsets = mod.anns.map((a) => gamma.get(a.instruction)!);
      const feats = mod.anns.map((_, k) => [1, mod.x[k]]);
      const prefs = mod.anns.map((a) => a.preference);
      const [theta, beta] = newtonLogistic(feats, offsets, prefs, [mod.theta, mod.beta], 0);
      change = Math.max(change, Math.abs(theta - mod.theta), Math.abs(beta - mod.beta));
      mod.theta = theta;
      mod.beta = beta;
    }
    for (const [i, rs] of rows) {
      const offsets = rs.map(({ m, k }) => models[m].theta + models[m].beta * models[m].x[k]);
      const prefs = rs.map(({ m, k }) => models[m].anns[k].preference);
      const [g] = newtonLogistic(
        rs.map(() => [1]),
        offsets,
        prefs,
        [gamma.get(i)!],
        1,
      );
      change = Math.max(change, Math.abs(g - gamma.get(i)!));
      gamma.set(i, g);
    }
    if (change < 1e-10) break;
  }
  return gamma;
}

// LC win rate of one model. With `difficulty` (from jointDifficulty over several models) this is
// AlpacaEval's length_controlled_noreg GLM, without it length_controlled_minimal.
export function lengthControlledWinRate(
  annotations: readonly Annotation[],
  difficulty?: ReadonlyMap<number, number>,
): LcWinRate {
  if (annotations.length < LC_MIN_INSTRUCTIONS) {
    throw new Error(
      `LC win rate: ${annotations.length} annotations; needs at least ` +
        `${LC_MIN_INSTRUCTIONS} (one per cross-validation fold)`,
    );
  }
  const variant: LcVariant = difficulty ? 'difficulty' : 'minimal';
  const diff = annotations.map((a) => {
    if (!difficulty) return 0;
    const d = difficulty.get(a.instruction);
    if (d === undefined) {
      throw new Error(`LC win rate: no difficulty for instruction ${a.instruction}`);
    }
    return d;
  });
  const len = lengthFeature(annotations);
  // Columns in the order of AlpacaEval's formula: length, [difficulty,] model term.
  const X = annotations.map((_, i) => (difficulty ? [len[i], diff[i], 1] : [len[i], 1]));
  const p = annotations.map((a) => a.preference);
  const C = crossValidatedC(X, p);
  const w = l1Logistic(X, p, C);
  const predicted = annotations.map((_, i) => sigmoid(difficulty ? w[1] * diff[i] + w[2] : w[1]));
  const m = mean(predicted);
  return {
    lcWinRate: m,
    lcStandardError: sd(predicted, m) / Math.sqrt(predicted.length),
    variant,
    C,
    weights: difficulty
      ? { length: w[0], difficulty: w[1], model: w[2] }
      : { length: w[0], difficulty: 0, model: w[1] },
  };
}

// tanh of (reference length - model length) over its sample standard deviation (no centering).
function lengthFeature(anns: readonly Annotation[]): number[] {
  const delta = anns.map((a) => a.referenceLength - a.modelLength);
  const s = delta.length > 1 ? sd(delta, mean(delta)) : 0;
  // Equal length differences everywhere carry no length information: the feature is 0.
  return delta.map((d) => (s > 0 ? Math.tanh(d / s) : 0));
}

// GroupKFold(5) over the rows (each row is its own group, duplicated once per label): scikit-learn
// hands the groups, largest first with ties in reverse order, to the lightest fold, so row g of
// G lands in fold (G - 1 - g) mod 5. The C with the best summed held-out log loss wins (the first
// of equals).
function crossValidatedC(X: number[][], p: number[]): number {
  const G = X.length;
  const fold = (g: number) => (G - 1 - g) % LC_MIN_INSTRUCTIONS;
  let best = -Infinity;
  let bestC = 0;
  for (let j = 0; j < 10; j++) {
    const C = 10 ** (-4 + (8 * j) / 9);
    let score = 0;
    for (let k = 0; k < LC_MIN_INSTRUCTIONS; k++) {
      const train = X.map((_, g) => g).filter((g) => fold(g) !== k);
      const test = X.map((_, g) => g).filter((g) => fold(g) === k);
      const w = l1Logistic(
        train.map((g) => X[g]),
        train.map((g) => p[g]),
        C,
      );
      score -= mean(test.map((g) => crossEntropy(p[g], sigmoid(dot(w, X[g])))));
    }
    if (score > best) {
      best = score;
      bestC = C;
    }
  }
  return bestC;
}

// min_w ||w||_1 + C * sum_i CE(p_i, sigmoid(w.x_i)): liblinear's L1-regularized logistic
// regression with soft labels as weighted duplicates. Cyclic coordinate descent; each coordinate
// is minimized exactly: the smooth part's derivative is monotone, so Newton steps kept inside a
// shrinking bracket find its root.
function l1Logistic(X: number[][], p: number[], C: number): number[] {
  const d = X[0].length;
  const w = new Array<number>(d).fill(0);
  const z = X.map(() => 0); // w.x_i, kept current
  for (let sweep = 0; sweep < 10000; sweep++) {
    let change = 0;
    for (let j = 0; j < d; j++) {
      // first and second derivative of the smooth part along coordinate j, w_j moved by t
      const derivs = (t: number) => {
        let g = 0;
        let h = 0;
        for (let i = 0; i < X.length; i++) {
          const q = sigmoid(z[i] + t * X[i][j]);
          g += X[i][j] * (q - p[i]);
          h += X[i][j] * X[i][j] * q * (1 - q);
        }
        return [C * g, C * h];
      };
      const zero = -w[j]; // the move that puts w_j at 0
      const [g0] = derivs(zero);
      let t = zero;
      if (Math.abs(g0) > 1) {
        // The new w_j has the sign s opposite to g0; solve g(t) + s = 0 on that side of zero.
        const s = g0 > 0 ? -1 : 1;
        let lo = s > 0 ? zero : -Infinity;
        let hi = s > 0 ? Infinity : zero;
        t = w[j] * s > 0 ? 0 : zero + s * 1e-3;
        for (let it = 0; it < 200; it++) {
          const [g, h] = derivs(t);
          const f = g + s;
          if (f > 0) hi = t;
          else lo = t;
          let next = t - f / h;
          if (!(next > lo && next < hi)) {
            next =
              Number.isFinite(lo) && Number.isFinite(hi)
                ? (lo + hi) / 2
                : t + (f > 0 ? -1 : 1) * Math.max(1, Math.abs(t));
          }
          const done = Math.abs(next - t) <= 1e-14 * Math.max(1, Math.abs(w[j] + next));
          t = next;
          if (done) break;
        }
      }
      if (t !== 0) {
        w[j] += t;
        for (let i = 0; i < X.length; i++) z[i] += t * X[i][j];
      }
      change = Math.max(change, Math.abs(t));
    }
    if (change < 1e-11) break;
  }
  return w;
}

// Exact Newton for a weighted-soft-label logistic model with a fixed offset per row and an L2
// penalty lambda/2 |w|^2; features are 1 or 2 columns, so the Hessian is solved in closed form.
function newtonLogistic(
  X: number[][],
  offset: number[],
  p: number[],
  w0: number[],
  lambda: number,
): number[] {
  const w = [...w0];
  const d = w.length;
  for (let it = 0; it < 100; it++) {
    const g = w.map((wj) => lambda * wj);
    const H = w.map((_, a) => w.map((__, b) => (a === b ? lambda : 0)));
    for (let i = 0; i < X.length; i++) {
      const q = sigmoid(offset[i] + dot(w, X[i]));
      for (let a = 0; a < d; a++) {
        g[a] += X[i][a] * (q - p[i]);
        for (let b = 0; b < d; b++) H[a][b] += X[i][a] * X[i][b] * q * (1 - q);
      }
    }
    // A tiny ridge keeps a singular Hessian (a constant column) solvable.
    for (let a = 0; a < d; a++) H[a][a] += 1e-12;
    const step = d === 1 ? [g[0] / H[0][0]] : solve2(H, g);
    // Halve the step while the loss does not decrease (logistic Newton can overshoot).
    const loss = (v: number[]) =>
      X.reduce((s, x, i) => s + crossEntropy(p[i], sigmoid(offset[i] + dot(v, x))), 0) +
      (lambda / 2) * v.reduce((s, vj) => s + vj * vj, 0);
    const before = loss(w);
    let scale = 1;
    let next = w.map((wj, a) => wj - step[a]);
    while (loss(next) > before && scale > 1e-8) {
      scale /= 2;
      next = w.map((wj, a) => wj - scale * step[a]);
    }
    const moved = Math.max(...next.map((v, a) => Math.abs(v - w[a])));
    next.forEach((v, a) => {
      w[a] = v;
    });
    if (moved < 1e-13) break;
  }
  return w;
}

function solve2(H: number[][], g: number[]): number[] {
  const det = H[0][0] * H[1][1] - H[0][1] * H[1][0];
  return [(H[1][1] * g[0] - H[0][1] * g[1]) / det, (H[0][0] * g[1] - H[1][0] * g[0]) / det];
}

// Cross-entropy of soft label p against prediction q, q clipped as AlpacaEval's scorer does.
function crossEntropy(p: number, q: number): number {
  const c = Math.min(Math.max(q, 1e-15), 1 - 1e-15);
  return -(p * Math.log(c) + (1 - p) * Math.log(1 - c));
}

function sigmoid(x: number): number {
  return x >= 0 ? 1 / (1 + Math.exp(-x)) : Math.exp(x) / (1 + Math.exp(x));
}

function dot(a: number[], b: number[]): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}

function mean(xs: readonly number[]): number {
  return xs.reduce((s, x) => s + x, 0) / xs.length;
}

function sd(xs: readonly number[], m: number): number {
  return Math.sqrt(xs.reduce((s, x) => s + (x - m) ** 2, 0) / (xs.length - 1));
}
