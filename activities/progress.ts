// Best-effort progress signals to the workflows named in ProgressTarget.notify, throttled.
// Durability comes from heartbeats; a lost signal only delays the progress display.
import { getClient, heartbeat } from '@temporalio/activity';
import { activityProgressSignal, type ActivityProgress } from '../contracts/progress.ts';

export function progressNotifier(notify: string[], minIntervalMs = 1000): (p: ActivityProgress, force?: boolean) => void {
  let last = 0;
  return (p, force = false) => {
    const now = Date.now();
    if (notify.length === 0 || (!force && now - last < minIntervalMs)) return;
    last = now;
    let client;
    try {
      client = getClient();
    } catch {
      return; // no client (MockActivityEnvironment): nothing to notify
    }
    for (const id of notify) void client.workflow.getHandle(id).signal(activityProgressSignal, p).catch(() => {});
  };
}

// Heartbeats every intervalMs with the latest details while a long piece of work runs, so a slow
// request or a long engine step (or the DPO reference pre-pass) is not taken for a dead worker.
export async function withKeepAlive<T>(details: () => unknown, work: () => Promise<T>, intervalMs = 10_000): Promise<T> {
  heartbeat(details());
  const timer = setInterval(() => heartbeat(details()), intervalMs);
  try {
    return await work();
  } finally {
    clearInterval(timer);
  }
}
