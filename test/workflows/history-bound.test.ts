// A run's history does not grow with its length: progress reaches the workflows at twentieths of
// each activity's work, so a round of 2000 shards and ~1500 training steps writes about as many
// events as a round of 20 shards. Measured next to Temporal's limits (a warning at 10,240 events,
// failure at 51,200), on a real dev server with the test activities.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import type { History } from '@temporalio/common/lib/proto-utils.js';
import proto from '@temporalio/proto';
const { temporal } = proto;
import { createTestEnv } from '../helpers/temporal.ts';
import { testActivities } from '../helpers/workflow-activities.ts';
import { createWorkers, installWorkerLogging } from '../../workers/index.ts';
import {
  progressQuery,
  TASK_QUEUES,
  WORKFLOW_TYPES,
  type RunResult,
  type WorkflowTuning,
} from '../../contracts/workflows.ts';

const WARN_EVENTS = 10_240;
const MAX_EVENTS = 51_200;
const MAX_ROUNDS = 100; // config/schema.ts: rounds is at most 100

let env: TestWorkflowEnvironment;
let tmp: string;
let baseModel: string;

before(async () => {
  installWorkerLogging();
  env = await createTestEnv();
  tmp = await mkdtemp(path.join(os.tmpdir(), 'opsr-history-'));
  baseModel = path.join(tmp, 'base');
  await mkdir(baseModel);
  await writeFile(path.join(baseModel, 'model.safetensors'), 'base weights\n');
});
after(async () => {
  await env?.teardown();
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

interface Counts {
  run: number;
  round: number;
  progressSignals: number;
}

async function eventCounts(runId: string, prompts: number, rounds: number): Promise<Counts> {
  const promptsFile = path.join(tmp, `${runId}.jsonl`);
  await writeFile(
    promptsFile,
    Array.from({ length: prompts }, (_, i) => JSON.stringify({ prompt: `p${i}` }) + '\n').join(''),
  );
  const config = {
    runId,
    storage: path.join(tmp, 'storage'),
    model: baseModel,
    prompts: { file: promptsFile },
    rounds,
    prefixes: { rejectedScores: 'fixed' },
    sampling: { shardSize: 1 },
    training: { learningRate: 1e-6 },
    rewardModel: { type: 'builtin', name: 'test' },
    evaluation: { prompts: { file: promptsFile } },
  };
  const w = await createWorkers({
    connection: env.nativeConnection,
    activities: testActivities({ log: path.join(tmp, `${runId}.log`) }),
  });
  const running = w.run();
  try {
    const result = (await env.client.workflow.execute(WORKFLOW_TYPES.run, {
      taskQueue: TASK_QUEUES.control,
      workflowId: runId,
      args: [config],
    })) as RunResult;
    assert.equal(result.rounds.length, rounds);
  } finally {
    w.shutdown();
    await running;
  }
  const events = async (id: string) =>
    (await env.client.workflow.getHandle(id).fetchHistory()).events!;
  const round = await events(`${runId}/round-1`);
  const progressSignals = round.filter(
    (e) => e.workflowExecutionSignaledEventAttributes?.signalName === 'activityProgress',
  ).length;
  return { run: (await events(runId)).length, round: round.length, progressSignals };
}

test("history events of a long run stay bounded and far below Temporal's limits", async () => {
  // 1000 shards and 750 training steps per round (one shard per prompt, one step per pair).
  const one = await eventCounts('one', 1000, 1);
  const two = await eventCounts('two', 1000, 2);
  const perRound = two.run - one.run;
  const atMax = one.run + (MAX_ROUNDS - 1) * perRound;
  console.log(
    `history events at 1000 shards and 750 training steps per round: round ${one.round} ` +
      (`(${one.progressSignals} progress signals), run ${one.run} with 1 round, ` +
        `${two.run} with 2: +${perRound} `) +
      (`per round, ${atMax} for ${MAX_ROUNDS} rounds (Temporal warns at ${WARN_EVENTS}, ` +
        `fails at ${MAX_EVENTS})`),
  );
  // Sampling and training signal at most at each twentieth of their work: 21 each.
  assert.ok(one.progressSignals <= 2 * 21, `${one.progressSignals} progress signals in a round`);
  assert.ok(one.round < 400, `round history ${one.round}`);
  assert.ok(atMax < MAX_EVENTS, `${MAX_ROUNDS} rounds would write ${atMax}`);
  assert.ok(one.run + 4 * perRound < WARN_EVENTS / 4, 'a 5-round run stays far from the warning');
});

// Every execution's history, following the run's continue-as-new chain from its first execution.
// OPSR_RECORD_HISTORIES=1 writes them to test/fixtures/histories for the replay test.
async function executionHistories(workflowId: string, firstRunId: string): Promise<History[]> {
  const histories: History[] = [];
  let runId: string | null | undefined = firstRunId;
  while (runId) {
    const history: History = await env.client.workflow.getHandle(workflowId, runId).fetchHistory();
    histories.push(history);
    const last = history.events?.[history.events.length - 1];
    runId = last?.workflowExecutionContinuedAsNewEventAttributes?.newExecutionRunId;
  }
  if (process.env.OPSR_RECORD_HISTORIES === '1' && histories.length > 1) {
    const dir = path.join(import.meta.dirname, '..', 'fixtures', 'histories');
    for (const [i, h] of histories.entries()) {
      const file = path.join(dir, `continued--${workflowId}-${i + 1}.binpb`);
      await writeFile(file, temporal.api.history.v1.History.encode(h).finish());
    }
  }
  return histories;
}

test('a long run continues as new: each execution bounded, the result as without it', async () => {
  const promptsFile = path.join(tmp, 'can-prompts.jsonl');
  await writeFile(
    promptsFile,
    Array.from({ length: 4 }, (_, i) => JSON.stringify({ prompt: `p${i}` }) + '\n').join(''),
  );
  const rounds = 6;
  const run = async (storage: string, tuning: WorkflowTuning) => {
    const config = {
      runId: 'long',
      storage: path.join(tmp, storage),
      model: baseModel,
      prompts: { file: promptsFile },
      rounds,
      prefixes: { rejectedScores: [3, 5, 7, 9, 3, 5] },
      sampling: { shardSize: 1 },
      training: { learningRate: 1e-6 },
      rewardModel: { type: 'builtin', name: 'test' },
      evaluation: { prompts: { file: promptsFile }, prefixCurve: true },
    };
    const w = await createWorkers({
      connection: env.nativeConnection,
      activities: testActivities({ log: path.join(tmp, `${storage}.log`) }),
    });
    const running = w.run();
    try {
      const h = await env.client.workflow.start(WORKFLOW_TYPES.run, {
        taskQueue: TASK_QUEUES.control,
        workflowId: storage,
        args: [config, tuning],
      });
      const result = (await h.result()) as RunResult;
      // The query reaches the last execution, which knows every round.
      const progress = await env.client.workflow.getHandle(storage).query(progressQuery);
      assert.equal(progress.completed.length, rounds);
      assert.equal(progress.phase, 'done');
      const histories = await executionHistories(storage, h.firstExecutionRunId);
      return { result, lengths: histories.map((x) => x.events?.length ?? 0) };
    } finally {
      w.shutdown();
      await running;
    }
  };
  const budget = 120;
  const plain = await run('plain', {});
  const continued = await run('continued', { historyEvents: budget });
  assert.equal(plain.lengths.length, 1);
  const perRound = Math.ceil(plain.lengths[0] / rounds);
  console.log(
    `${rounds} rounds: one execution of ${plain.lengths[0]} events, or with a budget of ` +
      `${budget} events ${continued.lengths.length} executions of ${continued.lengths.join(', ')}`,
  );
  // Bounded by the budget plus the round that crossed it, whatever the rounds.
  assert.ok(continued.lengths.length >= 3, continued.lengths.join(', '));
  for (const n of continued.lengths) assert.ok(n <= budget + perRound, `${n} events`);
  assert.ok(plain.lengths[0] > budget + perRound);

  // The same rounds, models and metrics; only where the files live (so the config's hash) and
  // wall times differ.
  const comparable = (r: RunResult, storage: string) =>
    JSON.parse(
      JSON.stringify({
        ...r,
        configHash: undefined,
        rounds: r.rounds.map((s) => ({ ...s, cost: undefined })),
      }).replaceAll(path.join(tmp, storage), '<storage>'),
    ) as unknown;
  assert.equal(continued.result.rounds.length, rounds);
  assert.deepEqual(comparable(continued.result, 'continued'), comparable(plain.result, 'plain'));
});
