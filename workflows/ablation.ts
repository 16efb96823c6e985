// An ablation study: the same run with different settings per arm (for example the rejected
// score fixed at 3 vs progressive 3, 5, 7), each arm a child preferenceRun `<studyId>/<arm>`
// (`<studyId>/<arm>/seed-<s>` once per seed with `seeds`), their per-round metrics side by side,
// and over seeds: means, standard deviations and paired differences (report/summary.ts), a report
// with figures and a line in the storage root's ablation history.
import {
  ApplicationFailure,
  continueAsNew,
  executeChild,
  patched,
  setCurrentDetails,
  workflowInfo,
} from '@temporalio/workflow';
import { ConfigError } from '../config/errors.ts';
import { parseAblationConfig, withSeed, type AblationConfig } from '../config/schema.ts';
import { summarizeStudy } from '../report/summary.ts';
import type { AblationResult, RunResult, WorkflowTuning } from '../contracts/workflows.ts';
import { TASK_QUEUES } from '../contracts/workflows.ts';
import { opsrActivities } from './activities.ts';
import { historyIsLong, preferenceRun, runIdOf } from './run.ts';

function validateAblationConfig(input: unknown): AblationConfig {
  try {
    return parseAblationConfig(input, { source: 'workflow input' });
  } catch (err) {
    if (err instanceof ConfigError)
      throw ApplicationFailure.nonRetryable(err.message, 'ConfigError', ...err.issues);
    throw ApplicationFailure.nonRetryable(`workflow input: ${String(err)}`, 'ConfigError');
  }
}

// `done`: the runs finished by earlier executions of this study (it continues as new between runs
// once its history is long, so a study of many arms and seeds stays bounded too).
export async function ablationStudy(
  input: unknown,
  tuning: WorkflowTuning = {},
  done: AblationResult['arms'] = [],
): Promise<AblationResult> {
  const study = validateAblationConfig(input);
  const studyId = study.studyId ?? workflowInfo().workflowId;
  // Studies recorded before seeds and reports replay on the old command sequence.
  if (!patched('ablation-seeds-and-report')) return armsOnce(study, studyId, tuning);

  const files = opsrActivities(study.arms[0]?.config.activities, tuning);
  const seeds: (number | null)[] = study.seeds ?? [null];
  const runs: NonNullable<AblationResult['arms']> = done.slice();
  // Seed by seed, one arm after the other: arms share the sampler and trainer workers, and a
  // sampler worker serves one policy at a time.
  for (const seed of seeds) {
    for (const arm of study.arms) {
      if (runs.some((r) => r.name === arm.name && (r.seed ?? null) === seed)) continue;
      if (runs.length > done.length && historyIsLong(tuning, 'ablation-continue-as-new'))
        return continueAsNew<typeof ablationStudy>(input, tuning, runs);
      const workflowId =
        seed === null ? `${studyId}/${arm.name}` : `${studyId}/${arm.name}/seed-${seed}`;
      const config = seed === null ? arm.config : withSeed(arm.config, seed);
      setCurrentDetails(
        `### ablation \`${studyId}\`\nrunning arm ` +
          `**${arm.name}**${seed === null ? '' : ` seed **${seed}**`}` +
          ` (${runs.length + 1}/${seeds.length * study.arms.length})`,
      );
      const finished = await files.findFinishedRun({
        runId: runIdOf(config, workflowId),
        config,
      });
      const result =
        finished ??
        (await executeChild(preferenceRun, {
          workflowId,
          taskQueue: TASK_QUEUES.control,
          args: [config, tuning],
        }));
      runs.push({ name: arm.name, seed, workflowId, result, reused: finished !== null });
    }
  }
  const summary = summarizeStudy(
    runs.map((r) => ({ name: r.name, seed: r.seed ?? null, result: r.result })),
  );
  const first = runs.filter((r) => r.seed === seeds[0]);
  const result: AblationResult = {
    studyId,
    ...(study.seeds ? { seeds: study.seeds } : {}),
    arms: runs,
    table: sideBySide(first),
    summary,
  };
  // The activity refits LC win rates over every arm's policies; its summary replaces this one.
  const { summary: refitted, ...report } = await files.writeStudyReport({
    storage: study.arms[0].config.storage,
    result,
    finishedAt: new Date(Date.now()).toISOString(),
  });
  result.report = report;
  if (refitted) result.summary = refitted;
  setCurrentDetails(
    `### ablation \`${studyId}\` done\n${tableMarkdown(result.table, study)}` +
      `\n\nreport: \`${result.report.html}\``,
  );
  return result;
}

// Before seeds: each arm once, no report activity.
async function armsOnce(
  study: AblationConfig,
  studyId: string,
  tuning: WorkflowTuning,
): Promise<AblationResult> {
  const arms: AblationResult['arms'] = [];
  for (const arm of study.arms) {
    const workflowId = `${studyId}/${arm.name}`;
    setCurrentDetails(
      `### ablation \`${studyId}\`\nrunning arm **${arm.name}** ` +
        `(${arms.length + 1}/${study.arms.length})`,
    );
    const result = await executeChild(preferenceRun, {
      workflowId,
      taskQueue: TASK_QUEUES.control,
      args: [arm.config, tuning],
    });
    arms.push({ name: arm.name, workflowId, result });
  }
  const table = sideBySide(arms);
  setCurrentDetails(`### ablation \`${studyId}\` done\n${tableMarkdown(table, study)}`);
  return { studyId, arms, table };
}

function sideBySide(arms: { name: string; result: RunResult }[]): AblationResult['table'] {
  const maxRound = Math.max(0, ...arms.map((a) => a.result.rounds.length));
  return Array.from({ length: maxRound }, (_, i) => {
    const row: AblationResult['table'][number] = { round: i + 1, arms: {} };
    for (const a of arms) {
      const r = a.result.rounds[i];
      if (!r) continue;
      row.arms[a.name] = {
        rejectedScore: r.rejectedScore,
        pairsKept: r.pairsKept,
        chosenReward: r.chosenReward,
        rejectedReward: r.rejectedReward,
        policyReward: r.policyReward,
        loss: r.train.loss ?? null,
      };
    }
    return row;
  });
}

// The Web UI's summary of a finished study (details only: no history events, replay-safe). A
// self-judge arm's pairs come from judged candidates, not from a rejected score it asked for.
function tableMarkdown(table: AblationResult['table'], study: AblationConfig): string {
  const names = study.arms.map((a) => a.name);
  const selfJudge = new Set(
    study.arms
      // `pairs` is absent from configs recorded before self-judge pairs.
      .filter((a) => (a.config.pairs as typeof a.config.pairs | undefined)?.source === 'self-judge')
      .map((a) => a.name),
  );
  const fmt = (x: number | null | undefined) =>
    x === null || x === undefined ? '–' : x.toFixed(4);
  const head =
    `| round | ` +
    `${names.map((n) => `${n} rejected | ${n} policy reward | ${n} loss`).join(' | ')} |`;
  const sep = `|---|${names.map(() => '---|---|---').join('|')}|`;
  const rows = table.map(
    (row) =>
      `| ${row.round} | ${names
        .map((n) => {
          const c = row.arms[n];
          if (!c) return '– | – | –';
          const reward = fmt(c.policyReward);
          const rejected = selfJudge.has(n) ? 'self-judge' : String(c.rejectedScore);
          return `${rejected} | ${reward} | ${fmt(c.loss)}`;
        })
        .join(' | ')} |`,
  );
  return [head, sep, ...rows].join('\n');
}
