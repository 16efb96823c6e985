// Progress payloads: what long activities report to workflows and what a round reports to its
// parent run. Importable from workflow code (no Node APIs here).
import { defineSignal } from '@temporalio/workflow';

// Where long activities report progress: workflow ids that get `activityProgress` signals
// (activityProgressSignal below). Best effort and throttled (about once a shard / once a few
// steps); durability comes from heartbeats, not from these signals.
export interface ProgressTarget {
  notify: string[];
}

export type ActivityProgress =
  | { kind: 'sampling'; round: number; done: number; total: number }
  | {
      kind: 'training';
      round: number;
      step: number;
      totalSteps: number;
      metrics?: Record<string, number>;
    };

export type Phase =
  | 'pending'
  | 'init'
  | 'serving'
  | 'sampling'
  | 'filtering'
  | 'analysis'
  | 'dataset'
  | 'training'
  | 'evaluating'
  | 'done'
  | 'stopped'
  | 'failed';

// Long activities (sampling, training) report progress to these workflows by signal; the round
// workflow forwards them to its parent so the run's `progress` query shows live counts.
export const activityProgressSignal = defineSignal<[ActivityProgress]>('activityProgress');

// A round tells its parent run which phase it is in (the run's query and search attributes
// follow).
export const roundPhaseSignal = defineSignal<[{ round: number; phase: Phase }]>('roundPhase');
