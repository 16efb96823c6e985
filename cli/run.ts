// opsr run --config FILE: starts preferenceRun with the resolved config as its one JSON input,
// shows progress bars, prints the per-round table and the Web UI link.
import { WorkflowExecutionAlreadyStartedError } from '@temporalio/client';
import { parseRunConfig } from '../config/index.ts';
import { loadRunConfig } from '../activities/load-config.ts';
import { TASK_QUEUES, WORKFLOW_TYPES } from '../contracts/workflows.ts';
import {
  CONNECTION_HELP,
  EXIT,
  guard,
  parseStartFlags,
  temporalTarget,
  timestampId,
  workflowLink,
} from './common.ts';
import { followAndReport, openTarget, runProgressRenderer } from './runs.ts';

const USAGE = `Usage: opsr run --config FILE [--id RUN_ID] [--detach] [--address HOST:PORT] \
[--namespace NS]

Starts the workflow ${WORKFLOW_TYPES.run} on task queue ${TASK_QUEUES.control}. The workflow id \
(and the run
directory <storage>/runs/<id>) is --id, else the config's runId, else opsr-<UTC timestamp>.
--detach returns once the run is started. Ctrl-C while following detaches; the run goes on.
${CONNECTION_HELP}`;

export async function main(argv: string[]): Promise<number> {
  return guard(async () => {
    const values = parseStartFlags(argv, USAGE);
    const config = await loadRunConfig(values.config);
    const workflowId = values.id ?? config.runId ?? timestampId('opsr');
    // Re-validated with the id as runId: the workflow parses exactly this object.
    const input = parseRunConfig(
      { ...config, runId: workflowId },
      { source: values.id ? '--id' : values.config },
    );
    const t = await openTarget(temporalTarget(values, config.temporal));
    try {
      try {
        await t.client.workflow.start(WORKFLOW_TYPES.run, {
          taskQueue: TASK_QUEUES.control,
          workflowId,
          args: [input],
        });
      } catch (e) {
        if (e instanceof WorkflowExecutionAlreadyStartedError) {
          process.stderr.write(
            `opsr: run ${workflowId} is already running; follow it with: opsr status ` +
              `${workflowId} --watch\n`,
          );
          return EXIT.failed;
        }
        throw e;
      }
      process.stdout.write(
        `started run ${workflowId} (${WORKFLOW_TYPES.run}, ${config.rounds} rounds, ` +
          `rejected scores ${config.prefixes.rejectedScores.join(', ')})\n` +
          `Web UI: ${workflowLink(t.ui, t.namespace, workflowId)}\n`,
      );
      if (values.detach) return EXIT.ok;
      return await followAndReport(
        t,
        WORKFLOW_TYPES.run,
        workflowId,
        runProgressRenderer(t, workflowId),
      );
    } finally {
      await t.close();
    }
  });
}
