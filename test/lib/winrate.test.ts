// lib/winrate.ts against the alpaca-eval package's own computation (test/parity/alpaca_glm.py) on
// synthetic annotations from a judge with a known length bias, plus the properties a win rate
// must have whatever the implementation.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import {
  type Annotation,
  jointDifficulty,
  lengthControlledWinRate,
  winRate,
} from '../../lib/winrate.ts';

const root = path.resolve(import.meta.dirname, '../..');
const python = path.join(root, '.venv/bin/python');

function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const sigmoid = (x: number) => 1 / (1 + Math.exp(-x));
const N = 120;
const LENGTH_BIAS = 1.5; // logit bonus for the longer answer, at one length-sd of difference
// model -> [skill (logit), mean extra length over the reference in characters]
const MODELS: Record<string, [number, number]> = {
  base: [-0.4, 0],
  round1: [0.1, 150],
  round3: [0.5, 400],
};

// The judge prefers the better model and the longer answer; some verdicts are hard (0/1) or ties,
// as a text-parsed judge gives.
function synthetic(seed: number) {
  const r = rng(seed);
  const normal = () => Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r());
  const difficulty = Array.from({ length: N }, () => normal());
  const refLen = Array.from({ length: N }, () => 200 + Math.floor(r() * 600));
  const sets = new Map<string, Annotation[]>();
  const truth = new Map<string, number>(); // the win rate with the length bias removed
  for (const [model, [skill, extra]] of Object.entries(MODELS)) {
    const anns = refLen.map((referenceLength, instruction) => {
      const modelLength = Math.max(1, Math.round(referenceLength + extra + 250 * normal()));
      const lengthBonus = LENGTH_BIAS * Math.tanh((modelLength - referenceLength) / 300);
      const p = sigmoid(skill - difficulty[instruction] + lengthBonus);
      const u = r();
      const preference = u < 0.1 ? (r() < p ? 1 : 0) : u < 0.13 ? 0.5 : p;
      return { instruction, preference, modelLength, referenceLength };
    });
    sets.set(model, anns);
    truth.set(model, difficulty.reduce((s, d) => s + sigmoid(skill - d), 0) / N);
  }
  return { sets, truth };
}

let dir: string;
before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'opsr-winrate-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('win rate and LC win rate match the alpaca-eval package', () => {
  for (const seed of [1, 2]) {
    test(`length-biased judge, seed ${seed}: every model, both GLM variants, to 1e-3`, async () => {
      const { sets, truth } = synthetic(seed);
      const difficulty = jointDifficulty(sets);
      await writeFile(path.join(dir, 'annotations.json'), JSON.stringify(Object.fromEntries(sets)));
      const difficultyFile = path.join(dir, 'difficulty.json');
      await writeFile(difficultyFile, JSON.stringify(Object.fromEntries(difficulty)));
      const { stdout } = await execa(python, [path.join(root, 'test/parity/alpaca_glm.py'), dir]);
      const theirs = JSON.parse(stdout);
      for (const [model, anns] of sets) {
        const wr = winRate(anns.map((a) => a.preference));
        for (const variant of ['difficulty', 'minimal'] as const) {
          const lc = lengthControlledWinRate(
            anns,
            variant === 'difficulty' ? difficulty : undefined,
          );
          const ref = theirs[model][variant];
          const ours = {
            win_rate: wr.winRate,
            standard_error: wr.standardError,
            length_controlled_winrate: lc.lcWinRate,
            lc_standard_error: lc.lcStandardError,
          };
          for (const [k, v] of Object.entries(ours)) {
            assert.ok(
              Math.abs(v - ref[k]) < 1e-3,
              `${model} ${variant} ${k}: opsr ${v}, alpaca-eval ${ref[k]}`,
            );
          }
        }
        // The length-biased judge inflates the raw win rate of the model with longer answers; the
        // LC win rate is closer to the skill-only truth.
        const lc = lengthControlledWinRate(anns, difficulty);
        if (model === 'round3') {
          const t = truth.get(model)!;
          assert.ok(wr.winRate - t > 0.05, `raw ${wr.winRate} vs truth ${t}`);
          assert.ok(
            Math.abs(lc.lcWinRate - t) < Math.abs(wr.winRate - t) / 2,
            `LC ${lc.lcWinRate}, raw ${wr.winRate}, truth ${t}`,
          );
          // The feature is reference minus model length: longer model answers win, so negative.
          assert.ok(lc.weights.length < 0, `length weight ${lc.weights.length}`);
        }
      }
    });
  }
});

describe('properties', () => {
  test('a model against itself: win rate and LC win rate 0.5; swapping sides gives 1 - WR', () => {
    const self = Array.from({ length: 40 }, (_, instruction) => ({
      instruction,
      preference: 0.5,
      modelLength: 300,
      referenceLength: 300,
    }));
    assert.equal(winRate(self.map((a) => a.preference)).winRate, 0.5);
    assert.ok(Math.abs(lengthControlledWinRate(self).lcWinRate - 0.5) < 1e-9);
    const { sets } = synthetic(3);
    const anns = sets.get('round1')!;
    const swapped = anns.map((a) => ({
      ...a,
      preference: 1 - a.preference,
      modelLength: a.referenceLength,
      referenceLength: a.modelLength,
    }));
    const a = lengthControlledWinRate(anns);
    const b = lengthControlledWinRate(swapped);
    assert.ok(Math.abs(a.lcWinRate + b.lcWinRate - 1) < 1e-6, `${a.lcWinRate} + ${b.lcWinRate}`);
    const wr = (xs: Annotation[]) => winRate(xs.map((x) => x.preference)).winRate;
    assert.ok(Math.abs(wr(anns) + wr(swapped) - 1) < 1e-12);
  });

  test('bad input is named', () => {
    assert.throws(() => winRate([0.2, 1.4]), /preference 1 is 1.4; allowed: a number in \[0, 1\]/);
    assert.throws(() => winRate([]), /no annotations/);
    const ann = (instruction: number) => ({
      instruction,
      preference: 0.7,
      modelLength: 1,
      referenceLength: 2,
    });
    const few = [0, 1, 2].map(ann);
    assert.throws(() => lengthControlledWinRate(few), /3 annotations; needs at least 5/);
    const anns = [0, 1, 2, 3, 4, 5].map(ann);
    assert.throws(
      () => lengthControlledWinRate(anns, new Map([[0, 1]])),
      /no difficulty for instruction 1/,
    );
  });
});
