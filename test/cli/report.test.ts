// Run reports: a preferenceRun (real workflows, the workflow-logic test activities, the real report
// writer) leaves report.json / report.md / a self-contained report.html with its figures and the
// per-round TensorBoard scalars, which the tensorboard package reads back equal to report.json;
// `opsr report ID` rebuilds every file byte for byte from report.json alone.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TASK_QUEUES, WORKFLOW_TYPES, type RunResult } from '../../contracts/workflows.ts';
import { createWorkers, installWorkerLogging } from '../../workers/index.ts';
import { createTestEnv } from '../helpers/temporal.ts';
import { opsr, ROOT } from '../helpers/opsr-cli.ts';
import { testActivities } from '../helpers/workflow-activities.ts';
import { appendHistory, historyEntry } from '../../report/study.ts';
import {
  STUDY_METRICS,
  type AblationResult,
  type StudySummary,
} from '../../contracts/workflows.ts';

installWorkerLogging();
const root = await mkdtemp(join(tmpdir(), 'opsr-report-'));
after(() => rm(root, { recursive: true, force: true }));

async function files(dir: string): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  for (const e of await readdir(dir, { recursive: true, withFileTypes: true })) {
    if (e.isFile())
      out.set(
        join(e.parentPath, e.name).slice(dir.length),
        await readFile(join(e.parentPath, e.name)),
      );
  }
  return out;
}

test('a run writes report.html, figures, TensorBoard scalars; opsr report rebuilds', async () => {
  const model = join(root, 'model');
  await mkdir(model, { recursive: true });
  await writeFile(join(model, 'config.json'), '{}\n');
  await writeFile(join(model, 'model.safetensors'), 'base weights\n');
  const prompts = join(root, 'prompts.jsonl');
  await writeFile(
    prompts,
    Array.from({ length: 6 }, (_, i) => `{"prompt": "add ${i} and ${i + 1}"}\n`).join(''),
  );
  const storage = join(root, 'storage');
  const config = {
    runId: 'rep',
    storage,
    model,
    prompts: { file: prompts },
    rounds: 3,
    sampling: { shardSize: 2 },
    training: { loss: 'simpo', learningRate: 1e-6 },
    rewardModel: { type: 'builtin', name: 'digits' },
    evaluation: { prompts: { file: prompts }, prefixCurve: true },
  };
  const env = await createTestEnv();
  let result: RunResult;
  try {
    const w = await createWorkers({
      connection: env.nativeConnection,
      activities: testActivities({ log: join(root, 'events.jsonl') }),
    });
    const running = w.run();
    try {
      result = (await env.client.workflow.execute(WORKFLOW_TYPES.run, {
        taskQueue: TASK_QUEUES.control,
        workflowId: 'rep',
        args: [config],
      })) as RunResult;
    } finally {
      w.shutdown();
      await running;
    }
  } finally {
    await env.teardown();
  }
  const runDir = join(storage, 'runs', 'rep');
  const html = await readFile(join(runDir, 'report.html'), 'utf8');
  assert.equal(
    (html.match(/<svg/g) ?? []).length,
    3,
    'policy reward, chosen/rejected and prefix curve figures inline',
  );
  assert.doesNotMatch(html, /<script|<link|<img|src="http/, 'self-contained: nothing to fetch');
  for (const r of result.rounds)
    assert.ok(
      html.includes(`<td class="r">${r.policyReward!.toFixed(3)}</td>`),
      `round ${r.round} in the table`,
    );
  const md = await readFile(join(runDir, 'report.md'), 'utf8');
  assert.match(md, /!\[[^\]]+\]\(figures\/prefix-curve\.svg\)/);

  // Per-round scalars as TensorBoard shows them: step = round, the base at step 0.
  const tb = JSON.parse(
    execFileSync(
      join(ROOT, '.venv', 'bin', 'python'),
      [join(ROOT, 'test', 'helpers', 'tensorboard_scalars.py'), join(storage, 'runs')],
      { encoding: 'utf8' },
    ),
  ) as Record<string, Record<string, [number, number][]>>;
  const run = tb[join('rep', 'tensorboard', 'run')];
  assert.deepEqual(run['run/policy_reward'], [
    [0, Math.fround(result.baseReward!)],
    ...result.rounds.map((r) => [r.round, Math.fround(r.policyReward!)]),
  ]);
  assert.deepEqual(
    run['run/rejected_score'],
    result.rounds.map((r) => [r.round, r.rejectedScore]),
  );
  assert.deepEqual(
    run['run/train/loss'],
    result.rounds.map((r) => [r.round, Math.fround(r.train.loss)]),
  );

  const before = await files(runDir);
  for (const f of ['report.md', 'report.html', 'figures', 'tensorboard/run'])
    await rm(join(runDir, f), { recursive: true });
  const rebuilt = await opsr(['report', 'rep', '--storage', storage]);
  assert.equal(rebuilt.code, 0, rebuilt.stderr);
  assert.match(rebuilt.stdout, /run rep: .*report\.html/);
  assert.deepEqual(await files(runDir), before, 'the same files, byte for byte');

  const missing = await opsr(['report', 'nope', '--storage', storage]);
  assert.equal(missing.code, 1);
  assert.match(
    missing.stderr,
    new RegExp(
      /no report for "nope": neither .*runs\/nope\/report\.json /.source +
        /nor .*studies\/nope\/report\.json exists/.source,
    ),
  );
});

test('opsr ablation history prints every study in the storage root, oldest first', async () => {
  const storage = join(root, 'history');
  const entry = (studyId: string, diff: number) => ({
    studyId,
    finishedAt: `2026-11-2${studyId.at(-1)}T02:00:00.000Z`,
    seeds: [0, 1, 2],
    round: 3,
    policy: {
      fixed: { n: 3, mean: 0.9, sd: 0.02 },
      progressive: { n: 3, mean: 0.9 + diff, sd: 0.01 },
    },
    diff: {
      progressive: {
        n: 3,
        mean: diff,
        sd: 0.01,
        lo: diff - 0.025,
        hi: diff + 0.025,
        versus: 'fixed',
      },
    },
  });
  await appendHistory(storage, entry('night-1', 0.05));
  await appendHistory(storage, entry('night-2', -0.04));
  await appendHistory(storage, entry('night-1', 0.03)); // a re-run replaces its line
  const r = await opsr(['ablation', 'history', '--storage', storage]);
  assert.equal(r.code, 0, r.stderr);
  const rows = r.stdout.trim().split('\n').slice(2);
  assert.deepEqual(
    rows.map((l) => l.split(/\s{2,}/)[0]),
    ['night-2', 'night-1'],
  );
  assert.match(rows[0], /0\.900 ± 0\.020 +0\.860 ± 0\.010 +-0\.040 \[-0\.065, -0\.015\]$/);
  assert.match(rows[1], /0\.030 \[0\.005, 0\.055\]$/);

  // A study that evaluated win rates at its last round carries them into its line; the self-judge
  // arm evaluated there too, the fixed arm (no evaluation) shows '-'.
  const stat = (mean: number | null, sd: number | null = null) => ({
    n: mean === null ? 0 : 3,
    mean,
    sd,
  });
  const cell = (arm: string, round: number, winRate: number | null) => ({
    arm,
    round,
    rejectedScores: [],
    stats: {
      ...Object.fromEntries(STUDY_METRICS.map((m) => [m, stat(null)])),
      policyReward: stat(0.8, 0.01),
      winRate: stat(winRate, 0.04),
      lcWinRate: stat(winRate === null ? null : winRate - 0.1, 0.05),
    } as StudySummary['cells'][number]['stats'],
  });
  const summary: StudySummary = {
    arms: ['fixed', 'self-judge'],
    seeds: [0, 1, 2],
    rounds: [0, 2],
    cells: [cell('fixed', 2, null), cell('self-judge', 0, 0.5), cell('self-judge', 2, 0.7)],
    judged: { set: 'vs-base', lcVariant: 'LC (length + model term)' },
    diffs: [],
  };
  const judged = historyEntry(
    { studyId: 'night-3' } as AblationResult,
    summary,
    '2026-11-23T02:00:00.000Z',
  );
  assert.deepEqual(judged.judged, {
    set: 'vs-base',
    lcVariant: 'LC (length + model term)',
    winRate: { 'self-judge': stat(0.7, 0.04) },
    lcWinRate: { 'self-judge': stat(0.7 - 0.1, 0.05) },
  });
  assert.equal(
    historyEntry({ studyId: 'x' } as AblationResult, { ...summary, judged: undefined }, '').judged,
    undefined,
  );
  await appendHistory(storage, judged);
  const h = await opsr(['ablation', 'history', '--storage', storage]);
  const [head, , ...lines] = h.stdout.trim().split('\n');
  assert.match(head, /self-judge win rate +self-judge LC win rate$/);
  assert.match(lines[2], /^night-3 .* 0\.700 ± 0\.040 +0\.600 ± 0\.050$/);
  assert.match(lines[0], / - +- *$/, 'studies without win rates show -');

  const empty = await opsr(['ablation', 'history', '--storage', join(root, 'none')]);
  assert.match(empty.stdout, /no ablation study has finished in .*none yet/);
});
