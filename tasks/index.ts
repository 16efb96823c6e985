// Builtin tasks: verifiable reward scorers usable as a run's reward model (rewardModel.type
// "builtin", rewardModel.name). The demo task's generators live in digits.ts, seed.ts,
// tokenizer.ts.
import type { BuiltinScorerName } from '../config/schema.ts';
import { scoreDigits } from './digits.ts';

// (prompt without prefix, response) -> reward in [0, 1].
type BuiltinScorer = (prompt: string, response: string) => number;

const SCORERS: Record<BuiltinScorerName, BuiltinScorer> = {
  digits: scoreDigits,
};

export function getBuiltinScorer(name: string): BuiltinScorer | undefined {
  return Object.hasOwn(SCORERS, name) ? SCORERS[name as BuiltinScorerName] : undefined;
}
