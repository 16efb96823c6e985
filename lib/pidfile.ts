// Pid files for child processes that must not outlive a dead worker: the engine training into a
// directory, a managed vLLM server on a port. The next attempt on the same host reads the file
// and stops what the dead one left (SIGTERM, SIGKILL after a grace period) before starting anew.
import { readFile, rm } from 'node:fs/promises';
import { hostname } from 'node:os';
import { writeJsonAtomic } from './atomic.ts';

export async function recordPid(file: string, pid: number): Promise<void> {
  await writeJsonAtomic(file, { pid, host: hostname() });
}

export async function forgetPid(file: string): Promise<void> {
  await rm(file, { force: true });
}

// Stops the recorded process if it still runs here and its command line holds every string in
// `mustInclude` (so a recycled pid of some other program is left alone). Returns whether it
// found one to stop.
export async function stopRecorded(
  file: string,
  mustInclude: string[],
  graceMs: number,
): Promise<boolean> {
  const rec = await readFile(file, 'utf8').then(
    (t) => JSON.parse(t) as { pid: number; host: string },
    () => null,
  );
  if (!rec || rec.host !== hostname() || rec.pid === process.pid) return false;
  const argv = (await readFile(`/proc/${rec.pid}/cmdline`, 'utf8').catch(() => '')).split('\0');
  if (!mustInclude.every((s) => argv.includes(s))) return false;
  try {
    process.kill(rec.pid, 'SIGTERM');
  } catch {
    return false;
  }
  for (const deadline = Date.now() + graceMs; Date.now() < deadline;) {
    await new Promise((r) => setTimeout(r, 100));
    try {
      process.kill(rec.pid, 0);
    } catch {
      return true;
    }
  }
  process.kill(rec.pid, 'SIGKILL');
  return true;
}
