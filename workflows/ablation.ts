// An ablation study: the same run with different settings per arm (for example the rejected
// score fixed at 3 vs progressive 3, 5, 7), each arm a child preferenceRun `<studyId>/<arm>`,
// and their per-round metrics side by side.
import { ApplicationFailure, executeChild, setCurrentDetails, workflowInfo } from '@temporalio/workflow';
import { ConfigError, parseAblationConfig, type AblationConfig } from '../config/schema.ts';
import type { AblationResult, RunResult, WorkflowTuning } from '../contracts/workflows.ts';
import { TASK_QUEUES } from '../contracts/workflows.ts';
import { preferenceRun } from './run.ts';

function validateAblationConfig(input: unknown): AblationConfig {
  try {
    return parseAblationConfig(input, { source: 'workflow input' });
  } catch (err) {
    if (err instanceof ConfigError) throw ApplicationFailure.nonRetryable(err.message, 'ConfigError', ...err.issues);
    throw ApplicationFailure.nonRetryable(`workflow input: ${String(err)}`, 'ConfigError');
  }
}

export async function ablationStudy(input: unknown, tuning: WorkflowTuning = {}): Promise<AblationResult> {
  const study = validateAblationConfig(input);
  const studyId = study.studyId ?? workflowInfo().workflowId;
  const arms: AblationResult['arms'] = [];
  // One arm after the other: arms share the sampler and trainer workers, and a sampler worker
  // serves one policy at a time.
  for (const arm of study.arms) {
    const workflowId = `${studyId}/${arm.name}`;
    setCurrentDetails(`### ablation \`${studyId}\`\nrunning arm **${arm.name}** (${arms.length + 1}/${study.arms.length})`);
    const result = await executeChild(preferenceRun, { workflowId, taskQueue: TASK_QUEUES.control, args: [arm.config, tuning] });
    arms.push({ name: arm.name, workflowId, result });
  }
  const table = sideBySide(arms);
  setCurrentDetails(`### ablation \`${studyId}\` done\n${tableMarkdown(table, arms.map((a) => a.name))}`);
  return { studyId, arms, table };
}

export function sideBySide(arms: { name: string; result: RunResult }[]): AblationResult['table'] {
  const maxRound = Math.max(0, ...arms.map((a) => a.result.rounds.length));
  return Array.from({ length: maxRound }, (_, i) => {
    const row: AblationResult['table'][number] = { round: i + 1, arms: {} };
    for (const a of arms) {
      const r = a.result.rounds[i];
      if (!r) continue;
      row.arms[a.name] = { rejectedScore: r.rejectedScore, pairsKept: r.pairsKept, chosenReward: r.chosenReward,
        rejectedReward: r.rejectedReward, policyReward: r.policyReward, loss: r.train.loss ?? null };
    }
    return row;
  });
}

function tableMarkdown(table: AblationResult['table'], names: string[]): string {
  const fmt = (x: number | null | undefined) => (x === null || x === undefined ? '–' : x.toFixed(4));
  const head = `| round | ${names.map((n) => `${n} rejected | ${n} policy reward | ${n} loss`).join(' | ')} |`;
  const sep = `|---|${names.map(() => '---|---|---').join('|')}|`;
  const rows = table.map((row) => `| ${row.round} | ${names.map((n) => {
    const c = row.arms[n];
    return c ? `${c.rejectedScore} | ${fmt(c.policyReward)} | ${fmt(c.loss)}` : '– | – | –';
  }).join(' | ')} |`);
  return [head, sep, ...rows].join('\n');
}
