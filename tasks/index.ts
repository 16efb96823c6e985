// Builtin tasks: verifiable reward scorers usable as a run's reward model (rewardModel.type
// "builtin", rewardModel.name). The demo task's generators live in digits.ts, seed.ts, tokenizer.ts.
import { scoreDigits } from './digits.ts';

// (prompt without prefix, response) -> reward in [0, 1].
export type BuiltinScorer = (prompt: string, response: string) => number;

const SCORERS: Record<string, BuiltinScorer> = {
  digits: scoreDigits,
};

export const BUILTIN_SCORER_NAMES = Object.keys(SCORERS);

export function getBuiltinScorer(name: string): BuiltinScorer | undefined {
  return Object.hasOwn(SCORERS, name) ? SCORERS[name] : undefined;
}

