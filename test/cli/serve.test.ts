// `opsr serve` as a user runs it: flags, the URL it prints, serving, SIGTERM.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeTinyModel, REPO } from '../helpers/tiny-gpt2.ts';

const OPSR = join(REPO, 'bin', 'opsr.mjs');
let dir: string;
const children: ChildProcess[] = [];

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'opsr-srvcli-'));
  await makeTinyModel(join(dir, 'm'));
});
after(async () => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  await rm(dir, { recursive: true, force: true });
});

function run(args: string[]): {
  child: ChildProcess;
  stderr: () => string;
  exited: Promise<number | null>;
} {
  const child = spawn(process.execPath, [OPSR, 'serve', ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  let err = '';
  child.stderr!.on('data', (d) => (err += d));
  return {
    child,
    stderr: () => err,
    exited: new Promise((r) => child.on('exit', (code) => r(code))),
  };
}

test('opsr serve prints its URL, serves the model under given name, stops on SIGTERM', async () => {
  const p = run([
    '--model',
    join(dir, 'm'),
    '--port',
    '0',
    '--served-model-name',
    'tiny',
    '--threads',
    '1',
    '--max-batch',
    '2',
  ]);
  let url = '';
  for (let i = 0; i < 600 && !url; i++) {
    url = p.stderr().match(/at (http:\/\/127\.0\.0\.1:\d+\/v1)/)?.[1] ?? '';
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.ok(url, `no URL printed; stderr: ${p.stderr()}`);
  const models = await (await fetch(`${url}/models`)).json();
  assert.equal(models.data[0].id, 'tiny');
  const res = await fetch(`${url}/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      model: 'tiny',
      prompt: 'the',
      max_tokens: 4,
      temperature: 0,
      ignore_eos: true,
    }),
  });
  const body = await res.json();
  assert.equal(body.usage.completion_tokens, 4);
  p.child.kill('SIGTERM');
  assert.equal(await p.exited, 0);
});

test('opsr serve rejects bad flags and a bad model directory with a clear message', async () => {
  const noModel = run(['--port', '0']);
  assert.equal(await noModel.exited, 2);
  assert.match(noModel.stderr(), /--model DIR is required/);
  const badPort = run(['--model', join(dir, 'm'), '--port', 'x']);
  assert.equal(await badPort.exited, 2);
  assert.match(badPort.stderr(), /--port must be an integer >= 0; got "x"/);
  const missing = run(['--model', join(dir, 'nowhere'), '--port', '0']);
  assert.equal(await missing.exited, 1);
  assert.match(missing.stderr(), /nowhere.*tokenizer\.json/);
});
