// The `opsr` command against a real Temporal dev server and the real workflows; the worker (in
// this process) runs the workflow tests' activities (test/helpers/workflow-activities.ts), so
// the CLI's run, status, resume, ablation and schedule paths are exercised end to end in seconds.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { createTestEnv } from '../helpers/temporal.ts';
import { readEvents, testActivities, type TestControls } from '../helpers/workflow-activities.ts';
import { createWorkers, type OpsrWorkers } from '../../workers/index.ts';
import { progressQuery, type RunResult } from '../../contracts/workflows.ts';
import { opsr } from '../helpers/opsr-cli.ts';

let env: TestWorkflowEnvironment;
let dir: string;
let workers: OpsrWorkers;
let running: Promise<void>;
let controls: TestControls;
let addr: string[];

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
async function until<T>(
  what: string,
  fn: () => Promise<T | null | undefined | false>,
  timeoutMs = 60_000,
): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(250);
  }
}

before(async () => {
  env = await createTestEnv();
  addr = ['--address', env.address];
  dir = await mkdtemp(join(tmpdir(), 'opsr-cli-temporal-'));
  await mkdir(join(dir, 'base-model'));
  await writeFile(join(dir, 'base-model', 'model.safetensors'), 'base weights\n');
  // Test activities never read the weights, but a run refuses a model directory opsr cannot train.
  await writeFile(
    join(dir, 'base-model', 'config.json'),
    JSON.stringify({ model_type: 'gpt2', n_positions: 1024 }),
  );
  await writeFile(
    join(dir, 'prompts.jsonl'),
    Array.from(
      { length: 8 },
      (_, i) => `${JSON.stringify({ prompt: `add ${i} and ${i + 1}` })}\n`,
    ).join(''),
  );
  // Relative paths: the CLI resolves them against this file's directory.
  await writeFile(
    join(dir, 'run.json'),
    JSON.stringify({
      storage: 'storage',
      model: 'base-model',
      prompts: { file: 'prompts.jsonl' },
      rounds: 3,
      sampling: { shardSize: 2 },
      training: { learningRate: [3e-7, 1e-7, 1e-8] },
    }),
  );
  await writeFile(
    join(dir, 'ablation.json'),
    JSON.stringify({
      base: 'run.json',
      arms: [
        { name: 'fixed', rejectedScores: [3, 3, 3] },
        { name: 'progressive', rejectedScores: 'progressive' },
      ],
    }),
  );
  controls = { log: join(dir, 'events.jsonl') };
  workers = await createWorkers({
    connection: env.nativeConnection,
    activities: testActivities(controls),
  });
  running = workers.run();
});

after(async () => {
  workers?.shutdown();
  await running;
  await env?.teardown();
  if (dir) await rm(dir, { recursive: true, force: true });
});

// Rows of the per-round table: round, rejected score, kept, filtered.
function rounds(stdout: string): number[][] {
  return [...stdout.matchAll(/^(\d+) +(\d+) +(\d+) +(\d+) /gm)].map((m) =>
    m.slice(1, 5).map(Number),
  );
}

describe('opsr against a dev server', () => {
  test('run follows a run to its end, prints per-round table; status shows it again', async () => {
    const r = await opsr(['run', '--config', join(dir, 'run.json'), '--id', 'cli-run', ...addr], {
      cwd: dir,
    });
    assert.equal(r.code, 0, r.stderr);
    assert.match(
      r.stdout,
      /started run cli-run \(preferenceRun, 3 rounds, rejected scores 3, 5, 7\)/,
    );
    // The test sampler answers every 4th prompt identically: 2 of 8 pairs are filtered.
    assert.deepEqual(rounds(r.stdout), [
      [1, 3, 6, 2],
      [2, 5, 6, 2],
      [3, 7, 6, 2],
    ]);
    const port = Number(env.address.split(':')[1]);
    assert.ok(
      r.stdout.includes(
        `Web UI: http://127.0.0.1:${port + 1000}/namespaces/default/workflows/cli-run`,
      ),
      r.stdout,
    );
    assert.match(
      r.stdout,
      new RegExp(
        `run directory: ${join(dir, 'storage', 'runs', 'cli-run').replaceAll('.', '\\.')}`,
      ),
    );

    const s = await opsr(['status', 'cli-run', ...addr]);
    assert.equal(s.code, 0, s.stderr);
    assert.deepEqual(rounds(s.stdout), [
      [1, 3, 6, 2],
      [2, 5, 6, 2],
      [3, 7, 6, 2],
    ]);

    const again = await opsr(['resume', 'cli-run', ...addr]);
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, /cli-run completed: nothing to resume/);

    const missing = await opsr(['status', 'no-such-run', ...addr]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /no run "no-such-run" in namespace default/);
  });

  test('resume: open run left alone; terminated one restarts, reuses finished rounds', async () => {
    controls.log = join(dir, 'events-resume.jsonl');
    // Slow enough that rounds 2 and 3 outlast the two CLI calls below on a quiet machine.
    controls.shardDelayMs = 3000;
    const started = await opsr([
      'run',
      '--config',
      join(dir, 'run.json'),
      '--id',
      'cli-resume',
      '--detach',
      ...addr,
    ]);
    assert.equal(started.code, 0, started.stderr);
    const handle = env.client.workflow.getHandle('cli-resume');
    await until(
      'round 1 to finish',
      async () => (await handle.query(progressQuery)).completed.length >= 1,
    );

    const live = await opsr(['status', 'cli-resume', ...addr]);
    assert.equal(live.code, 0, live.stderr);
    assert.match(live.stdout, /^cli-resume: preferenceRun running since /);
    assert.match(live.stdout, /^cli-resume {2}phase \w+ {2}round [123]\/3/m);
    assert.match(live.stdout, /^ {2}rounds {4}\[[#.]{30}\] +\d+% {2}[123]\/3$/m);
    assert.deepEqual(rounds(live.stdout)[0], [1, 3, 6, 2]);

    const open = await opsr(['resume', 'cli-resume', ...addr]);
    assert.equal(open.code, 0, open.stderr);
    assert.match(open.stdout, /cli-resume is still running: nothing to resume/);
    assert.match(open.stdout, /\d+ workers? polling opsr-control/);

    await handle.terminate('simulated operator stop');
    const st = await opsr(['status', 'cli-resume', ...addr]);
    assert.equal(st.code, 1);
    assert.match(
      st.stdout,
      new RegExp(
        /cli-resume: preferenceRun terminated at .*/.source +
          /\nResume it \(finished work is reused\): opsr resume cli-resume/.source,
      ),
    );

    controls.shardDelayMs = 0;
    const r = await opsr(['resume', 'cli-resume', ...addr]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(
      r.stdout,
      /resumed cli-resume \(preferenceRun, was terminated\) with its original input/,
    );
    assert.deepEqual(rounds(r.stdout), [
      [1, 3, 6, 2],
      [2, 5, 6, 2],
      [3, 7, 6, 2],
    ]);
    // Round 1's four shards were sampled once, before the stop; the resumed run reused them.
    const shards = (await readEvents(controls.log)).filter(
      (e) => e.event === 'shard' && e.round === 1,
    );
    assert.deepEqual(shards.map((e) => (e as { shard: number }).shard).sort(), [0, 1, 2, 3]);
    const result = (await handle.result()) as RunResult;
    assert.equal(result.runDir, join(dir, 'storage', 'runs', 'cli-resume'));
  });

  test('ablation: the arms run and print side by side', async () => {
    // The two prefix arms and a self-judge arm, which has no rejected score.
    const study = JSON.parse(await readFile(join(dir, 'ablation.json'), 'utf8'));
    study.arms.push({ name: 'sr', overrides: { pairs: { source: 'self-judge', candidates: 4 } } });
    await writeFile(join(dir, 'ablation-sr.json'), JSON.stringify(study));
    const r = await opsr([
      'ablation',
      '--config',
      join(dir, 'ablation-sr.json'),
      '--id',
      'cli-abl',
      ...addr,
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /started ablation cli-abl: fixed \[3,3,3\] vs progressive \[3,5,7\]/);
    const rows = [...r.stdout.matchAll(/^(\d) +(fixed|progressive|sr) +(\d+|-) +(\d+) /gm)].map(
      (m) => [Number(m[1]), m[2], m[3]],
    );
    assert.deepEqual(rows, [
      [1, 'fixed', '3'],
      [1, 'progressive', '3'],
      [1, 'sr', '-'],
      [2, 'fixed', '3'],
      [2, 'progressive', '5'],
      [2, 'sr', '-'],
      [3, 'fixed', '3'],
      [3, 'progressive', '7'],
      [3, 'sr', '-'],
    ]);
    const fixed = (await env.client.workflow.getHandle('cli-abl/fixed').result()) as RunResult;
    assert.equal(fixed.runId, 'cli-abl-fixed');
  });

  test('schedule create, list, trigger and delete', async () => {
    const nightly = await opsr([
      'schedule',
      'create',
      '--id',
      'cli-nightly',
      '--ablation',
      join(dir, 'ablation.json'),
      '--paused',
      ...addr,
    ]);
    assert.equal(nightly.code, 0, nightly.stderr);
    assert.match(
      nightly.stdout,
      /created schedule cli-nightly: ablationStudy at "0 2 \* \* \*" \(UTC\), overlap skip, paused/,
    );
    const desc = await env.client.schedule.getHandle('cli-nightly').describe();
    assert.equal(desc.policies.overlap, 'SKIP');
    assert.equal(desc.state.paused, true);
    assert.ok(desc.action.type === 'startWorkflow');
    assert.equal(desc.action.workflowType, 'ablationStudy');
    assert.equal(desc.action.taskQueue, 'opsr-control');
    const input = desc.action.args?.[0] as { base: { model: string }; arms: { name: string }[] };
    assert.equal(input.base.model, join(dir, 'base-model'));
    assert.deepEqual(
      input.arms.map((a) => a.name),
      ['fixed', 'progressive'],
    );
    assert.deepEqual(
      desc.info.nextActionTimes.map((d) => [d.getUTCHours(), d.getUTCMinutes()]).slice(0, 2),
      [
        [2, 0],
        [2, 0],
      ],
    );

    const dup = await opsr([
      'schedule',
      'create',
      '--id',
      'cli-nightly',
      '--ablation',
      join(dir, 'ablation.json'),
      ...addr,
    ]);
    assert.equal(dup.code, 1);
    assert.match(dup.stderr, /schedule cli-nightly already exists/);

    const hourly = await opsr([
      'schedule',
      'create',
      '--id',
      'cli-hourly',
      '--config',
      join(dir, 'run.json'),
      '--cron',
      '30 * * * *',
      '--overlap',
      'buffer_one',
      ...addr,
    ]);
    assert.equal(hourly.code, 0, hourly.stderr);
    assert.equal(
      (await env.client.schedule.getHandle('cli-hourly').describe()).policies.overlap,
      'BUFFER_ONE',
    );

    const listed = await until('both schedules listed', async () => {
      const l = await opsr(['schedule', 'list', ...addr]);
      return l.code === 0 && l.stdout.includes('cli-hourly') && l.stdout.includes('cli-nightly')
        ? l.stdout
        : null;
    });
    assert.match(
      listed,
      /^cli-hourly +preferenceRun +30 \* \* \* \* +active +\S+T\d\d:30:00\.000Z/m,
    );
    assert.match(listed, /^cli-nightly +ablationStudy +0 2 \* \* \* +paused /m);

    // One action now: a whole run under a workflow id of the schedule's, with its own run
    // directory.
    const trig = await opsr(['schedule', 'trigger', 'cli-hourly', ...addr]);
    assert.equal(trig.code, 0, trig.stderr);
    const wfId = await until(
      'the triggered run',
      async () =>
        (await env.client.schedule.getHandle('cli-hourly').describe()).info.recentActions.at(-1)
          ?.action.workflow.workflowId,
    );
    assert.match(wfId, /^cli-hourly-/);
    const result = (await env.client.workflow.getHandle(wfId).result()) as RunResult;
    assert.equal(result.rounds.length, 3);
    assert.equal(result.runDir, join(dir, 'storage', 'runs', result.runId));

    for (const id of ['cli-nightly', 'cli-hourly']) {
      const del = await opsr(['schedule', 'delete', id, ...addr]);
      assert.equal(del.code, 0, del.stderr);
      assert.match(del.stdout, new RegExp(`deleted schedule ${id}`));
    }
    const gone = await opsr(['schedule', 'delete', 'cli-nightly', ...addr]);
    assert.equal(gone.code, 1);
    assert.match(gone.stderr, /no schedule "cli-nightly"/);
    await until(
      'an empty schedule list',
      async () => (await opsr(['schedule', 'list', ...addr])).stdout === 'no schedules\n',
    );
  });

  test('schedule create refuses a config that fixes runId', async () => {
    await writeFile(
      join(dir, 'fixed-id.json'),
      JSON.stringify({ runId: 'same', model: 'base-model', prompts: { file: 'prompts.jsonl' } }),
    );
    const r = await opsr([
      'schedule',
      'create',
      '--id',
      'x',
      '--config',
      join(dir, 'fixed-id.json'),
      ...addr,
    ]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /sets runId "same": every scheduled run would share one run directory/);
  });
});
