// `opsr dev`: a real dev server with its SQLite file under the storage root, the Web UI and a
// worker; Ctrl-C stops both; a second start on the same storage still has the first one's data.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { access, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../../lib/temporal.ts';
import { ROOT, opsr } from '../helpers/opsr-cli.ts';

let dir: string;
const children: ChildProcess[] = [];

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'opsr-cli-dev-'));
});
after(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await rm(dir, { recursive: true, force: true });
});

function startDev(args: string[]) {
  const child = spawn(process.execPath, [join(ROOT, 'bin', 'opsr.mjs'), 'dev', ...args], {
    cwd: dir,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (b) => {
    stdout += b;
  });
  child.stderr.on('data', (b) => {
    stderr += b;
  });
  const exited = new Promise<number | null>((res) => child.once('exit', (code) => res(code)));
  const waitFor = async (text: string, timeoutMs = 120_000) => {
    const end = Date.now() + timeoutMs;
    while (!stdout.includes(text)) {
      if (child.exitCode !== null)
        throw new Error(`opsr dev exited ${child.exitCode}:\n${stdout}\n${stderr}`);
      if (Date.now() > end) throw new Error(`no "${text}" from opsr dev:\n${stdout}\n${stderr}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  };
  return { child, exited, waitFor, out: () => stdout, err: () => stderr };
}

const portOpen = (port: number) =>
  new Promise<boolean>((res) => {
    const s = connect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      res(true);
    });
    s.once('error', () => res(false));
  });

test('opsr dev: server + UI + worker, Ctrl-C stops both, data survives a restart', async () => {
  const [port, uiPort] = [await freePort(), await freePort()];
  const storage = join(dir, 'store');
  const dev = startDev([
    '--storage',
    storage,
    '--port',
    String(port),
    '--ui-port',
    String(uiPort),
    '--queues',
    'control',
  ]);
  await dev.waitFor('worker polling opsr-control');
  assert.match(dev.out(), new RegExp(`Temporal Web UI: http://127\\.0\\.0\\.1:${uiPort}\\n`));
  await access(join(storage, 'temporal', 'dev.sqlite'));
  const ui = await fetch(`http://127.0.0.1:${uiPort}/`);
  assert.equal(ui.status, 200);

  const address = ['--address', `127.0.0.1:${port}`];
  await writeFile(
    join(dir, 'run.json'),
    JSON.stringify({ model: 'm', prompts: { file: 'p.jsonl' } }),
  );
  const created = await opsr([
    'schedule',
    'create',
    '--id',
    'kept',
    '--config',
    join(dir, 'run.json'),
    '--paused',
    ...address,
  ]);
  assert.equal(created.code, 0, created.stderr);
  const resume = await opsr(['resume', 'nothing-here', ...address]);
  assert.equal(resume.code, 1);

  dev.child.kill('SIGINT');
  assert.equal(await dev.exited, 0, dev.err());
  assert.match(dev.out(), /stopped the worker and the dev server\n$/);
  assert.equal(await portOpen(port), false, 'the dev server still listens after Ctrl-C');

  // Same storage root: the SQLite file still holds the schedule.
  const again = startDev([
    '--storage',
    storage,
    '--port',
    String(port),
    '--ui-port',
    String(uiPort),
    '--no-worker',
  ]);
  await again.waitFor('no worker started');
  let listed = '';
  for (let i = 0; i < 40 && !listed.includes('kept'); i++) {
    listed = (await opsr(['schedule', 'list', ...address])).stdout;
    if (!listed.includes('kept')) await new Promise((r) => setTimeout(r, 250));
  }
  assert.match(listed, /^kept +preferenceRun +0 2 \* \* \* +paused/m);
  again.child.kill('SIGTERM');
  assert.equal(await again.exited, 0, again.err());
  assert.equal(await portOpen(port), false);
});
