// The demo's data, generated from a seed (paper section 3.2's seed data, made to order):
//   sft.jsonl      chat SFT examples. Most carry the paper's prefix with a score s in 0..10 and an
//                  answer that stops after about s/10 of the sorted digits (at least one), so its
//                  reward is about s/10 and score-conditioned generation is learnable. The rest are
//                  unprefixed with answers cut at a random point, so the plain policy is mediocre:
//                  the room the method has to improve it by only prompting itself.
// Bad answers are cut short rather than filled with random digits: every answer is then a correct
// prefix of the sorted list, so all of the data teaches the skill and only the stopping point
// follows the score (random-digit noise kept a 2-layer model from learning to sort at all).
//   prompts.jsonl  the run's training prompts {"prompt"} (train split).
//   heldout.jsonl  evaluation prompts {"prompt"} (held-out split, disjoint from training).
import { applyTemplate } from '../config/schema.ts';
import {
  answerDigits,
  answerText,
  DEFAULT_DIGITS_OPTIONS,
  makeProblems,
  promptText,
  randInt,
  rng,
  type DigitsOptions,
} from './digits.ts';

export interface DigitsDataSpec {
  seed: number;
  sftExamples: number;
  unprefixedFraction: number; // share of SFT examples without a prefix
  // Share of prefixed examples asking for 10 (the rest ask for 0..10 evenly): complete answers
  // carry most of the signal for the later digits, which a tiny model learns last.
  perfectShare: number;
  trainPrompts: number;
  heldoutPrompts: number;
  chosenTemplate: string; // "{score}" and "{prompt}" are filled in, as the sampler does
  rejectedTemplate: string;
  digits?: DigitsOptions;
}

function checkSpec(spec: DigitsDataSpec): void {
  const counts = ['sftExamples', 'trainPrompts', 'heldoutPrompts', 'seed'] as const;
  for (const k of counts) {
    if (!Number.isInteger(spec[k]) || spec[k] < 0)
      throw new Error(`digits data: ${k} = ${spec[k]}; allowed: an integer >= 0`);
  }
  for (const k of ['unprefixedFraction', 'perfectShare'] as const) {
    if (!(spec[k] >= 0 && spec[k] <= 1))
      throw new Error(`digits data: ${k} = ${spec[k]}; allowed: a number in 0..1`);
  }
  for (const k of ['chosenTemplate', 'rejectedTemplate'] as const) {
    if (!spec[k].includes('{score}') || !spec[k].includes('{prompt}')) {
      throw new Error(
        `digits data: ${k} ${JSON.stringify(spec[k])} must contain "{score}" and "{prompt}"`,
      );
    }
  }
}

export function sftRecords(
  spec: DigitsDataSpec,
): { messages: { role: string; content: string }[] }[] {
  checkSpec(spec);
  const opts = spec.digits ?? DEFAULT_DIGITS_OPTIONS;
  const rand = rng(spec.seed * 7919 + 17);
  return makeProblems('train', spec.sftExamples, spec.seed * 3 + 1, opts).map((p) => {
    const want = answerDigits(p);
    const n = want.length;
    let instruction = promptText(p);
    let wrong: number;
    if (rand() < spec.unprefixedFraction) {
      wrong = randInt(rand, 0, n - 1); // mixed quality: from one digit to all of them
    } else {
      const score = rand() < spec.perfectShare ? 10 : randInt(rand, 0, 10);
      // Both templates appear with every score, so quality follows the score, not the wording.
      const template = rand() < 0.5 ? spec.chosenTemplate : spec.rejectedTemplate;
      instruction = applyTemplate(template, score, instruction);
      const exact = (n * (10 - score)) / 10;
      wrong = Math.floor(exact) + (rand() < exact - Math.floor(exact) ? 1 : 0);
    }
    return {
      messages: [
        { role: 'user', content: instruction },
        { role: 'assistant', content: answerText(want.slice(0, Math.max(1, n - wrong))) },
      ],
    };
  });
}

export function promptRecords(
  split: 'train' | 'heldout',
  count: number,
  spec: DigitsDataSpec,
): { prompt: string }[] {
  checkSpec(spec);
  const seed = spec.seed * 3 + (split === 'train' ? 2 : 3);
  return makeProblems(split, count, seed, spec.digits ?? DEFAULT_DIGITS_OPTIONS).map((p) => ({
    prompt: promptText(p),
  }));
}
