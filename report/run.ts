// A run's report from its result (report.json) and the trainer's per-step lines: report.md,
// report.html and figures/ (policy reward per round with the base as round 0, chosen and rejected
// reward per round as the paper's Fig. 4, the prefix curve as Fig. 3, loss / margin / accuracy per
// step), and the per-round metrics as TensorBoard scalars under tensorboard/run.
import { readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { writeFileAtomic } from '../lib/atomic.ts';
import { writeScalars, type ScalarStep } from '../lib/tensorboard.ts';
import type { RunResult } from '../contracts/workflows.ts';
import { fmt, writeReportFiles, type Block, type ReportDoc } from './document.ts';
import { lineChart, stepsChart } from './figures.ts';

const STEP_METRICS = ['loss', 'rewards/margins', 'rewards/accuracies'] as const;

// The trainer's JSON lines of each round (train/metrics.jsonl beside the round's final model);
// rounds trained before opsr kept them have none.
async function readStepMetrics(r: RunResult): Promise<Map<number, Record<string, number>[]>> {
  const out = new Map<number, Record<string, number>[]>();
  for (const round of r.rounds) {
    const text = await readFile(join(dirname(round.modelDir), 'metrics.jsonl'), 'utf8').catch(
      () => '',
    );
    const lines = text
      .split('\n')
      .filter((l) => l.trim() !== '')
      .map((l) => JSON.parse(l) as Record<string, number>);
    if (lines.length) out.set(round.round, lines);
  }
  return out;
}

// The rounds: a self-judge run's pairs come from judged candidates, not from a rejected score;
// its prompts without a pair (ties, unparsable scores) take that column.
function roundTable(r: RunResult): Block {
  const selfJudge = r.rounds.length > 0 && r.rounds.every((x) => x.dropped);
  return {
    kind: 'table',
    table: {
      head: [
        'round',
        selfJudge ? 'dropped (tie / unparsable)' : 'rejected score',
        'pairs kept',
        'pairs filtered',
        'chosen reward',
        'rejected reward',
        'policy reward',
        'loss',
        'rewards/accuracies',
      ],
      rows: r.rounds.map((x) => [
        String(x.round),
        selfJudge ? `${x.dropped!.tie} / ${x.dropped!.unparsable}` : String(x.rejectedScore),
        String(x.pairsKept),
        String(x.pairsFiltered),
        fmt(x.chosenReward),
        fmt(x.rejectedReward),
        fmt(x.policyReward),
        fmt(x.train.loss, 4),
        fmt(x.train['rewards/accuracies'], 2),
      ]),
    },
  };
}

function runDoc(r: RunResult, steps: Map<number, Record<string, number>[]>): ReportDoc {
  const blocks: Block[] = [
    {
      kind: 'text',
      text:
        `Config hash: \`${r.configHash}\`. Final model: ` +
        `\`${r.finalModel}\`.${r.stopped ? ' Stopped early by request.' : ''}`,
    },
    { kind: 'text', text: `Base policy reward (held-out, unprefixed): ${fmt(r.baseReward)}` },
    roundTable(r),
  ];
  const costed = r.rounds.filter((x) => x.cost);
  if (costed.length) {
    // The paper's efficiency argument, measured: generated tokens per kept pair.
    blocks.push({
      kind: 'table',
      table: {
        // Wall time per phase is in report.json and each round's manifest (a measurement, not
        // a function of the result, so the rendered report leaves it out).
        head: [
          'round',
          'sampling requests',
          'sampling tokens',
          'judging requests',
          'judging tokens',
          'tokens per kept pair',
        ],
        rows: costed.map((x) => {
          const c = x.cost!;
          return [
            String(x.round),
            String(c.sampling.requests),
            String(c.sampling.tokens),
            String(c.judging.requests),
            String(c.judging.tokens),
            fmt(c.tokensPerKeptPair, 1),
          ];
        }),
      },
    });
  }
  if (r.judged?.length) {
    blocks.push({
      kind: 'table',
      table: {
        head: [
          'evaluation',
          'policy',
          'win rate ± SE',
          'LC win rate ± SE',
          'LC model',
          'first position wins',
          'order flips',
          'grade',
          'unparsable',
          'judge tokens',
        ],
        rows: r.judged.map((j) => [
          j.set,
          j.label,
          j.winRate === null ? '' : `${fmt(j.winRate)} ± ${fmt(j.standardError)}`,
          j.lcWinRate === null ? '' : `${fmt(j.lcWinRate)} ± ${fmt(j.lcStandardError)}`,
          j.lcVariant ?? '',
          fmt(j.firstPositionWins),
          fmt(j.flipRate),
          fmt(j.mean, 2),
          String(j.unparsable),
          String(j.judgeTokens),
        ]),
      },
    });
  }
  const policy = [
    ...(r.baseReward === null ? [] : [{ x: 0, y: r.baseReward, series: 'policy' }]),
    ...r.rounds
      .filter((x) => x.policyReward !== null)
      .map((x) => ({ x: x.round, y: x.policyReward!, series: 'policy' })),
  ];
  if (policy.length) {
    blocks.push({
      kind: 'figure',
      figure: {
        name: 'policy-reward',
        title: 'Held-out reward of the policy per round (0 = base)',
        spec: lineChart({ title: 'Policy reward', x: 'round', y: 'mean reward', values: policy }),
      },
    });
  }
  const pairs = r.rounds.flatMap((x) => [
    ...(x.chosenReward === null ? [] : [{ x: x.round, y: x.chosenReward, series: 'chosen' }]),
    ...(x.rejectedReward === null ? [] : [{ x: x.round, y: x.rejectedReward, series: `rejected` }]),
  ]);
  if (pairs.length) {
    blocks.push({
      kind: 'figure',
      figure: {
        name: 'pair-rewards',
        title: 'Mean reward of chosen and rejected answers per round (Fig. 4)',
        spec: lineChart({
          title: 'Chosen and rejected reward',
          x: 'round',
          y: 'mean reward',
          values: pairs,
        }),
      },
    });
  }
  if (r.prefixCurve) {
    blocks.push(
      {
        kind: 'table',
        table: {
          head: ['prefix score', 'mean reward'],
          rows: r.prefixCurve.map((p) => [String(p.score), fmt(p.meanReward)]),
        },
      },
      {
        kind: 'figure',
        figure: {
          name: 'prefix-curve',
          title: 'Mean reward against the score asked for in the prefix (Fig. 3)',
          spec: lineChart({
            title: 'Prefix curve (round-1 reference)',
            x: 'prefix score',
            y: 'mean reward',
            values: r.prefixCurve.map((p) => ({
              x: p.score,
              y: p.meanReward,
              series: 'reference',
            })),
          }),
        },
      },
    );
  }
  const stepValues = [...steps].flatMap(([round, lines]) =>
    lines.flatMap((e) =>
      STEP_METRICS.filter((m) => Number.isFinite(e[m])).map((m) => ({
        step: e.step,
        round: `round ${round}`,
        metric: m,
        value: e[m],
      })),
    ),
  );
  if (stepValues.length) {
    blocks.push({
      kind: 'figure',
      figure: {
        name: 'training',
        title: 'Training loss, reward margin and accuracy per step',
        spec: stepsChart('Training per step', stepValues),
      },
    });
  }
  return { title: `opsr run ${r.runId}`, blocks };
}

// Per-round run metrics as TensorBoard scalars: step = round, the base's reward at step 0. The
// result holds no times, so wall time is 0: the file is a function of the result.
function roundScalars(r: RunResult): ScalarStep[] {
  const out: ScalarStep[] =
    r.baseReward === null
      ? []
      : [{ step: 0, wallTime: 0, scalars: { 'run/policy_reward': r.baseReward } }];
  for (const x of r.rounds) {
    const s: Record<string, number> = {
      'run/rejected_score': x.rejectedScore,
      'run/pairs_kept': x.pairsKept,
      'run/pairs_filtered': x.pairsFiltered,
    };
    if (x.policyReward !== null) s['run/policy_reward'] = x.policyReward;
    if (x.chosenReward !== null) s['run/chosen_reward'] = x.chosenReward;
    if (x.rejectedReward !== null) s['run/rejected_reward'] = x.rejectedReward;
    for (const [k, v] of Object.entries(x.train)) s[`run/train/${k}`] = v;
    out.push({ step: x.round, wallTime: 0, scalars: s });
  }
  return out;
}

interface RunReportFiles {
  json: string;
  markdown: string;
  html: string;
  figures: string[];
  tensorboard: string;
}

// Everything under runDir that reports the run; a rebuild (opsr report) rewrites the same bytes.
export async function writeRunReportFiles(runDir: string, r: RunResult): Promise<RunReportFiles> {
  const json = join(runDir, 'report.json');
  await writeFileAtomic(json, JSON.stringify(r, null, 2) + '\n');
  const doc = runDoc(r, await readStepMetrics(r));
  // The config snapshot prepareRun wrote: a sampler without per-request seeds is not reproducible.
  const config = await readFile(join(runDir, 'config.json'), 'utf8').then(
    (t) => JSON.parse(t),
    () => null,
  );
  if (config?.sampling?.perRequestSeeds === false) {
    doc.blocks.splice(1, 0, {
      kind: 'text',
      text:
        'Determinism: not guaranteed. The sampler does not honour ' +
        ('per-request seeds (sampling.perRequestSeeds is false), so a rerun samples ' +
          'different answers.'),
    });
  }
  const written = await writeReportFiles(runDir, doc);
  const tensorboard = await writeScalars(join(runDir, 'tensorboard', 'run'), roundScalars(r), 0);
  return { json, ...written, tensorboard };
}
