// opsr ablation --config FILE: starts ablationStudy (for example rejected scores fixed [3,3,3] vs
// progressive [3,5,7]), follows each arm and prints their per-round metrics side by side.
import { resolve } from 'node:path';
import { WorkflowExecutionAlreadyStartedError } from '@temporalio/client';
import { parseAblationConfigWithInput, type AblationConfig } from '../config/index.ts';
import { loadAblationConfig } from '../activities/load-config.ts';
import { TASK_QUEUES, WORKFLOW_TYPES } from '../contracts/workflows.ts';
import { historyFile, historyTable, readHistory } from '../report/study.ts';
import {
  CONNECTION_HELP,
  EXIT,
  guard,
  parseFlags,
  parseStartFlags,
  table,
  temporalTarget,
  timestampId,
  workflowLink,
} from './common.ts';
import { ablationProgressRenderer, armNames, followAndReport, openTarget } from './runs.ts';

const USAGE = `Usage: opsr ablation --config FILE [--id STUDY_ID] [--detach] [--address HOST:PORT] \
[--namespace NS]
       opsr ablation history [--storage DIR]

FILE: {"studyId"?, "base": <run config or the path of one, e.g. a preset>, "arms": [{"name",
"rejectedScores"?, "overrides"?}], "seeds"?: [0, 1, 2]}. Starts ${WORKFLOW_TYPES.ablation} on \
${TASK_QUEUES.control}
with id --id, else studyId, else opsr-ablation-<UTC timestamp>; arm <name> runs as child workflow
<id>/<name>, or <id>/<name>/seed-<s> once per seed. A study started again with the same id reuses
its finished runs. An arm with overrides {"pairs": {"source": "self-judge"}} is the SR baseline.
The end prints the arms per round over seeds (mean ± sd): policy reward, win rate against the
base (with SE) and LC win rate (variant named) where the runs have a pairwise eval set, tokens per
kept pair, then the paired differences with 95% intervals, and writes
<storage>/studies/<id>/report.html.
history: every finished study in the storage root (default .opsr), oldest first.
${CONNECTION_HELP}`;

// Prefix arms by their rejected scores; self-judge arms by their candidates and judge.
const armLabel = (a: AblationConfig['arms'][number]) =>
  a.config.pairs.source === 'self-judge'
    ? `${a.name} [self-judge, ${a.config.pairs.candidates} candidates, ` +
      `judge ${a.config.pairs.judge}]`
    : `${a.name} [${a.config.prefixes.rejectedScores.join(',')}]`;

async function history(argv: string[]): Promise<number> {
  const { values } = parseFlags(argv, { storage: { type: 'string' } }, USAGE);
  const storage = resolve(values.storage ?? '.opsr');
  const entries = await readHistory(storage);
  if (!entries.length) {
    process.stdout.write(
      `no ablation study has finished in ${storage} yet (${historyFile(storage)})\n`,
    );
    return EXIT.ok;
  }
  const t = historyTable(entries);
  process.stdout.write(`${table(t.head, t.rows)}\n`);
  return EXIT.ok;
}

export async function main(argv: string[]): Promise<number> {
  return guard(async () => {
    if (argv[0] === 'history') return history(argv.slice(1));
    const values = parseStartFlags(argv, USAGE);
    const loaded = await loadAblationConfig(values.config);
    const studyId = values.id ?? loaded.config.studyId ?? timestampId('opsr-ablation');
    // Validated again with the id as studyId: the arms' run ids follow from it.
    const { config, input } = parseAblationConfigWithInput(
      { ...loaded.input, studyId },
      { source: values.id ? '--id' : values.config },
    );
    const t = await openTarget(temporalTarget(values, config.arms[0].config.temporal));
    try {
      try {
        await t.client.workflow.start(WORKFLOW_TYPES.ablation, {
          taskQueue: TASK_QUEUES.control,
          workflowId: studyId,
          args: [input],
        });
      } catch (e) {
        if (e instanceof WorkflowExecutionAlreadyStartedError) {
          process.stderr.write(
            `opsr: ablation ${studyId} is already running; follow it with: opsr status ` +
              `${studyId} --watch\n`,
          );
          return EXIT.failed;
        }
        throw e;
      }
      process.stdout.write(
        `started ablation ${studyId}: ${config.arms.map(armLabel).join(' vs ')}\n` +
          `Web UI: ${workflowLink(t.ui, t.namespace, studyId)}\n`,
      );
      if (values.detach) return EXIT.ok;
      return await followAndReport(
        t,
        WORKFLOW_TYPES.ablation,
        studyId,
        ablationProgressRenderer(t, studyId, armNames(input)),
      );
    } finally {
      await t.close();
    }
  });
}
