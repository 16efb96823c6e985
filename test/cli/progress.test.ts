// What `opsr run`/`opsr demo` show while a round works: counts only once they are known, and, in
// a log (not a terminal), a new frame at each tenth of sampling and training.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { progressKey, renderProgress } from '../../cli/common.ts';
import type { RunProgress } from '../../contracts/workflows.ts';

const at = (sampled: [number, number], train: [number, number]): RunProgress => ({
  runId: 'r',
  phase: 'sampling',
  round: 1,
  rounds: 3,
  rejectedScore: 3,
  sampled: { done: sampled[0], total: sampled[1] },
  train: { step: train[0], totalSteps: train[1] },
  completed: [],
  stopRequested: false,
});

test('counts are shown once known; before that, "not started" rather than 0/0', () => {
  const lines = renderProgress(at([0, 0], [0, 0])).split('\n');
  assert.match(lines[2], /sampling .* not started$/);
  assert.match(lines[3], /training .* not started$/);
  const later = renderProgress(at([125, 249], [3, 12])).split('\n');
  assert.match(later[2], /\s50%\s+125\/249 prompts$/);
  assert.match(later[3], /\s25%\s+step 3\/12$/);
});

test('a log gets a frame per tenth of sampling and of training, not per prompt', () => {
  const keys = new Set<string>();
  for (let done = 0; done <= 249; done++) keys.add(progressKey(at([done, 249], [0, 0])));
  assert.equal(keys.size, 11); // 0..9 tenths and the full count
  assert.notEqual(progressKey(at([0, 0], [0, 0])), progressKey(at([0, 249], [0, 0])));
  assert.notEqual(progressKey(at([249, 249], [5, 10])), progressKey(at([249, 249], [4, 10])));
  const stop = { ...at([1, 249], [0, 0]), stopRequested: true };
  assert.notEqual(progressKey(stop), progressKey(at([1, 249], [0, 0])));
});
