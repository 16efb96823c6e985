// opsr resume RUN: after a crash or a failure. An open run needs no resume (workers pick it up
// again); a failed, terminated, cancelled or timed-out one starts again with the same workflow id
// and its original input, so every finished artifact is reused (activities are idempotent).
import { WorkflowNotFoundError } from '@temporalio/client';
import { WORKFLOW_TYPES } from '../contracts/workflows.ts';
import {
  CONNECTION_FLAGS,
  CONNECTION_HELP,
  EXIT,
  guard,
  parseFlags,
  workflowLink,
} from './common.ts';
import {
  ablationProgressRenderer,
  armNames,
  followAndReport,
  onRun,
  runProgressRenderer,
  startedWith,
  type Target,
} from './runs.ts';
import { pendingText } from './status.ts';

const USAGE = `Usage: opsr resume RUN [--detach] [--address HOST:PORT] [--namespace NS] [--config \
FILE]

RUN is the workflow id of a run (${WORKFLOW_TYPES.run}) or an ablation (${WORKFLOW_TYPES.ablation}).
If it is still open, says what is in flight and whether workers are polling. If it failed or was
terminated, starts it again with the same id and the original input: finished rounds, shards and
checkpoints are reused. A completed run is left alone.
${CONNECTION_HELP}`;

export async function main(argv: string[]): Promise<number> {
  return guard(async () => {
    const { values, positionals } = parseFlags(
      argv,
      { ...CONNECTION_FLAGS, detach: { type: 'boolean' } },
      USAGE,
      1,
    );
    return onRun(values, positionals, USAGE, (t, id) => resume(t, id, !!values.detach));
  });
}

async function resume(t: Target, id: string, detach: boolean): Promise<number> {
  let desc;
  try {
    desc = await t.client.workflow.getHandle(id).describe();
  } catch (e) {
    if (e instanceof WorkflowNotFoundError) {
      process.stderr.write(`opsr: no run "${id}" in namespace ${t.namespace}\n`);
      return EXIT.failed;
    }
    throw e;
  }
  const link = workflowLink(t.ui, t.namespace, id);
  if (desc.type === WORKFLOW_TYPES.round) {
    const parent = desc.parentExecution?.workflowId;
    process.stderr.write(
      `opsr: ${id} is one round of a run; resume the run instead: opsr resume ` +
        `${parent ?? id.replace(/\/round-\d+$/, '')}\n`,
    );
    return EXIT.usage;
  }
  const state = desc.status.name;
  if (state === 'RUNNING') {
    const pollers = await pollerCount(t, desc.taskQueue);
    process.stdout.write(
      `${id} is still running: nothing to resume. Temporal continues it as soon as a ` +
        `worker polls ${desc.taskQueue}.\n` +
        pendingText(desc.raw) +
        (pollers === 0
          ? `no worker is polling ${desc.taskQueue}: start one (opsr dev, or node ` +
            `--import tsx workers/main.ts)\n`
          : `${pollers} worker${pollers === 1 ? '' : 's'} polling ${desc.taskQueue}\n`) +
        `Web UI: ${link}\n`,
    );
    return EXIT.ok;
  }
  if (state === 'COMPLETED') {
    process.stdout.write(
      `${id} completed: nothing to resume (opsr status ${id} shows its result)\n`,
    );
    return EXIT.ok;
  }
  const start = await startedWith(t, id);
  await t.client.workflow.start(start.type, {
    taskQueue: start.taskQueue,
    workflowId: id,
    args: start.args,
  });
  process.stdout.write(
    `resumed ${id} (${start.type}, was ${state.toLowerCase()}) with its original ` +
      `input; finished work is reused\nWeb UI: ${link}\n`,
  );
  if (detach) return EXIT.ok;
  const render =
    start.type === WORKFLOW_TYPES.ablation
      ? ablationProgressRenderer(t, id, armNames(start.args[0]))
      : runProgressRenderer(t, id);
  return followAndReport(t, start.type, id, render);
}

async function pollerCount(t: Target, taskQueue: string): Promise<number | null> {
  try {
    const res = await t.client.workflowService.describeTaskQueue({
      namespace: t.namespace,
      taskQueue: { name: taskQueue },
      taskQueueType: 1,
    });
    return res.pollers?.length ?? 0;
  } catch {
    return null;
  }
}
