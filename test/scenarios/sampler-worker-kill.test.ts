// Two worker processes with the real activities (embedded sampler over the engine, engine
// trainer) on a real Temporal dev server. The worker that started the embedded sampler is
// SIGKILLed mid-sampling; the sampling retry runs on the other worker, which starts its own
// server, and the run completes within seconds of the heartbeat timeout set in the run config
// (activities.heartbeatTimeoutS), with the samples of an undisturbed run.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { readdirSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { TASK_QUEUES, WORKFLOW_TYPES, type RunResult } from '../../contracts/workflows.ts';
import { createTestEnv } from '../helpers/temporal.ts';
import { ENGINE, REPO } from '../helpers/tiny-gpt2.ts';
import { writeTinyTokenizer } from '../helpers/tiny-tokenizer.ts';

let env: TestWorkflowEnvironment;
let root: string;
let baseModel: string;
let promptsFile: string;
const workers = new Set<ChildProcess>();

before(async () => {
  root = await mkdtemp(path.join(os.tmpdir(), 'opsr-sampler-kill-'));
  baseModel = path.join(root, 'base');
  const vocab = await writeTinyTokenizer(baseModel);
  const shape = path.join(root, 'gpt2.json');
  await writeFile(
    shape,
    JSON.stringify({ n_embd: 32, n_layer: 2, n_head: 2, n_positions: 128, vocab_size: vocab }),
  );
  execFileSync(ENGINE, ['init', '--config', shape, '--out', baseModel, '--seed', '5'], {
    stdio: 'pipe',
  });
  promptsFile = path.join(root, 'prompts.jsonl');
  await writeFile(
    promptsFile,
    Array.from(
      { length: 24 },
      (_, i) => JSON.stringify({ prompt: `sort ${i % 10} ${(i * 7) % 10} ${(i * 3) % 10}` }) + '\n',
    ).join(''),
  );
  env = await createTestEnv();
});
after(async () => {
  for (const w of workers) w.kill('SIGKILL');
  await env?.teardown();
  if (root) await rm(root, { recursive: true, force: true });
});

function config(runId: string) {
  return {
    runId,
    model: baseModel,
    storage: path.join(root, 'store'),
    prompts: { file: promptsFile },
    rounds: 1,
    sampling: {
      maxTokens: 24,
      temperature: 1,
      seed: 9,
      shardSize: 2,
      concurrency: 2,
      embedded: { threads: 1 },
    },
    filter: { dropTruncated: false, dropIdentical: false, scoreTalkPatterns: [] },
    training: {
      learningRate: 1e-3,
      batchSize: 4,
      maxLength: 120,
      maxPromptLength: 90,
      engine: { threads: 1 },
    },
    activities: {
      heartbeatTimeoutS: { control: 5, sampler: 5, trainer: 10 },
      retry: { initialIntervalS: 0.2, maximumIntervalS: 1 },
    },
  };
}

async function spawnWorker(): Promise<ChildProcess> {
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', path.join(REPO, 'workers', 'main.ts'), '--address', env.address],
    {
      cwd: REPO,
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  workers.add(child);
  child.once('exit', () => workers.delete(child));
  // It logs once its workers poll.
  await new Promise<void>((resolve, reject) => {
    let out = '';
    const seen = (b: Buffer) => {
      out += b.toString();
      if (out.includes('RUNNING')) resolve(); // the SDK's "Worker state changed" line
    };
    child.stdout.on('data', seen);
    child.stderr.on('data', seen);
    child.once('exit', (code) =>
      reject(new Error(`worker exited (${code}) before polling: ${out}`)),
    );
  });
  return child;
}

// The worker process whose child is the engine serving the embedded sampler.
function samplerHolder(): number | null {
  for (const pid of readdirSync('/proc').filter((n) => /^\d+$/.test(n))) {
    try {
      const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
      if (!argv[0].endsWith('opsr-engine') || argv[1] !== 'serve') continue;
      const ppid = Number(/PPid:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]);
      if ([...workers].some((w) => w.pid === ppid)) return ppid;
    } catch {
      // the process ended while we looked
    }
  }
  return null;
}

const shardsOnDisk = (runId: string) =>
  readdir(path.join(root, 'store', 'runs', runId, 'round-1', 'samples')).then(
    (f) => f.filter((n) => n.startsWith('shard-')).length,
    () => 0,
  );

test('worker holding the embedded sampler SIGKILLed mid-sampling; the other finishes', async () => {
  const a = await spawnWorker();
  const b = await spawnWorker();
  const handle = await env.client.workflow.start(WORKFLOW_TYPES.run, {
    taskQueue: TASK_QUEUES.control,
    workflowId: 'killed',
    args: [config('killed')],
  });
  let holder: number | null = null;
  for (let i = 0; i < 1200 && (holder === null || (await shardsOnDisk('killed')) === 0); i++) {
    holder ??= samplerHolder();
    await new Promise((r) => setTimeout(r, 100));
  }
  const shardsAtKill = await shardsOnDisk('killed');
  assert.ok(
    holder !== null && shardsAtKill > 0 && shardsAtKill < 12,
    `holder ${holder}, ${shardsAtKill} shards at the kill`,
  );
  const victim = holder === a.pid ? a : b;
  const killedAt = Date.now();
  victim.kill('SIGKILL');
  const result = (await handle.result()) as RunResult;
  const afterKill = (Date.now() - killedAt) / 1000;
  console.log(
    `killed the sampler's worker with ${shardsAtKill}/12 shards on disk; the run ` +
      `finished ${afterKill.toFixed(1)} s later`,
  );
  assert.equal(result.rounds.length, 1);
  assert.ok(
    afterKill < 120,
    `the run took ${afterKill} s after the kill (a 30-minute stall would not finish)`,
  );
  const round = await env.client.workflow.getHandle('killed/round-1').fetchHistory();
  const started = round
    .events!.filter((e) => e.activityTaskStartedEventAttributes)
    .map((e) => e.activityTaskStartedEventAttributes!);
  assert.ok(
    started.some((s) => (s.attempt ?? 1) > 1),
    'an activity of the round was retried after the kill',
  );

  // Same samples as an undisturbed run of the same config (seeded requests).
  const clean = (await env.client.workflow.execute(WORKFLOW_TYPES.run, {
    taskQueue: TASK_QUEUES.control,
    workflowId: 'clean',
    args: [config('clean')],
  })) as RunResult;
  const samples = (id: string) =>
    readFile(path.join(root, 'store', 'runs', id, 'round-1', 'samples.jsonl'), 'utf8');
  assert.equal(await samples('killed'), await samples('clean'));
  assert.equal(clean.rounds[0].pairsKept, result.rounds[0].pairsKept);
});
