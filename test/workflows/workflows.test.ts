// The workflows on a real Temporal dev server, with test activities
// (test/helpers/workflow-activities.ts).
// OPSR_RECORD_HISTORIES=1 rewrites test/fixtures/histories/*.binpb from these runs; the replay
// test (test/workflows/replay.test.ts) replays them so a change that breaks determinism fails.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, mkdir, readFile, readdir, rm, writeFile, rename } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import proto from '@temporalio/proto';
const { temporal } = proto;
import {
  ApplicationFailure,
  CancelledFailure,
  WorkflowFailedError,
  WorkflowNotFoundError,
} from '@temporalio/client';
import { createTestEnv } from '../helpers/temporal.ts';
import { readEvents, testActivities, type TestControls } from '../helpers/workflow-activities.ts';
import { createWorkers, installWorkerLogging } from '../../workers/index.ts';
import {
  progressQuery,
  SEARCH_ATTRIBUTES,
  stopAfterRoundSignal,
  TASK_QUEUES,
  WORKFLOW_TYPES,
  type AblationResult,
  type RunProgress,
  type RunResult,
  type WorkflowTuning,
} from '../../contracts/workflows.ts';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const HISTORIES = path.join(HERE, '..', 'fixtures', 'histories');
const RECORD = process.env.OPSR_RECORD_HISTORIES === '1';
// Short heartbeats and retries: a killed worker's activity moves on within seconds.
const TUNING: WorkflowTuning = {
  heartbeatTimeoutS: { sampler: 3, trainer: 3 },
  retry: { initialIntervalMs: 200, maximumIntervalMs: 1000 },
};

let env: TestWorkflowEnvironment;
let tmp: string;
let baseModel: string;
let promptsFile: string;

before(async () => {
  installWorkerLogging();
  env = await createTestEnv();
  tmp = await mkdtemp(path.join(os.tmpdir(), 'opsr-workflows-'));
  baseModel = path.join(tmp, 'base-model');
  await mkdir(baseModel);
  await writeFile(path.join(baseModel, 'model.safetensors'), 'base weights\n');
  promptsFile = path.join(tmp, 'prompts.jsonl');
  const prompts = Array.from({ length: 8 }, (_, i) => ({ prompt: `add ${i} and ${i + 1}` }));
  await writeFile(promptsFile, prompts.map((p) => JSON.stringify(p) + '\n').join(''));
});

after(async () => {
  await env?.teardown();
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

function runConfig(runId: string, over: Record<string, unknown> = {}) {
  return {
    runId,
    storage: path.join(tmp, 'storage'),
    model: baseModel,
    prompts: { file: promptsFile },
    rounds: 3,
    sampling: { shardSize: 2 },
    training: { loss: 'simpo', learningRate: [3e-7, 1e-7, 1e-8] },
    rewardModel: { type: 'builtin', name: 'test' },
    ...over,
  };
}

async function withWorker<T>(controls: TestControls, fn: () => Promise<T>): Promise<T> {
  const w = await createWorkers({
    connection: env.nativeConnection,
    activities: testActivities(controls),
  });
  const running = w.run();
  try {
    return await fn();
  } finally {
    w.shutdown();
    await running;
  }
}

function startRun(workflowId: string, config: unknown) {
  return env.client.workflow.start(WORKFLOW_TYPES.run, {
    taskQueue: TASK_QUEUES.control,
    workflowId,
    args: [config, TUNING],
  });
}

async function recordHistories(name: string, workflowIds: string[]): Promise<void> {
  if (!RECORD) return;
  await mkdir(HISTORIES, { recursive: true });
  for (const id of workflowIds) {
    // Binary protobuf: the installed SDK's JSON history converter trips over its duplicated
    // protobufjs copies ("type must be a Type"); encode/decode use one copy and are exact.
    const history = await env.client.workflow.getHandle(id).fetchHistory();
    await writeFile(
      path.join(HISTORIES, `${name}--${id.replaceAll('/', '_')}.binpb`),
      temporal.api.history.v1.History.encode(history).finish(),
    );
  }
}

const logFile = (name: string) => path.join(tmp, `${name}.events.jsonl`);
const readJson = async <T>(file: string): Promise<T> =>
  JSON.parse(await readFile(file, 'utf8')) as T;

interface Manifest {
  round: number;
  referenceModelDir: string;
  rejectedScore: number;
  counts: Record<string, number>;
}

describe('preferenceRun on a dev server', () => {
  test('three rounds chain reference -> trained policy with rejected scores 3, 5, 7', async () => {
    const log = logFile('full');
    const config = runConfig('full', {
      evaluation: { prompts: { file: promptsFile }, prefixCurve: true },
    });
    const seen: RunProgress[] = [];
    let final: RunProgress | undefined;
    let details: string | undefined;
    let roundProgress: RunProgress | undefined;
    const result = (await withWorker({ log, shardDelayMs: 150, trainStepDelayMs: 20 }, async () => {
      const handle = await startRun('full', config);
      const done = handle.result();
      let finished = false;
      void done
        .finally(() => {
          finished = true;
        })
        .catch(() => {});
      while (!finished) {
        seen.push(await handle.query(progressQuery));
        await new Promise((r) => setTimeout(r, 100));
      }
      final = await handle.query(progressQuery); // a closed workflow still answers, from a worker
      details = (await handle.query<{ currentDetails?: string }>('__temporal_workflow_metadata'))
        .currentDetails;
      roundProgress = await env.client.workflow.getHandle('full/round-2').query(progressQuery);
      return done;
    })) as RunResult;

    assert.deepEqual(
      result.rounds.map((r) => r.rejectedScore),
      [3, 5, 7],
    );
    assert.equal(result.stopped, false);
    // 8 prompts; every 4th pair is identical and filtered.
    assert.deepEqual(
      result.rounds.map((r) => [r.pairsKept, r.pairsFiltered]),
      [
        [6, 2],
        [6, 2],
        [6, 2],
      ],
    );
    assert.deepEqual(
      result.rounds.map((r) => r.filteredBy),
      [{ identical: 2 }, { identical: 2 }, { identical: 2 }],
    );
    assert.deepEqual(
      result.rounds.map((r) => r.rejectedReward?.toFixed(2)),
      ['0.30', '0.50', '0.70'],
    );
    assert.deepEqual(
      result.rounds.map((r) => r.chosenReward),
      [1, 1, 1],
    );
    assert.deepEqual(
      result.rounds.map((r) => r.policyReward?.toFixed(2)),
      ['0.30', '0.40', '0.50'],
    );
    assert.equal(result.baseReward, 0.2);
    assert.deepEqual(
      result.prefixCurve?.map((p) => p.score),
      [1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
    );
    assert.equal(result.finalModel, result.rounds[2].modelDir);

    // The chain: round 1's reference is the base model, round k's is round k-1's trained policy.
    const manifests = await Promise.all(result.rounds.map((r) => readJson<Manifest>(r.manifest)));
    assert.deepEqual(
      manifests.map((m) => m.referenceModelDir),
      [baseModel, result.rounds[0].modelDir, result.rounds[1].modelDir],
    );
    assert.deepEqual(
      manifests.map((m) => m.counts.kept),
      [6, 6, 6],
    );
    const weights = await Promise.all(
      result.rounds.map((r) => readFile(path.join(r.modelDir, 'model.safetensors'), 'utf8')),
    );
    assert.match(weights[0], /^trained round 1 from \w+ lr 3e-7 /);
    assert.match(weights[1], /^trained round 2 from \w+ lr 1e-7 /);
    assert.match(weights[2], /^trained round 3 from \w+ lr 1e-8 /);
    assert.deepEqual(
      result.rounds.map((r) => r.modelDir),
      [1, 2, 3].map((k) =>
        path.join(tmp, 'storage', 'runs', 'full', `round-${k}`, 'train', 'final'),
      ),
    );
    assert.deepEqual(
      await readJson(path.join(tmp, 'storage', 'runs', 'full', 'report.json')),
      JSON.parse(JSON.stringify(result)),
    );

    // Each round is a child workflow `<runId>/round-<k>`, with its own search attributes.
    for (const k of [1, 2, 3]) {
      const d = await env.client.workflow.getHandle(`full/round-${k}`).describe();
      assert.equal(d.type, WORKFLOW_TYPES.round);
      assert.equal(d.status.name, 'COMPLETED');
      assert.equal(d.typedSearchAttributes.get(SEARCH_ATTRIBUTES.rejectedScore), [3, 5, 7][k - 1]);
      assert.equal(d.typedSearchAttributes.get(SEARCH_ATTRIBUTES.phase), 'done');
    }
    const run = await env.client.workflow.getHandle('full').describe();
    assert.equal(run.typedSearchAttributes.get(SEARCH_ATTRIBUTES.round), 3);
    assert.equal(run.typedSearchAttributes.get(SEARCH_ATTRIBUTES.phase), 'done');
    assert.equal(run.typedSearchAttributes.get(SEARCH_ATTRIBUTES.rejectedScore), 7);

    // The run's query showed the rounds' live sampling progress and ends with every round.
    assert.ok(
      seen.some(
        (p) =>
          p.phase === 'sampling' &&
          p.sampled.total === 8 &&
          p.sampled.done > 0 &&
          p.sampled.done < 8,
      ),
      `no live sampling progress among ${seen.length} queries`,
    );
    assert.ok(seen.some((p) => p.round === 2 && p.rejectedScore === 5));
    assert.equal(final?.phase, 'done');
    assert.deepEqual(
      final?.completed.map((r) => r.round),
      [1, 2, 3],
    );
    assert.deepEqual(
      [
        roundProgress?.round,
        roundProgress?.phase,
        roundProgress?.rejectedScore,
        roundProgress?.sampled,
        roundProgress?.train,
      ],
      [2, 'done', 5, { done: 8, total: 8 }, { step: 6, totalSteps: 6 }],
    );
    // The Web UI's current details: a markdown summary with the per-round table.
    assert.match(details ?? '', /round \*\*3\/3\*\*, phase \*\*done\*\*/);
    assert.match(
      details ?? '',
      /\| 2 \| 5 \| 6 \| 2 \| 1\.0000 \| 0\.5000 \| 0\.4000 \| 0\.5000 \|/,
    );

    // Each round's server is released after its sampling; the last evaluation's at the end.
    const events = await readEvents(log);
    const served = events
      .filter((e) => e.event === 'serve')
      .map((e) => (e as { modelDir: string }).modelDir);
    assert.deepEqual(served, [
      baseModel,
      baseModel,
      result.rounds[0].modelDir,
      result.rounds[0].modelDir,
      result.rounds[1].modelDir,
      result.rounds[1].modelDir,
      result.rounds[2].modelDir,
    ]);
    assert.equal(events.filter((e) => e.event === 'release').length, 4);
    await recordHistories('full', ['full', 'full/round-1', 'full/round-2', 'full/round-3']);
  });

  test('self-judge pairs (the SR baseline) and judge evaluations after chosen rounds', async () => {
    const log = logFile('sr');
    const config = runConfig('sr', {
      rounds: 2,
      training: { loss: 'simpo', learningRate: [3e-7, 1e-7] },
      judges: { verifier: { type: 'builtin', name: 'test' } },
      pairs: { source: 'self-judge', candidates: 4 },
      evals: {
        rounds: [0, 2],
        sets: [{ kind: 'pairwise', name: 'wr', judge: 'verifier', file: promptsFile }],
      },
    });
    const result = (await withWorker({ log }, () =>
      startRun('sr', config).then((h) => h.result()),
    )) as RunResult;
    const events = await readEvents(log);
    const attempts = (a: string) =>
      events.filter((e) => e.event === 'attempt' && e.activity === a).length;
    assert.equal(attempts('samplePairs'), 0);
    assert.equal(attempts('sampleSelfJudgedPairs'), 2);
    // 8 prompts, every 4th a tie: 6 pairs per round; 4 candidates and 4 judgements per prompt.
    assert.deepEqual(
      result.rounds.map((r) => [r.pairsKept, r.dropped?.tie]),
      [
        [6, 2],
        [6, 2],
      ],
    );
    for (const r of result.rounds) {
      assert.deepEqual(
        [r.cost?.sampling, r.cost?.judging],
        [
          { requests: 32, tokens: 320 },
          { requests: 32, cached: 0, tokens: 3200 },
        ],
      );
      assert.equal(r.cost?.tokensPerKeptPair, 3520 / 6);
      assert.ok(
        ['sampling', 'filtering', 'dataset', 'training'].every((p) => r.cost!.wallS[p] >= 0),
      );
      const m = await readJson<{ cost: unknown; counts: Record<string, number> }>(r.manifest);
      assert.deepEqual(m.cost, r.cost);
      assert.equal(m.counts.droppedTie, 2);
    }
    // Evaluated before round 1 and after round 2 only; LC refitted over both with difficulty.
    assert.deepEqual(
      result.judged?.map((j) => [j.set, j.label, j.winRate]),
      [
        ['wr', 'base', 0.5],
        ['wr', 'round-2', 0.7],
      ],
    );
    for (const j of result.judged!) assert.match(j.lcVariant!, /instruction difficulty/);
    const runDir = path.dirname(path.dirname(result.rounds[0].manifest));
    assert.deepEqual(await readJson(path.join(runDir, 'eval', 'summary.json')), result.judged);
    const md = await readFile(path.join(runDir, 'report.md'), 'utf8');
    assert.match(md, /\| wr \| round-2 \| 0\.700 ± 0\.000 \|/);
    // The round table: ties and unparsable prompts where prefix runs show the rejected score.
    assert.match(md, /\| round \| dropped \(tie \/ unparsable\) \| pairs kept \|/);
    assert.match(md, /\| 2 \| 2 \/ 0 \| 6 \|/);
    assert.doesNotMatch(md, /rejected score/);
  });

  test('a failing activity is retried and the rest of the round is not redone', async () => {
    const log = logFile('retry');
    const result = await withWorker({ log, failFilterAttempts: 2 }, async () =>
      (
        await startRun('retry', runConfig('retry', { rounds: 1, training: { learningRate: 1e-6 } }))
      ).result(),
    );
    assert.equal(result.rounds.length, 1);
    assert.equal(result.rounds[0].pairsKept, 6);
    const attempts = (await readEvents(log)).filter((e) => e.event === 'attempt');
    assert.deepEqual(
      attempts.map(
        (e) => `${(e as { activity: string }).activity}#${(e as { attempt: number }).attempt}`,
      ),
      ['samplePairs#1', 'filterPairs#1', 'filterPairs#2', 'filterPairs#3', 'trainPolicy#1'],
    );
    await recordHistories('retry', ['retry', 'retry/round-1']);
  });

  test('bad input from an activity fails the run at once (BadInput is not retried)', async () => {
    const log = logFile('badinput');
    const err = await withWorker({ log, filterErrorType: 'BadInput' }, async () =>
      (
        await startRun(
          'badinput',
          runConfig('badinput', { rounds: 1, training: { learningRate: 1e-6 } }),
        )
      )
        .result()
        .then(
          () => null,
          (e: unknown) => e,
        ),
    );
    assert.ok(err instanceof WorkflowFailedError, String(err));
    // run <- child round <- activity <- BadInput
    const failure = (err.cause as { cause?: { cause?: unknown } })?.cause?.cause;
    assert.ok(failure instanceof ApplicationFailure, String(failure));
    assert.equal(failure.type, 'BadInput');
    assert.match(failure.message, /filter\.scoreTalkPatterns: injected BadInput/);
    const attempts = (await readEvents(log)).filter(
      (e) => e.event === 'attempt' && e.activity === 'filterPairs',
    );
    assert.equal(attempts.length, 1);
    const d = await env.client.workflow.getHandle('badinput').describe();
    assert.equal(d.typedSearchAttributes.get(SEARCH_ATTRIBUTES.phase), 'failed');
  });

  test('the init stage (paper 3.2) gives round 1 its reference', async () => {
    const log = logFile('init');
    const config = runConfig('init', {
      rounds: 1,
      training: { learningRate: 1e-6 },
      init: { sft: { data: promptsFile } },
      evaluation: { prompts: { file: promptsFile }, prefixCurve: true, prefixScores: [1, 10] },
    });
    const result = (await withWorker({ log }, async () =>
      (await startRun('init', config)).result(),
    )) as RunResult;
    const initModel = path.join(tmp, 'storage', 'runs', 'init', 'init', 'final');
    const manifest = await readJson<Manifest>(result.rounds[0].manifest);
    assert.equal(manifest.referenceModelDir, initModel);
    // The base evaluation and its prefix curve are of the initialized policy, before round 1.
    const served = (await readEvents(log))
      .filter((e) => e.event === 'serve')
      .map((e) => (e as { modelDir: string }).modelDir);
    assert.deepEqual(served, [initModel, initModel, result.rounds[0].modelDir]);
    assert.deepEqual(result.prefixCurve, [
      { score: 1, meanReward: 0.1 },
      { score: 10, meanReward: 1 },
    ]);
    await recordHistories('init', ['init', 'init/round-1']);
  });

  test('stopAfterRound ends the run after the current round', async () => {
    const log = logFile('stop');
    const { result, progress } = await withWorker({ log, shardDelayMs: 100 }, async () => {
      const handle = await startRun('stop', runConfig('stop'));
      await handle.signal(stopAfterRoundSignal);
      const r = await handle.result();
      return { result: r as RunResult, progress: await handle.query(progressQuery) };
    });
    assert.equal(result.stopped, true);
    assert.deepEqual(
      result.rounds.map((r) => r.round),
      [1],
    );
    assert.equal(result.finalModel, result.rounds[0].modelDir);
    assert.equal(progress.stopRequested, true);
    assert.equal(progress.phase, 'stopped');
    await assert.rejects(
      env.client.workflow.getHandle('stop/round-2').describe(),
      WorkflowNotFoundError,
    );
    await recordHistories('stop', ['stop', 'stop/round-1']);
  });

  test('an invalid config fails the run once, non-retryable, with every message', async () => {
    const bad = runConfig('bad', {
      rounds: 2,
      prefixes: { rejectedScores: [3, 12, 5] },
      sampling: { temperature: -1 },
    });
    const err = await withWorker({ log: logFile('bad') }, async () => {
      const handle = await startRun('bad', bad);
      return handle.result().then(
        () => null,
        (e: unknown) => e,
      );
    });
    assert.ok(err instanceof WorkflowFailedError, String(err));
    const cause = err.cause;
    assert.ok(cause instanceof ApplicationFailure);
    assert.equal(cause.type, 'ConfigError');
    assert.equal(cause.nonRetryable, true);
    assert.match(cause.message, /prefixes\.rejectedScores\[1\]/);
    assert.match(cause.message, /prefixes\.rejectedScores: has 3 scores for 2 rounds/);
    assert.match(cause.message, /sampling\.temperature/);
    assert.ok((cause.details ?? []).length >= 3, JSON.stringify(cause.details));
    // Failed on its first workflow task: no retried tasks, no activity ran.
    const history = await env.client.workflow.getHandle('bad').fetchHistory();
    const events = history.events ?? [];
    assert.equal(events.filter((e) => e.workflowTaskFailedEventAttributes).length, 0);
    assert.equal(events.filter((e) => e.activityTaskScheduledEventAttributes).length, 0);
    assert.equal(events.filter((e) => e.workflowExecutionFailedEventAttributes).length, 1);
    assert.deepEqual(await readEvents(logFile('bad')), []);
    await recordHistories('bad', ['bad']);
  });

  test('cancelling the run cancels training, which keeps its checkpoints', async () => {
    const log = logFile('cancel');
    const err = await withWorker({ log, trainStepDelayMs: 1000 }, async () => {
      const handle = await startRun(
        'cancel',
        runConfig('cancel', { rounds: 1, training: { learningRate: 1e-6 } }),
      );
      while (!(await readEvents(log)).some((e) => e.event === 'step'))
        await new Promise((r) => setTimeout(r, 50));
      await handle.cancel();
      return handle.result().then(
        () => null,
        (e: unknown) => e,
      );
    });
    assert.ok(err instanceof WorkflowFailedError, String(err));
    assert.ok(err.cause instanceof CancelledFailure, String(err.cause));
    const events = await readEvents(log);
    const cancelled = events.find((e) => e.event === 'cancelled') as { step: number } | undefined;
    assert.ok(cancelled, 'the training activity saw the cancellation');
    assert.ok(cancelled.step >= 1);
    const ck = await readdir(
      path.join(tmp, 'storage', 'runs', 'cancel', 'round-1', 'train', 'checkpoints'),
    );
    assert.ok(ck.includes(`step-${String(cancelled.step).padStart(8, '0')}`), ck.join(','));
    // The child round was cancelled with the run; the sampler was released.
    const round = await env.client.workflow.getHandle('cancel/round-1').describe();
    assert.equal(round.status.name, 'CANCELLED');
    assert.ok(events.some((e) => e.event === 'release'));
  });

  test('worker killed mid-sampling: a second finishes, same artifacts, none redone', async () => {
    const storage = path.join(tmp, 'storage');
    const config = runConfig('crash', { rounds: 2, training: { learningRate: [1e-6, 1e-7] } });
    const runDir = path.join(storage, 'runs', 'crash');

    // Uninterrupted reference run, moved aside.
    await withWorker({ log: logFile('clean') }, async () =>
      (await startRun('crash', config)).result(),
    );
    const cleanDir = path.join(tmp, 'crash-clean');
    await rename(runDir, cleanDir);

    const log = logFile('crash');
    const controls: TestControls = { log, shardDelayMs: 400 };
    const child = await spawnWorker(controls);
    let handle: Awaited<ReturnType<typeof startRun>>;
    try {
      handle = await startRun('crash', config);
      // Kill once two of round 1's four shards are written.
      for (;;) {
        const shards = (await readEvents(log)).filter((e) => e.event === 'shard' && e.round === 1);
        if (shards.length >= 2) break;
        if (child.exitCode !== null)
          throw new Error(`worker process exited early (${child.exitCode})`);
        await new Promise((r) => setTimeout(r, 20));
      }
      child.kill('SIGKILL');
      await new Promise((r) => child.once('exit', r));
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
    const result = (await withWorker({ ...controls, shardDelayMs: 0 }, () =>
      handle.result(),
    )) as RunResult;
    assert.deepEqual(
      result.rounds.map((r) => r.pairsKept),
      [6, 6],
    );

    const events = await readEvents(log);
    const shardEvents = events.filter((e) => e.event === 'shard') as {
      round: number;
      shard: number;
      pid: number;
    }[];
    const keys = shardEvents.map((e) => `${e.round}/${e.shard}`);
    assert.deepEqual(
      [...keys].sort(),
      ['1/0', '1/1', '1/2', '1/3', '2/0', '2/1', '2/2', '2/3'],
      'every shard made exactly once',
    );
    assert.ok(
      shardEvents.filter((e) => e.round === 1 && e.pid === child.pid).length >= 2,
      "the first worker made round 1's first shards",
    );
    assert.ok(
      shardEvents.some((e) => e.round === 1 && e.pid === process.pid),
      'the second worker finished round 1',
    );
    const sampleAttempts = events.filter(
      (e) => e.event === 'attempt' && e.activity === 'samplePairs' && e.round === 1,
    );
    assert.ok(sampleAttempts.length >= 2, 'sampling was retried after the kill');

    // Same files, same bytes as the uninterrupted run (both were written under the same runDir),
    // but for the measured wall time per phase.
    const listA = await listFiles(cleanDir);
    const listB = await listFiles(runDir);
    assert.deepEqual(listB, listA);
    const read = async (p: string) =>
      (await readFile(p, 'utf8')).replace(/"wallS": \{[^}]*\}/g, '"wallS": {}');
    for (const f of listA) {
      assert.equal(
        await read(path.join(runDir, f)),
        await read(path.join(cleanDir, f)),
        `${f} differs`,
      );
    }
  });

  test('ablationStudy runs each arm as a child run and lines up their rounds', async () => {
    const base = runConfig('unused', { rounds: 2, training: { learningRate: [1e-6, 1e-7] } });
    delete (base as Record<string, unknown>).runId;
    const input = {
      studyId: 'abl',
      base,
      arms: [
        { name: 'fixed', rejectedScores: 'fixed' },
        { name: 'progressive', rejectedScores: 'progressive' },
      ],
    };
    const result = (await withWorker({ log: logFile('ablation') }, async () =>
      env.client.workflow.execute(WORKFLOW_TYPES.ablation, {
        taskQueue: TASK_QUEUES.control,
        workflowId: 'abl',
        args: [input, TUNING],
      }),
    )) as AblationResult;
    assert.equal(result.studyId, 'abl');
    assert.deepEqual(
      result.arms.map((a) => [a.name, a.workflowId, a.result.runId]),
      [
        ['fixed', 'abl/fixed', 'abl-fixed'],
        ['progressive', 'abl/progressive', 'abl-progressive'],
      ],
    );
    assert.deepEqual(
      result.table.map((row) => [
        row.round,
        row.arms.fixed.rejectedScore,
        row.arms.progressive.rejectedScore,
      ]),
      [
        [1, 3, 3],
        [2, 3, 5],
      ],
    );
    assert.deepEqual(
      result.table.map((row) => row.arms.progressive.loss),
      [1, 0.5],
    );
    const d = await env.client.workflow.getHandle('abl-progressive/round-2').describe();
    assert.equal(d.status.name, 'COMPLETED');
    await recordHistories('ablation', ['abl', 'abl/fixed', 'abl-fixed/round-1']);
  });

  test('seeded ablation: arm x seed runs, Table 2, paired diffs, report, history', async () => {
    const base = runConfig('unused', {
      rounds: 2,
      training: { learningRate: [1e-6, 1e-7] },
      evaluation: { prompts: { file: promptsFile } },
    });
    delete (base as Record<string, unknown>).runId;
    const input = {
      studyId: 'sabl',
      base,
      seeds: [0, 1, 2],
      arms: [
        { name: 'fixed', rejectedScores: [3, 3] },
        { name: 'progressive', rejectedScores: [3, 5] },
      ],
    };
    const start = () =>
      withWorker({ log: logFile('sabl') }, async () =>
        env.client.workflow.execute(WORKFLOW_TYPES.ablation, {
          taskQueue: TASK_QUEUES.control,
          workflowId: 'sabl',
          args: [input, TUNING],
        }),
      ) as Promise<AblationResult>;
    const r = await start();
    assert.deepEqual(
      r.arms.map((a) => [a.workflowId, a.result.runId, a.reused]),
      [0, 1, 2].flatMap((s) =>
        ['fixed', 'progressive'].map((arm) => [
          `sabl/${arm}/seed-${s}`,
          `sabl-${arm}-seed-${s}`,
          false,
        ]),
      ),
    );
    const s = r.summary!;
    // Test evaluation: policy reward 0.2 + 0.1 round + 0.01 seed, so over seeds 0..2 sd 0.01.
    const cell = (arm: string, round: number) =>
      s.cells.find((c) => c.arm === arm && c.round === round)!;
    assert.ok(Math.abs(cell('progressive', 1).stats.policyReward.mean! - 0.31) < 1e-12);
    assert.ok(Math.abs(cell('progressive', 1).stats.policyReward.sd! - 0.01) < 1e-12);
    assert.ok(
      Math.abs(cell('fixed', 0).stats.policyReward.mean! - 0.21) < 1e-12,
      'round 0 is the base',
    );
    assert.deepEqual(cell('progressive', 2).rejectedScores, [5]);
    const diff = (metric: string, round: number) =>
      s.diffs.find((d) => d.metric === metric && d.round === round && d.arm === 'progressive')!
        .diff;
    // Rejected reward = rejected score / 10: 0.5 - 0.3 in round 2, the same for every seed.
    assert.ok(
      Math.abs(diff('rejectedReward', 2).mean! - 0.2) < 1e-12 &&
        Math.abs(diff('rejectedReward', 2).hi! - 0.2) < 1e-12,
    );
    // Paired by seed, the seed spread cancels: a zero difference with a zero-width interval.
    assert.deepEqual(
      [diff('policyReward', 2).n, diff('policyReward', 2).mean, diff('policyReward', 2).lo],
      [3, 0, 0],
    );

    const html = await readFile(r.report!.html, 'utf8');
    assert.ok((html.match(/<svg/g) ?? []).length >= 3, 'figures inline');
    assert.doesNotMatch(html, /<script|<link|src="http/, 'self-contained');
    assert.match(html, /0\.310 ± 0\.010/);
    const md = await readFile(r.report!.markdown, 'utf8');
    assert.match(
      md,
      /\| progressive \[3,5\] \| 0\.210 ± 0\.010 \| 0\.310 ± 0\.010 \| 0\.410 ± 0\.010 \|/,
    );
    assert.match(md, /!\[[^\]]+\]\(figures\/policy-reward\.svg\)/);
    const lines = async () =>
      (await readFile(r.report!.history, 'utf8'))
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as { studyId: string });
    assert.equal((await lines()).filter((h) => h.studyId === 'sabl').length, 1);
    assert.equal((await lines()).at(-1)!.studyId, 'sabl', 'appended last');
    await recordHistories('ablation-seeds', ['sabl', 'sabl/progressive/seed-1']);

    // Started again with the same id: every arm-seed run is reused, the history keeps one line.
    const again = await start();
    assert.deepEqual(
      again.arms.map((a) => a.reused),
      [true, true, true, true, true, true],
    );
    assert.deepEqual(again.summary, r.summary);
    assert.equal(
      (await lines()).filter((h) => h.studyId === 'sabl').length,
      1,
      'one line per study id',
    );
  });
});

async function spawnWorker(controls: TestControls): Promise<ChildProcess> {
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', path.join(HERE, '..', 'helpers', 'worker-process.ts')],
    {
      env: {
        ...process.env,
        OPSR_TEST_ADDRESS: env.address,
        OPSR_TEST_CONTROLS: JSON.stringify(controls),
      },
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  );
  await new Promise<void>((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (b: Buffer) => {
      out += b.toString();
      if (out.includes('ready')) resolve();
    });
    child.once('exit', (code) => reject(new Error(`worker process exited (${code}) before ready`)));
  });
  return child;
}

async function listFiles(dir: string, prefix = ''): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(path.join(dir, prefix), { withFileTypes: true })) {
    const rel = path.join(prefix, e.name);
    if (e.isDirectory()) out.push(...(await listFiles(dir, rel)));
    else out.push(rel);
  }
  return out.sort();
}
