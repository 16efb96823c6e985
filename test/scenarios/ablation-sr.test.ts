// `opsr ablation` with the preset config/presets/ablation-digits-sr.json, shrunk (one seed, two
// rounds, 8 prompts, no seed SFT): arms fixed / progressive / self-judge on the digits testbed,
// nothing faked (a Temporal dev server, the real activities, the embedded server, the engine
// training real weights, the builtin verifier as judge). The printed study tables must agree with
// each run's own eval files, SR must pay more tokens per kept pair, and the LC variant is named.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { parseRunConfig, PRESETS_DIR } from '../../config/index.ts';
import { prepareBaseModel, prepareDemoData } from '../../cli/demo.ts';
import { createWorkers, installWorkerLogging, type OpsrWorkers } from '../../workers/index.ts';
import type { AblationResult, RunResult } from '../../contracts/workflows.ts';
import { createTestEnv } from '../helpers/temporal.ts';
import { opsr } from '../helpers/opsr-cli.ts';

installWorkerLogging();
let env: TestWorkflowEnvironment;
let workers: OpsrWorkers;
let running: Promise<void>;
const dir = await mkdtemp(join(tmpdir(), 'opsr-ablation-sr-'));

before(async () => {
  env = await createTestEnv();
  workers = await createWorkers({ connection: env.nativeConnection });
  running = workers.run();
});
after(async () => {
  workers?.shutdown();
  await running;
  await env?.teardown();
  await rm(dir, { recursive: true, force: true });
});

// The preset's study with this test's storage and sizes.
async function studyFile(): Promise<string> {
  const preset = JSON.parse(
    await readFile(join(PRESETS_DIR, 'ablation-digits-sr.json'), 'utf8'),
  ) as { base: Record<string, any>; arms: unknown[]; seeds: number[] };
  assert.deepEqual(preset.seeds, [0, 1]);
  const data = join(dir, 'demo', 'data');
  const heldout = join(data, 'heldout.jsonl');
  const { init, ...base } = preset.base;
  const study = {
    base: {
      ...base,
      storage: dir,
      model: join(dir, 'demo', 'base-model'),
      prompts: { file: join(data, 'prompts.jsonl'), limit: 8 },
      // The untrained model rarely stops within maxTokens: its truncated answers are pairs too.
      filter: { dropTruncated: false },
      evaluation: { ...base.evaluation, prompts: { file: heldout, limit: 8 } },
      evals: { ...base.evals, sets: [{ ...base.evals.sets[0], file: heldout, limit: 8 }] },
    },
    arms: preset.arms,
    seeds: [0],
  };
  // The testbed's data and untrained base model, as `opsr demo` writes them.
  const sft = { ...init.sft, data: join(data, 'sft.jsonl') };
  const config = parseRunConfig({ ...study.base, init: { sft } }, { source: 'test' });
  await prepareDemoData(config);
  await prepareBaseModel(config);
  const file = join(dir, 'study.json');
  await writeFile(file, JSON.stringify(study));
  return file;
}

// The rows of the printed table under `title`: arm label -> cells.
function printed(stdout: string, title: string): Map<string, string[]> {
  const lines = stdout.split('\n');
  const at = lines.findIndex((l) => l.startsWith(title));
  assert.ok(at >= 0, `no table ${title} in:\n${stdout}`);
  const rows = new Map<string, string[]>();
  for (const l of lines.slice(at + 3)) {
    if (!l.trim()) break;
    const [arm, ...cells] = l.trim().split(/ {2,}/);
    rows.set(arm.split(' ')[0], cells);
  }
  return rows;
}
const num = (cell: string) => Number(cell.split(' ')[0]);

test(
  'opsr ablation: fixed / progressive / self-judge side by side',
  { timeout: 900_000 },
  async () => {
    const t0 = Date.now();
    // Detached, then `opsr status` prints the finished study: following it would query every arm
    // each second and slow the runs on a busy machine.
    const started = await opsr([
      'ablation',
      '--config',
      await studyFile(),
      '--id',
      'abl-sr',
      '--detach',
      '--address',
      env.address,
    ]);
    assert.equal(started.code, 0, started.stderr);
    const arms =
      'fixed [3,3] vs progressive [3,5] vs self-judge [self-judge, 4 candidates, judge verifier]';
    assert.ok(started.stdout.includes(`started ablation abl-sr: ${arms}\n`), started.stdout);
    await env.client.workflow.getHandle('abl-sr').result();
    const r = await opsr(['status', 'abl-sr', '--address', env.address]);
    process.stderr.write(`${r.stdout}\n(${((Date.now() - t0) / 1000).toFixed(1)} s)\n`);
    assert.equal(r.code, 0, r.stderr);
    const result = (await env.client.workflow.getHandle('abl-sr').result()) as AblationResult;
    const runs = new Map(result.arms.map((a) => [a.name, a.result]));
    assert.deepEqual([...runs.keys()], ['fixed', 'progressive', 'self-judge']);
    // The Web UI details: each prefix arm's rejected score per round; the self-judge arm has none.
    const { currentDetails } = await env.client.workflow
      .getHandle('abl-sr')
      .query<{ currentDetails?: string }>('__temporal_workflow_metadata');
    assert.match(
      currentDetails ?? '',
      /\| 1 \| 3 \| [^|]+ \| [^|]+ \| 3 \| [^|]+ \| [^|]+ \| self-judge \|/,
    );
    assert.match(
      currentDetails ?? '',
      /\| 2 \| 3 \| [^|]+ \| [^|]+ \| 5 \| [^|]+ \| [^|]+ \| self-judge \|/,
    );

    // Win rates: as each run's eval file says (the base against itself included), with its SE.
    const wr = printed(r.stdout, 'win rate vs the base policy (set vs-base;');
    const lcTitle =
      'LC win rate vs the base policy (set vs-base; LC (length + instruction difficulty fitted ' +
      "over the base and every round's policy of every arm and seed + model term))";
    const lc = printed(r.stdout, lcTitle);
    const tpp = printed(r.stdout, 'tokens per kept pair (sampling + judging)');
    for (const [arm, run] of runs) {
      assert.equal(wr.get(arm)!.length, 3, `${arm}: base, round 1, round 2`);
      for (const [i, label] of ['base', 'round-1', 'round-2'].entries()) {
        const file = JSON.parse(
          await readFile(join(run.runDir, 'eval', label, 'vs-base.json'), 'utf8'),
        ) as { winRate: number; standardError: number; count: number; unparsable: number };
        assert.equal(file.count, 8);
        const cell = wr.get(arm)![i];
        assert.ok(file.winRate >= 0 && file.winRate <= 1);
        assert.equal(num(cell), Number(file.winRate.toFixed(3)), `${arm} ${label}: ${cell}`);
        assert.match(cell, new RegExp(`\\(SE ${file.standardError.toFixed(3)}\\)$`));
        const lcv = num(lc.get(arm)![i]);
        assert.ok(lcv >= 0 && lcv <= 1, `${arm} ${label} LC ${lcv}`);
      }
    }
    // The study's LC numbers are one joint fit: the summary carries them, named.
    const summary = result.summary!;
    assert.match(summary.judged!.lcVariant!, /every arm and seed/);
    const cell = (arm: string, round: number) =>
      summary.cells.find((c) => c.arm === arm && c.round === round)!;
    for (const arm of runs.keys())
      assert.equal(num(lc.get(arm)![2]), Number(cell(arm, 2).stats.lcWinRate.mean!.toFixed(3)));

    // Tokens per kept pair: as the rounds' cost accounting says, and SR above both prefix arms.
    const perPair = (run: RunResult, k: number) => run.rounds[k - 1].cost!.tokensPerKeptPair!;
    for (const [arm, run] of runs)
      for (const k of [1, 2])
        assert.equal(num(tpp.get(arm)![k - 1]), Number(perPair(run, k).toFixed(1)), `${arm} ${k}`);
    for (const k of [1, 2])
      for (const prefix of ['fixed', 'progressive'])
        assert.ok(
          perPair(runs.get('self-judge')!, k) > perPair(runs.get(prefix)!, k),
          `round ${k}: SR ${perPair(runs.get('self-judge')!, k)} vs ` +
            `${prefix} ${perPair(runs.get(prefix)!, k)}`,
        );
    assert.ok(runs.get('self-judge')!.rounds.every((x) => x.dropped !== undefined));

    // The report carries the same tables.
    const md = await readFile(result.report!.markdown, 'utf8');
    assert.match(md, /tokens per kept pair \(sampling \+ judging\)/);
    assert.match(md, /\| self-judge \[self-judge\] \|/);
    assert.match(md, /every arm and seed \+ model term/);
  },
);
