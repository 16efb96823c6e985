// Best-effort progress signals to the workflows named in ProgressTarget.notify, throttled.
// Durability comes from heartbeats; a lost signal only delays the progress display.
import { activityInfo, getClient, heartbeat } from '@temporalio/activity';
import { activityProgressSignal, type ActivityProgress } from '../contracts/progress.ts';

// Each signal is an event (and a workflow task) in the receiving workflow's history, so they are
// sent at twentieths of the work (at most PROGRESS_STEPS + 1 per activity and workflow, however
// many shards or steps a paper-scale round has), and no closer than minIntervalMs. The display ends
// on the full count: force sends a final value past the interval.
const PROGRESS_STEPS = 20;
const fractionOf = (p: ActivityProgress) =>
  p.kind === 'sampling'
    ? p.total > 0
      ? p.done / p.total
      : 0
    : p.totalSteps > 0
      ? p.step / p.totalSteps
      : 0;

export function progressNotifier(
  notify: string[],
  minIntervalMs = 1000,
): (p: ActivityProgress, force?: boolean) => void {
  let last = 0;
  let sent = -1; // the last twentieth signalled
  return (p, force = false) => {
    const now = Date.now();
    const tenth = Math.min(PROGRESS_STEPS, Math.floor(fractionOf(p) * PROGRESS_STEPS));
    if (notify.length === 0 || tenth <= sent || (!force && now - last < minIntervalMs)) return;
    last = now;
    sent = tenth;
    let client;
    try {
      client = getClient();
    } catch {
      return; // no client (MockActivityEnvironment): nothing to notify
    }
    for (const id of notify)
      void client.workflow
        .getHandle(id)
        .signal(activityProgressSignal, p)
        .catch(() => {});
  };
}

// Heartbeats while a long piece of work runs, so a slow request, a long engine step (or the DPO
// reference pre-pass) or a server starting is not taken for a dead worker: every 10 s, or a third
// of the heartbeat timeout when that is shorter. Outside an activity (a direct call) it only runs.
export async function withKeepAlive<T>(details: () => unknown, work: () => Promise<T>): Promise<T> {
  let timeoutMs: number;
  try {
    timeoutMs = activityInfo().heartbeatTimeoutMs ?? 0;
  } catch {
    return work();
  }
  heartbeat(details());
  const timer = setInterval(
    () => heartbeat(details()),
    Math.min(10_000, timeoutMs > 0 ? timeoutMs / 3 : 10_000),
  );
  try {
    return await work();
  } finally {
    clearInterval(timer);
  }
}

// An activity that heartbeats for as long as it runs (light file work that may still take a while
// on a paper-scale run: prompt lists, filtering, tokenizing, hashing models, servers starting).
export function heartbeating<I, O>(fn: (input: I) => Promise<O>): (input: I) => Promise<O> {
  return (input) =>
    withKeepAlive(
      () => undefined,
      () => fn(input),
    );
}

// Lets timers (the keep-alive heartbeat) run during a long synchronous loop: await it every few
// hundred items.
export const yieldToTimers = () => new Promise<void>((resolve) => setImmediate(resolve));
