// opsr status RUN: progress of an open run (--watch follows it), or the result of a closed one.
import { WorkflowNotFoundError } from '@temporalio/client';
import proto from '@temporalio/proto';
import { WORKFLOW_TYPES } from '../contracts/workflows.ts';
import {
  CONNECTION_FLAGS,
  CONNECTION_HELP,
  EXIT,
  guard,
  parseFlags,
  renderProgress,
  roundTable,
  workflowLink,
} from './common.ts';
import {
  ablationArmNames,
  ablationProgressRenderer,
  failureText,
  followAndReport,
  onRun,
  printResult,
  queryProgress,
  runProgressRenderer,
  type Target,
} from './runs.ts';

const USAGE = `Usage: opsr status RUN [--watch] [--address HOST:PORT] [--namespace NS] [--config \
FILE]

RUN is the workflow id (opsr run prints it). An open run shows its progress and finished rounds
(--watch follows it to the end); a completed one its per-round table; a failed or terminated one
the failure and how to resume. Exit 0 for running or completed, 1 otherwise.
${CONNECTION_HELP}`;

export async function main(argv: string[]): Promise<number> {
  return guard(async () => {
    const { values, positionals } = parseFlags(
      argv,
      { ...CONNECTION_FLAGS, watch: { type: 'boolean' } },
      USAGE,
      1,
    );
    return onRun(values, positionals, USAGE, (t, id) => status(t, id, !!values.watch));
  });
}

async function status(t: Target, id: string, watch: boolean): Promise<number> {
  const handle = t.client.workflow.getHandle(id);
  let desc;
  try {
    desc = await handle.describe();
  } catch (e) {
    if (e instanceof WorkflowNotFoundError) {
      process.stderr.write(`opsr: no run "${id}" in namespace ${t.namespace}\n`);
      return EXIT.failed;
    }
    throw e;
  }
  const link = workflowLink(t.ui, t.namespace, id);
  const state = desc.status.name;
  if (state === 'RUNNING') {
    if (watch) {
      const arms = desc.type === WORKFLOW_TYPES.ablation ? await ablationArmNames(t, id) : [];
      const render =
        desc.type === WORKFLOW_TYPES.ablation
          ? ablationProgressRenderer(t, id, arms)
          : runProgressRenderer(t, id);
      return followAndReport(t, desc.type, id, render);
    }
    process.stdout.write(`${id}: ${desc.type} running since ${desc.startTime.toISOString()}\n`);
    const p = desc.type === WORKFLOW_TYPES.run ? await queryProgress(t, id) : null;
    if (p) process.stdout.write(`${renderProgress(p)}\n${roundTable(p.completed)}\n`);
    else if (desc.type === WORKFLOW_TYPES.run)
      process.stdout.write(
        'no worker answered the progress query: start one (opsr dev, or node --import ' +
          'tsx workers/main.ts)\n',
      );
    process.stdout.write(`${pendingText(desc.raw)}Web UI: ${link}\n`);
    return EXIT.ok;
  }
  if (state === 'COMPLETED') {
    printResult(t, desc.type, id, await handle.result());
    return EXIT.ok;
  }
  const closed = desc.closeTime ? ` at ${desc.closeTime.toISOString()}` : '';
  let why = '';
  if (state === 'FAILED') {
    try {
      await handle.result();
    } catch (e) {
      why = `: ${failureText(e)}`;
    }
  }
  process.stdout.write(
    `${id}: ${desc.type} ` +
      `${state.toLowerCase()}${closed}${why}\n` +
      `Resume it (finished work is reused): opsr resume ${id}\nWeb UI: ${link}\n`,
  );
  return EXIT.failed;
}

const { PendingActivityState } = proto.temporal.api.enums.v1;

type Raw = Awaited<
  ReturnType<ReturnType<Target['client']['workflow']['getHandle']>['describe']>
>['raw'];

// What is in flight right now, from the server's view (needs no worker).
export function pendingText(raw: Raw): string {
  const lines: string[] = [];
  for (const c of raw.pendingChildren ?? [])
    lines.push(`  child workflow ${c.workflowId} (${c.workflowTypeName})`);
  for (const a of raw.pendingActivities ?? []) {
    const state =
      a.state === PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
        ? 'started'
        : a.state === PendingActivityState.PENDING_ACTIVITY_STATE_SCHEDULED
          ? 'scheduled'
          : a.state === PendingActivityState.PENDING_ACTIVITY_STATE_CANCEL_REQUESTED
            ? 'cancel requested'
            : 'pending';
    const fail = a.lastFailure?.message ? `; last failure: ${a.lastFailure.message}` : '';
    lines.push(
      `  activity ${a.activityType?.name} ${state}, attempt ` +
        `${a.attempt ?? 1}${a.lastWorkerIdentity ? ` on ${a.lastWorkerIdentity}` : ''}${fail}`,
    );
  }
  return lines.length ? `in flight:\n${lines.join('\n')}\n` : '';
}
