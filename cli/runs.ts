// Following and reporting runs: progress bars from the `progress` query while a run is open,
// the per-round table (or an ablation's side-by-side table) once it is closed.
import { WorkflowFailedError, type Client, type WorkflowHandle } from '@temporalio/client';
import { defaultPayloadConverter } from '@temporalio/common';
import {
  DIFF_METRICS,
  diffTable,
  metricTable,
  metricTitle,
  STUDY_TABLES,
} from '../report/study.ts';
import {
  progressQuery,
  WORKFLOW_TYPES,
  type AblationResult,
  type RunProgress,
  type RunResult,
} from '../contracts/workflows.ts';
import {
  EXIT,
  UsageError,
  connect,
  progressKey,
  renderProgress,
  roundTable,
  table,
  temporalFromConfigFlag,
  temporalTarget,
  uiBase,
  workflowLink,
  type TemporalTarget,
} from './common.ts';
import { workflowResult } from '../lib/temporal.ts';

export interface Target {
  client: Client;
  namespace: string;
  ui: string; // Web UI base URL
}

export async function openTarget(
  tt: TemporalTarget,
): Promise<Target & { close: () => Promise<void> }> {
  const { client, close } = await connect(tt);
  return { client, namespace: tt.namespace, ui: uiBase(tt.address), close };
}

// `opsr status|resume RUN`: the workflow id from the positionals and a connection for the body.
export async function onRun(
  values: { address?: string; namespace?: string; config?: string },
  positionals: string[],
  usage: string,
  body: (t: Target, id: string) => Promise<number>,
): Promise<number> {
  const id = positionals[0];
  if (!id) throw new UsageError(`RUN (a workflow id) is required\n\n${usage}`);
  const t = await openTarget(temporalTarget(values, await temporalFromConfigFlag(values.config)));
  try {
    return await body(t, id);
  } finally {
    await t.close();
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// The progress query needs a worker; a deadline keeps the CLI responsive when none runs.
export async function queryProgress(
  t: Target,
  workflowId: string,
  timeoutMs = 3000,
): Promise<RunProgress | null> {
  try {
    return await t.client.withDeadline(Date.now() + timeoutMs, () =>
      t.client.workflow.getHandle(workflowId).query(progressQuery),
    );
  } catch {
    return null;
  }
}

// Redraws in place on a terminal; elsewhere prints a frame when its key changes (progressKey).
class Display {
  private lines = 0;
  private last = '';
  constructor(private readonly tty = !!process.stdout.isTTY) {}
  show(text: string, key: string) {
    if (this.tty) {
      if (this.lines) process.stdout.write(`\x1b[${this.lines}F\x1b[J`);
      process.stdout.write(`${text}\n`);
      this.lines = text.split('\n').length;
    } else if (key !== this.last) {
      process.stdout.write(`${text}\n`);
    }
    this.last = key;
  }
}

// Polls until the workflow closes (or Ctrl-C, which detaches: the run goes on).
export async function follow<T>(
  t: Target,
  handle: WorkflowHandle,
  render: () => Promise<{ text: string; key: string } | null>,
  intervalMs = 1000,
): Promise<{ detached: true } | { detached: false; result: T }> {
  let closed: { ok: true; result: T } | { ok: false; error: unknown } | null = null;
  const done = workflowResult<T>(handle).then(
    (result) => {
      closed = { ok: true, result };
    },
    (error) => {
      closed = { ok: false, error };
    },
  );
  let detached = false;
  const onSigint = () => {
    detached = true;
  };
  process.once('SIGINT', onSigint);
  const display = new Display();
  try {
    while (!closed && !detached) {
      const r = await render();
      if (r && !closed) display.show(r.text, r.key);
      await Promise.race([done, sleep(intervalMs)]);
    }
  } finally {
    process.off('SIGINT', onSigint);
  }
  if (detached && !closed) return { detached: true };
  const c = closed as unknown as { ok: true; result: T } | { ok: false; error: unknown };
  if (c.ok) {
    const r = await render(); // the closed run's final state, not the last poll before it
    if (r) display.show(r.text, r.key);
  }
  if (!c.ok) throw c.error;
  return { detached: false, result: c.result };
}

export function runProgressRenderer(t: Target, workflowId: string) {
  return async () => {
    const p = await queryProgress(t, workflowId);
    if (!p)
      return {
        text: `${workflowId}: waiting for a worker to answer the progress query...`,
        key: 'no-worker',
      };
    return {
      text: renderProgress(p, !!process.stdout.isTTY),
      key: progressKey(p),
    };
  };
}

export function ablationProgressRenderer(t: Target, studyId: string, arms: string[]) {
  return async () => {
    const parts: string[] = [];
    const keys: string[] = [];
    for (const arm of arms) {
      const p = await queryProgress(t, `${studyId}/${arm}`, 1500);
      parts.push(
        p ? `arm ${arm}\n${renderProgress(p, !!process.stdout.isTTY)}` : `arm ${arm}: not started`,
      );
      keys.push(p ? progressKey(p) : '-');
    }
    return { text: parts.join('\n'), key: keys.join('|') };
  };
}

export function printRunResult(t: Target, workflowId: string, r: RunResult) {
  const out = [
    `run ${r.runId}${r.stopped ? ' (stopped after a round on request)' : ''}: ` +
      `${r.rounds.length} round${r.rounds.length === 1 ? '' : 's'}`,
    roundTable(r.rounds),
  ];
  if (r.baseReward !== null) out.push(`base policy reward: ${r.baseReward.toFixed(4)}`);
  if (r.prefixCurve)
    out.push(
      `prefix curve (round-1 reference): ` +
        `${r.prefixCurve.map((p) => `${p.score}:${p.meanReward.toFixed(3)}`).join(' ')}`,
    );
  out.push(
    `final model: ${r.finalModel}`,
    `run directory: ${r.runDir}`,
    `Web UI: ${workflowLink(t.ui, t.namespace, workflowId)}`,
  );
  process.stdout.write(`${out.join('\n')}\n`);
}

function printAblationResult(t: Target, workflowId: string, r: AblationResult) {
  const names = [...new Set(r.arms.map((a) => a.name))];
  const rows: string[][] = [];
  const f = (v: number | null) => (v === null || !Number.isFinite(v) ? '-' : v.toFixed(4));
  // A self-judge arm's rounds (those with `dropped`) pick pairs by judging: no rejected score.
  const selfJudged = (name: string, round: number) =>
    r.arms.find((a) => a.name === name)?.result.rounds.find((x) => x.round === round)?.dropped !==
    undefined;
  for (const row of r.table) {
    for (const name of names) {
      const a = row.arms[name];
      if (!a) continue;
      rows.push([
        String(row.round),
        name,
        selfJudged(name, row.round) ? '-' : String(a.rejectedScore),
        String(a.pairsKept),
        f(a.chosenReward),
        f(a.rejectedReward),
        f(a.policyReward),
        f(a.loss),
      ]);
    }
  }
  const out = [`ablation ${r.studyId}: ${names.join(' vs ')}`];
  if (r.seeds) out.push(`first seed (${r.seeds[0]}) side by side:`);
  out.push(
    table(
      ['round', 'arm', 'rejected', 'kept', 'chosen_rw', 'rejected_rw', 'policy_rw', 'loss'],
      rows,
    ),
  );
  if (r.summary) {
    const over = r.seeds ? `over seeds ${r.seeds.join(', ')} (mean ± sd)` : '(one run per arm)';
    for (const m of STUDY_TABLES.slice(0, 4)) {
      const t = metricTable(r.summary, m);
      if (t) out.push('', `${metricTitle(r.summary, m)} ${over}:`, table(t.head, t.rows));
    }
    const diffs = r.seeds ? diffTable(r.summary, DIFF_METRICS) : null;
    if (diffs) out.push('', 'paired differences (mean [95% CI]):', table(diffs.head, diffs.rows));
  }
  if (r.report) out.push(`report: ${r.report.html}`, `history: ${r.report.history}`);
  out.push(
    ...r.arms.map(
      (a) =>
        `arm ${a.name}${a.seed === undefined || a.seed === null ? '' : ` seed ${a.seed}`}` +
        `${a.reused ? ' (reused)' : ''}: ${workflowLink(t.ui, t.namespace, a.workflowId)}`,
    ),
  );
  out.push(`Web UI: ${workflowLink(t.ui, t.namespace, workflowId)}`);
  process.stdout.write(`${out.join('\n')}\n`);
}

export function printResult(t: Target, type: string, workflowId: string, result: unknown) {
  if (type === WORKFLOW_TYPES.ablation)
    printAblationResult(t, workflowId, result as AblationResult);
  else if (type === WORKFLOW_TYPES.run) printRunResult(t, workflowId, result as RunResult);
  else process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
}

// The failure chain of a closed workflow, innermost cause last.
export function failureText(e: unknown): string {
  const parts: string[] = [];
  let cur: unknown = e instanceof WorkflowFailedError ? e.cause : e;
  while (cur instanceof Error && parts.length < 6) {
    parts.push(cur.message);
    cur = (cur as { cause?: unknown }).cause;
  }
  return parts.join('\n  caused by: ') || String(e);
}

// Follows a started or running workflow to its end and prints its result; exit code.
export async function followAndReport(
  t: Target,
  type: string,
  workflowId: string,
  render: () => Promise<{ text: string; key: string } | null>,
): Promise<number> {
  const handle = t.client.workflow.getHandle(workflowId);
  try {
    const r = await follow<unknown>(t, handle, render);
    if (r.detached) {
      process.stdout.write(
        `\ndetached; the run goes on. Follow it with: opsr status ${workflowId} ` +
          `--watch\nWeb UI: ${workflowLink(t.ui, t.namespace, workflowId)}\n`,
      );
      return EXIT.ok;
    }
    printResult(t, type, workflowId, r.result);
    return EXIT.ok;
  } catch (e) {
    process.stderr.write(
      `opsr: ${workflowId} failed: ${failureText(e)}\nAfter fixing the cause: opsr ` +
        `resume ${workflowId}\nWeb UI: ${workflowLink(t.ui, t.namespace, workflowId)}\n`,
    );
    return EXIT.failed;
  }
}

// How a workflow was started: its type, task queue and arguments (from the first history event).
export async function startedWith(
  t: Target,
  workflowId: string,
): Promise<{ type: string; taskQueue: string; args: unknown[] }> {
  const history = await t.client.workflow.getHandle(workflowId).fetchHistory();
  const started = history.events?.[0]?.workflowExecutionStartedEventAttributes;
  if (!started?.workflowType?.name || !started.taskQueue?.name)
    throw new Error(`${workflowId}: its history has no start event`);
  const args = (started.input?.payloads ?? []).map((p) => defaultPayloadConverter.fromPayload(p));
  return { type: started.workflowType.name, taskQueue: started.taskQueue.name, args };
}

// An ablation's arm runs as their child workflow ids after `<studyId>/`, from its input:
// `<arm>`, or `<arm>/seed-<s>` for each seed (workflows/ablation.ts).
export function armNames(input: unknown): string[] {
  const study = input as { arms?: { name?: unknown }[]; seeds?: unknown[] } | undefined;
  const arms = (study?.arms ?? []).map((a) => String(a.name));
  if (!Array.isArray(study?.seeds)) return arms;
  return study.seeds.flatMap((s) => arms.map((a) => `${a}/seed-${String(s)}`));
}
export async function ablationArmNames(t: Target, workflowId: string): Promise<string[]> {
  return armNames((await startedWith(t, workflowId)).args[0]);
}
