// lib/temporal.ts (finding the CLI, the dev server with search attributes, UI and SQLite
// persistence) and the standalone worker's graceful shutdown (workers/main.ts).
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Client, Connection, WorkflowFailedError } from '@temporalio/client';
import {
  findTemporalCli,
  freePort,
  startDevServer,
  workflowResult,
  type DevServer,
} from '../../lib/temporal.ts';
import { SEARCH_ATTRIBUTES, TASK_QUEUES } from '../../contracts/workflows.ts';

const searchAttributes = Object.values(SEARCH_ATTRIBUTES);

const REPO = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const tmp = await mkdtemp(path.join(os.tmpdir(), 'opsr-devserver-'));
const servers: DevServer[] = [];
after(async () => {
  for (const s of servers) await s.stop();
  await rm(tmp, { recursive: true, force: true });
});

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

test('findTemporalCli: TEMPORAL_CLI_PATH, then PATH, then .venv', async () => {
  assert.throws(
    () => findTemporalCli({ TEMPORAL_CLI_PATH: path.join(tmp, 'missing') }),
    /TEMPORAL_CLI_PATH=.*missing is not an executable file/,
  );
  const bin = path.join(tmp, 'bin');
  await rm(bin, { recursive: true, force: true });
  await mkdir(bin);
  await writeFile(path.join(bin, 'temporal'), '#!/bin/sh\n');
  await chmod(path.join(bin, 'temporal'), 0o755);
  assert.equal(
    findTemporalCli({ PATH: `/nonexistent${path.delimiter}${bin}` }),
    path.join(bin, 'temporal'),
  );
  assert.equal(
    findTemporalCli({ TEMPORAL_CLI_PATH: path.join(bin, 'temporal'), PATH: '' }),
    path.join(bin, 'temporal'),
  );
  assert.equal(findTemporalCli({ PATH: '' }), path.join(REPO, '.venv', 'bin', 'temporal'));
});

test('startDevServer: search attributes, Web UI, SQLite persistence across a restart', async () => {
  const dbFile = path.join(tmp, 'temporal.sqlite');
  const uiPort = await freePort();
  const first = await startDevServer({ dbFile, uiPort, searchAttributes });
  servers.push(first);
  assert.match(first.address, /^127\.0\.0\.1:\d+$/);
  assert.equal(first.uiUrl, `http://127.0.0.1:${uiPort}`);
  const ui = await fetch(first.uiUrl);
  assert.equal(ui.status, 200);

  let conn = await Connection.connect({ address: first.address });
  const attrs = await conn.operatorService.listSearchAttributes({ namespace: 'default' });
  const custom = attrs.customAttributes ?? {};
  // IndexedValueType: 2 KEYWORD, 3 INT.
  assert.equal(custom[SEARCH_ATTRIBUTES.round.name], 3);
  assert.equal(custom[SEARCH_ATTRIBUTES.rejectedScore.name], 3);
  assert.equal(custom[SEARCH_ATTRIBUTES.phase.name], 2);
  // A run started with no worker yet must still be there after the server restarts.
  await new Client({ connection: conn }).workflow.start('preferenceRun', {
    taskQueue: TASK_QUEUES.control,
    workflowId: 'persisted',
    args: [{}],
  });
  await conn.close();
  await first.stop();
  assert.equal(alive(first.pid), false);

  const second = await startDevServer({ dbFile, searchAttributes });
  servers.push(second);
  assert.equal(second.uiUrl, null);
  conn = await Connection.connect({ address: second.address });
  const d = await new Client({ connection: conn }).workflow.getHandle('persisted').describe();
  assert.equal(d.status.name, 'RUNNING');
  await conn.close();
});

test("workflowResult waits through a server restart for the run's real outcome", async () => {
  const dbFile = path.join(tmp, 'restart.sqlite');
  const port = await freePort();
  const first = await startDevServer({ port, dbFile, searchAttributes });
  servers.push(first);
  // No client-side gRPC retries, so the server's absence reaches the caller as it would after
  // the client's own retries ran out (or at once for DEADLINE_EXCEEDED, which it never retries).
  const conn = await Connection.connect({ address: first.address, interceptors: [] });
  const handle = await new Client({ connection: conn }).workflow.start('preferenceRun', {
    taskQueue: 'opsr-test-no-worker',
    workflowId: 'waits-through-restart',
    args: [{}],
  });
  const plain = handle.result().then(
    () => 'completed',
    (e: unknown) => e,
  );
  const waited = workflowResult(handle, 200).then(
    () => 'completed',
    (e: unknown) => e,
  );
  await new Promise((r) => setTimeout(r, 500));
  await first.stop();
  const plainError = await plain; // the bare long poll fails with the server gone
  assert.ok(plainError instanceof Error && !(plainError instanceof WorkflowFailedError));
  const second = await startDevServer({ port, dbFile, searchAttributes });
  servers.push(second);
  await handle.terminate('test over');
  const outcome = await waited;
  assert.ok(outcome instanceof WorkflowFailedError, `got ${String(outcome)}`);
  assert.match(String(outcome.cause), /terminated|test over/i);
  await conn.close();
});

test('workers/main.ts polls its queues, exits 0 on SIGTERM; a bad queue name exits 1', async () => {
  const server = await startDevServer({ searchAttributes });
  servers.push(server);
  const main = path.join(REPO, 'workers', 'main.ts');

  const bad = spawn(
    process.execPath,
    ['--import', 'tsx', main, '--address', server.address, '--queues', 'control,gpu'],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let badErr = '';
  bad.stderr.on('data', (b: Buffer) => {
    badErr += b.toString();
  });
  assert.equal(await new Promise((r) => bad.once('exit', r)), 1);
  assert.match(badErr, /task queue "gpu": allowed control, sampler, trainer/);

  const worker = spawn(
    process.execPath,
    ['--import', 'tsx', main, '--address', server.address, '--queues', 'control,trainer'],
    { stdio: 'ignore' },
  );
  const exited = new Promise<number | null>((r) => worker.once('exit', (code) => r(code)));
  try {
    const conn = await Connection.connect({ address: server.address });
    const client = new Client({ connection: conn });
    const pollers = async (queue: string, type: 1 | 2) =>
      (
        await client.workflowService.describeTaskQueue({
          namespace: 'default',
          taskQueue: { name: queue },
          taskQueueType: type,
        })
      ).pollers?.length ?? 0;
    const deadline = Date.now() + 60_000;
    while (
      (await pollers(TASK_QUEUES.control, 1)) === 0 ||
      (await pollers(TASK_QUEUES.trainer, 2)) === 0
    ) {
      assert.ok(Date.now() < deadline, 'worker never polled');
      assert.equal(worker.exitCode, null, 'worker exited early');
      await new Promise((r) => setTimeout(r, 200));
    }
    assert.equal(await pollers(TASK_QUEUES.sampler, 2), 0, 'only the queues asked for');
    await conn.close();
    worker.kill('SIGTERM');
    assert.equal(await exited, 0);
  } finally {
    if (worker.exitCode === null && worker.signalCode === null) worker.kill('SIGKILL');
  }
});
