// opsr schedule create|list|delete|trigger: Temporal Schedules that start preferenceRun or
// ablationStudy on a cron spec, e.g. the nightly ablation of fixed vs progressive rejected scores.
import {
  ScheduleAlreadyRunning,
  ScheduleNotFoundError,
  ScheduleOverlapPolicy,
  type ScheduleSummary,
} from '@temporalio/client';
import { type RunConfig } from '../config/index.ts';
import { loadAblationConfig, loadRunConfig } from '../activities/load-config.ts';
import { TASK_QUEUES, WORKFLOW_TYPES } from '../contracts/workflows.ts';
import {
  CONNECTION_FLAGS,
  CONNECTION_HELP,
  EXIT,
  UsageError,
  guard,
  parseFlags,
  table,
  temporalFromConfigFlag,
  temporalTarget,
} from './common.ts';
import { openTarget, type Target } from './runs.ts';

const OVERLAP = [
  'skip',
  'buffer_one',
  'buffer_all',
  'cancel_other',
  'terminate_other',
  'allow_all',
] as const;

const USAGE = `Usage:
  opsr schedule create --id ID (--config RUN.json | --ablation ABLATION.json) [--cron "0 2 * * *"]
                       [--overlap ${OVERLAP.join('|')}] [--timezone TZ] [--paused] [--note TEXT]
  opsr schedule list
  opsr schedule delete ID
  opsr schedule trigger ID          (start one action now)

create: every time the cron spec fires (default nightly at 02:00, UTC unless --timezone), starts
${WORKFLOW_TYPES.run} (--config) or ${WORKFLOW_TYPES.ablation} (--ablation) on \
${TASK_QUEUES.control} with the resolved
config as its input. Each action's workflow id is ID-<scheduled time>, which also names its run
directory, so the config must not fix runId / studyId. --overlap (default skip): what to do when the
previous action is still running.
${CONNECTION_HELP}`;

export async function main(argv: string[]): Promise<number> {
  return guard(async () => {
    const [sub, ...rest] = argv;
    if (sub === undefined || sub === '--help' || sub === '-h') {
      process.stdout.write(`${USAGE}\n`);
      return sub === undefined ? EXIT.usage : EXIT.ok;
    }
    if (sub === 'create') return create(rest);
    if (sub === 'list' || sub === 'delete' || sub === 'trigger') {
      const { values, positionals } = parseFlags(
        rest,
        CONNECTION_FLAGS,
        USAGE,
        sub === 'list' ? 0 : 1,
      );
      if (sub !== 'list' && !positionals[0])
        throw new UsageError(`schedule ${sub}: ID is required\n\n${USAGE}`);
      const t = await openTarget(
        temporalTarget(values, await temporalFromConfigFlag(values.config)),
      );
      try {
        if (sub === 'list') return await list(t);
        return await (sub === 'delete' ? remove(t, positionals[0]) : trigger(t, positionals[0]));
      } finally {
        await t.close();
      }
    }
    throw new UsageError(
      `unknown schedule command "${sub}"; allowed: create, list, delete, trigger\n\n${USAGE}`,
    );
  });
}

async function create(argv: string[]): Promise<number> {
  const { values } = parseFlags(
    argv,
    {
      id: { type: 'string' },
      config: { type: 'string' },
      ablation: { type: 'string' },
      cron: { type: 'string', default: '0 2 * * *' },
      overlap: { type: 'string', default: 'skip' },
      timezone: { type: 'string' },
      paused: { type: 'boolean' },
      note: { type: 'string' },
      address: { type: 'string' },
      namespace: { type: 'string' },
    },
    USAGE,
  );
  if (!values.id) throw new UsageError(`schedule create: --id is required\n\n${USAGE}`);
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/.test(values.id))
    throw new UsageError(
      `schedule create: --id "${values.id}" is not allowed; use 1-100 of A-Z a-z 0-9 . _ -`,
    );
  if (!values.config === !values.ablation)
    throw new UsageError(
      `schedule create: give exactly one of --config (a run) and --ablation (a study)\n\n${USAGE}`,
    );
  const overlap = values.overlap.toLowerCase();
  if (!(OVERLAP as readonly string[]).includes(overlap))
    throw new UsageError(
      `schedule create: --overlap "${values.overlap}" is not allowed; allowed: ` +
        `${OVERLAP.join(', ')}`,
    );
  const fields = values.cron.trim().split(/\s+/);
  if (fields.length < 5 || fields.length > 6)
    throw new UsageError(
      `schedule create: --cron "${values.cron}" is not a cron spec; allowed: 5 fields ` +
        `"minute hour day-of-month month day-of-week", e.g. "0 2 * * *"`,
    );

  let workflowType: string;
  let input: unknown;
  let temporal: RunConfig['temporal'];
  if (values.config) {
    const config = await loadRunConfig(values.config);
    if (config.runId)
      throw new UsageError(
        `schedule create: ${values.config} sets runId "${config.runId}": every ` +
          `scheduled run would share one run directory; remove runId (each run takes its ` +
          `workflow id)`,
      );
    workflowType = WORKFLOW_TYPES.run;
    input = config;
    temporal = config.temporal;
  } else {
    const { config, input: ablationInput } = await loadAblationConfig(values.ablation!);
    if (config.studyId)
      throw new UsageError(
        `schedule create: ${values.ablation} sets studyId "${config.studyId}": every ` +
          `scheduled study would share its arms' run directories; remove studyId`,
      );
    workflowType = WORKFLOW_TYPES.ablation;
    input = ablationInput;
    temporal = config.arms[0].config.temporal;
  }
  const t = await openTarget(temporalTarget(values, temporal));
  try {
    await t.client.schedule.create({
      scheduleId: values.id,
      spec: {
        cronExpressions: [values.cron],
        ...(values.timezone ? { timezone: values.timezone } : {}),
      },
      action: {
        type: 'startWorkflow',
        workflowType,
        taskQueue: TASK_QUEUES.control,
        workflowId: values.id,
        args: [input],
      },
      policies: {
        overlap: ScheduleOverlapPolicy[overlap.toUpperCase() as keyof typeof ScheduleOverlapPolicy],
      },
      state: { paused: !!values.paused, ...(values.note ? { note: values.note } : {}) },
      memo: { cron: values.cron, kind: workflowType, config: values.config ?? values.ablation },
    });
    const desc = await t.client.schedule.getHandle(values.id).describe();
    const next = desc.info.nextActionTimes[0];
    process.stdout.write(
      `created schedule ${values.id}: ${workflowType} at ` +
        `"${values.cron}"${values.timezone ? ` (${values.timezone})` : ' (UTC)'}, ` +
        `overlap ${overlap}` +
        `${values.paused ? ', paused' : `, next ${next ? next.toISOString() : 'never'}`}\n` +
        `Web UI: ${t.ui}/namespaces/${encodeURIComponent(t.namespace)}/schedules/` +
        `${encodeURIComponent(values.id)}\n`,
    );
    return EXIT.ok;
  } catch (e) {
    if (e instanceof ScheduleAlreadyRunning) {
      process.stderr.write(
        `opsr: schedule ${values.id} already exists; delete it first (opsr schedule ` +
          `delete ${values.id})\n`,
      );
      return EXIT.failed;
    }
    throw e;
  } finally {
    await t.close();
  }
}

async function listSchedules(t: Target): Promise<ScheduleSummary[]> {
  const out: ScheduleSummary[] = [];
  for await (const s of t.client.schedule.list()) out.push(s);
  return out.sort((a, b) => a.scheduleId.localeCompare(b.scheduleId));
}

async function list(t: Target): Promise<number> {
  const all = await listSchedules(t);
  if (all.length === 0) {
    process.stdout.write('no schedules\n');
    return EXIT.ok;
  }
  const rows = all.map((s) => [
    s.scheduleId,
    s.action?.type === 'startWorkflow' ? s.action.workflowType : '-',
    typeof s.memo?.cron === 'string' ? s.memo.cron : '-',
    s.state.paused ? 'paused' : 'active',
    s.info.nextActionTimes[0]?.toISOString() ?? '-',
    s.info.recentActions.at(-1)?.action.workflow.workflowId ?? '-',
  ]);
  process.stdout.write(
    `${table(['id', 'workflow', 'cron', 'state', 'next', 'last started'], rows)}\n`,
  );
  return EXIT.ok;
}

async function remove(t: Target, id: string): Promise<number> {
  try {
    await t.client.schedule.getHandle(id).delete();
  } catch (e) {
    if (e instanceof ScheduleNotFoundError) {
      process.stderr.write(`opsr: no schedule "${id}" in namespace ${t.namespace}\n`);
      return EXIT.failed;
    }
    throw e;
  }
  process.stdout.write(`deleted schedule ${id} (runs it started are kept)\n`);
  return EXIT.ok;
}

async function trigger(t: Target, id: string): Promise<number> {
  try {
    await t.client.schedule.getHandle(id).trigger(ScheduleOverlapPolicy.ALLOW_ALL);
  } catch (e) {
    if (e instanceof ScheduleNotFoundError) {
      process.stderr.write(`opsr: no schedule "${id}" in namespace ${t.namespace}\n`);
      return EXIT.failed;
    }
    throw e;
  }
  process.stdout.write(`triggered schedule ${id}\n`);
  return EXIT.ok;
}
