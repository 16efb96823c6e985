// The demo's task family: sort a short list of distinct digits, up or down, asked in plain words.
// Sorting distinct digits needs no positional bookkeeping (the next answer digit is the nearest
// listed digit above or below the previous one), so a 1-2 layer GPT-2 learns it in about a
// minute of CPU even from noisy seed data. The harder variant (config task.digits: longer lists,
// repeats) needs counting too, so the same model stays further from solving it. The reward gives
// partial credit position by position, so answer quality is a number, not pass/fail.
import { DIGITS_MAX_LENGTH, DIGITS_TASK_DEFAULTS } from '../config/schema.ts';

export const OPERATIONS = ['ascending', 'descending'] as const;
type Operation = (typeof OPERATIONS)[number];

export interface DigitsProblem {
  op: Operation;
  digits: number[];
}

export interface DigitsOptions {
  minLength: number;
  maxLength: number;
  repeats: boolean; // digits drawn with replacement (lists up to 12); else distinct (up to 10)
  ops: readonly Operation[];
}

export const DEFAULT_DIGITS_OPTIONS: DigitsOptions = { ...DIGITS_TASK_DEFAULTS, ops: OPERATIONS };

const ORDER: Record<Operation, string> = {
  ascending: 'from smallest to largest',
  descending: 'from largest to smallest',
};
const PROMPT_RE =
  /Sort the digits (from smallest to largest|from largest to smallest): ((?:\d )*\d)\s*$/;

export function promptText(p: DigitsProblem): string {
  return `Sort the digits ${ORDER[p.op]}: ${p.digits.join(' ')}`;
}

export function answerDigits(p: DigitsProblem): number[] {
  const up = [...p.digits].sort((a, b) => a - b);
  return p.op === 'ascending' ? up : up.reverse();
}

export function answerText(digits: number[]): string {
  return digits.join(' ');
}

// Reads a problem back from a prompt; the instruction may follow a prefix ("... 10 out of 10. ").
export function parsePrompt(prompt: string): DigitsProblem {
  const m = PROMPT_RE.exec(prompt);
  if (!m) {
    throw new Error(
      `digits task: prompt ${JSON.stringify(prompt.slice(0, 120))} is not a digits problem; ` +
        (`expected it to end with "Sort the digits from smallest to largest: d d d" (or ` +
          `"from largest to smallest"; single digits separated by spaces)`),
    );
  }
  const op = OPERATIONS.find((o) => ORDER[o] === m[1])!;
  return { op, digits: m[2].split(' ').map(Number) };
}

// Fraction of positions answered right; missing or extra items count as wrong positions,
// so an answer of the wrong length can never score 1.
export function scoreDigits(prompt: string, response: string): number {
  const want = answerDigits(parsePrompt(prompt));
  const got = response
    .trim()
    .split(/\s+/)
    .filter((t) => t.length > 0);
  let right = 0;
  for (let i = 0; i < Math.min(want.length, got.length); i++)
    if (got[i] === String(want[i])) right++;
  return right / Math.max(want.length, got.length);
}

// mulberry32: a tiny, well-mixed 32-bit PRNG so every split and corruption is reproducible by seed.
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function randInt(rand: () => number, lo: number, hi: number): number {
  return lo + Math.floor(rand() * (hi - lo + 1));
}

// Every problem belongs to exactly one split by a hash of its text (1 in 8 held out), so the
// held-out split never overlaps training whatever the seeds and counts.
function isHeldOut(p: DigitsProblem): boolean {
  let h = 0x811c9dc5;
  for (const ch of promptText(p)) h = Math.imul(h ^ ch.charCodeAt(0), 0x01000193) >>> 0;
  return h % 8 === 0;
}

export function makeProblems(
  split: 'train' | 'heldout',
  count: number,
  seed: number,
  opts: DigitsOptions = DEFAULT_DIGITS_OPTIONS,
): DigitsProblem[] {
  const most = opts.repeats ? DIGITS_MAX_LENGTH : 10;
  if (!(opts.minLength >= 1 && opts.maxLength >= opts.minLength && opts.maxLength <= most)) {
    throw new Error(
      `digits task: lengths ${opts.minLength}..${opts.maxLength} invalid; allowed ` +
        `1 <= minLength <= maxLength <= ${most} ` +
        `(${opts.repeats ? 'with repeats' : 'distinct digits'})`,
    );
  }
  if (opts.ops.length === 0)
    throw new Error(`digits task: ops is empty; allowed: ${OPERATIONS.join(', ')}`);
  const rand = rng(seed * 2 + (split === 'heldout' ? 1 : 0));
  const out: DigitsProblem[] = [];
  for (let guard = 0; out.length < count; guard++) {
    if (guard > count * 100)
      throw new Error(
        `digits task: cannot draw ${count} ${split} problems of length ` +
          `${opts.minLength}..${opts.maxLength}`,
      );
    const n = randInt(rand, opts.minLength, opts.maxLength);
    const pool = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9];
    for (let i = 0; i < n && !opts.repeats; i++) {
      const j = randInt(rand, i, 9);
      [pool[i], pool[j]] = [pool[j], pool[i]];
    }
    const p: DigitsProblem = {
      op: opts.ops[randInt(rand, 0, opts.ops.length - 1)],
      digits: opts.repeats
        ? Array.from({ length: n }, () => randInt(rand, 0, 9))
        : pool.slice(0, n),
    };
    if (isHeldOut(p) === (split === 'heldout')) out.push(p);
  }
  return out;
}
