// The workflow bundle's entry: every workflow type the workers register.
export { preferenceRun } from './run.ts';
export { preferenceRound } from './round.ts';
export { ablationStudy } from './ablation.ts';
