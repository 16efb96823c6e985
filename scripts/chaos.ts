// The chaos suite: the same small run (config/presets/tiny.json, the demo) twice on a real
// Temporal dev server, once undisturbed and once with the worker process SIGKILLed inside
// seeded phases (a round's sampling or training) and the Temporal server SIGKILLed once; then
// every artifact that carries the method's results (samples, pairs, datasets, rewards, trained
// weights, evaluation answers) must be byte-identical between the two. Kills are placed by what
// the run's files show, not by clock times, so they land in their phase on any machine; each
// reports the phase it hit, and a kill that missed its phase fails the suite.
//   npm run chaos -- [--seed N] [--kills K] [--rounds M] [--storage DIR]
// test/scenarios/chaos.test.ts runs a fast variant: one kill in sampling, one in training.
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, readdir, readFile, rm, stat } from 'node:fs/promises';
import { join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Client, Connection } from '@temporalio/client';
import { parseRunConfig, presetPath, type RunConfig } from '../config/index.ts';
import { loadRunConfig } from '../activities/load-config.ts';
import {
  progressQuery,
  SEARCH_ATTRIBUTES,
  TASK_QUEUES,
  WORKFLOW_TYPES,
  type RunResult,
} from '../contracts/workflows.ts';
import { prepareBaseModel, prepareDemoData } from '../cli/demo.ts';
import { freePort, startDevServer, type DevServer } from '../lib/temporal.ts';
import { rng } from '../tasks/digits.ts';

const REPO = resolve(import.meta.dirname, '..');

// A kill when the run is inside a phase's work: `sampling` once a shard is on disk, `training`
// once a checkpoint is (in that round, or in any round when `round` is left out).
interface KillPlan {
  phase: 'sampling' | 'training';
  round?: number;
}

interface ChaosOptions {
  config: RunConfig; // storage: where both runs write
  workerKills: KillPlan[];
  // SIGKILL the Temporal server once, then restart it on the same SQLite file
  temporalKill?: KillPlan;
  log?: (line: string) => void;
}

interface Kill {
  intended: string; // "sampling", "round 2 training"
  phase: string; // what the run's progress query answered just before the kill
  atMs: number; // after the start of the run under kills
}

interface ChaosResult {
  compared: number; // artifacts compared
  different: string[]; // relative paths whose bytes differ, or that only one run has
  kills: Kill[];
  temporalKill: Kill | null; // null when none was planned or the run ended before its phase
  missed: string[]; // one line per kill that did not land in its intended phase, or never came
  cleanMs: number;
  chaosMs: number;
}

const planLabel = (p: KillPlan) =>
  p.round === undefined ? p.phase : `round ${p.round} ${p.phase}`;

// Whether the progress query's answer ("round 2 training") is the plan's phase.
const landed = (p: KillPlan, phase: string) =>
  phase.endsWith(` ${p.phase}`) && (p.round === undefined || phase.startsWith(`round ${p.round} `));

// The files that carry a run's results; manifests and reports name the run id and are left out.
const RESULT_FILE = new RegExp(
  [
    /(^|\/)(samples|pairs|dataset|rewards|answers)\.jsonl$/,
    /(^|\/)dataset\.bin$/,
    /\/final\/model\.safetensors$/,
    /^prompts\.jsonl$/,
  ]
    .map((r) => r.source)
    .join('|'),
);

async function resultFiles(dir: string, prefix = ''): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(join(dir, prefix), { withFileTypes: true })) {
    const rel = prefix ? `${prefix}/${e.name}` : e.name;
    if (e.isDirectory()) out.push(...(await resultFiles(dir, rel)));
    else if (RESULT_FILE.test(rel)) out.push(rel);
  }
  return out.sort();
}

const sha = async (file: string) =>
  createHash('sha256')
    .update(await readFile(file))
    .digest('hex');

function spawnWorker(address: string): Promise<ChildProcess> {
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', join(REPO, 'workers', 'main.ts'), '--address', address],
    {
      cwd: REPO,
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  return new Promise((res, rej) => {
    let out = '';
    const seen = (b: Buffer) => {
      out = (out + b.toString()).slice(-4000);
      if (out.includes('RUNNING')) res(child); // the SDK's "Worker state changed" line
    };
    child.stdout.on('data', seen);
    child.stderr.on('data', seen);
    child.once('exit', (code) => rej(new Error(`worker exited (${code}) before polling: ${out}`)));
  });
}

function killed(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  const gone = new Promise<void>((r) => child.once('exit', () => r()));
  child.kill('SIGKILL');
  return gone;
}

const exists = (p: string) =>
  stat(p).then(
    () => true,
    () => false,
  );
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// Whether a kill is due: the run's files show it is inside that phase's work.
async function phaseReached(runDir: string, { phase, round }: KillPlan): Promise<boolean> {
  const rounds = (await readdir(runDir).catch(() => [] as string[])).filter((n) =>
    round === undefined ? n.startsWith('round-') : n === `round-${round}`,
  );
  for (const r of rounds) {
    const dir = join(runDir, r);
    if (phase === 'sampling') {
      const shards = (await readdir(join(dir, 'samples')).catch(() => [] as string[])).filter((n) =>
        n.startsWith('shard-'),
      );
      if (shards.length > 0 && !(await exists(join(dir, 'samples.manifest.json')))) return true;
    } else {
      const cks = await readdir(join(dir, 'train', 'checkpoints')).catch(() => [] as string[]);
      if (cks.length > 0 && !(await exists(join(dir, 'train', 'manifest.json')))) return true;
    }
  }
  return false;
}

export async function runChaos(opts: ChaosOptions): Promise<ChaosResult> {
  const log = opts.log ?? ((l: string) => process.stdout.write(`${l}\n`));
  const { config } = opts;
  await prepareDemoData(config);
  await prepareBaseModel(config);
  const tdir = join(config.storage, 'chaos-temporal');
  await rm(tdir, { recursive: true, force: true });
  await mkdir(tdir, { recursive: true });
  const port = await freePort();
  const startServer = () =>
    startDevServer({
      dbFile: join(tdir, 'chaos.sqlite'),
      logFile: join(tdir, 'server.log'),
      port,
      searchAttributes: Object.values(SEARCH_ATTRIBUTES),
    });
  let server: DevServer = await startServer();
  const connection = await Connection.connect({ address: server.address });
  const client = new Client({ connection });
  const workers = new Set<ChildProcess>();
  const worker = async () => {
    const w = await spawnWorker(server.address);
    workers.add(w);
    w.once('exit', () => workers.delete(w));
    return w;
  };
  const runDir = (id: string) => join(config.storage, 'runs', id);
  const tag = Date.now().toString(36);
  const ids = { clean: `chaos-${tag}-clean`, chaos: `chaos-${tag}-chaos` };
  const start = (id: string) =>
    client.workflow.start(WORKFLOW_TYPES.run, {
      taskQueue: TASK_QUEUES.control,
      workflowId: id,
      args: [parseRunConfig({ ...config, runId: id })],
    });
  const phaseOf = (id: string) =>
    client.workflow
      .getHandle(id)
      .query(progressQuery)
      .then(
        (p) => `round ${p.round} ${p.phase}`,
        () => 'unknown (no answer)',
      );

  try {
    // 1. Undisturbed.
    let w = await worker();
    const t0 = Date.now();
    (await (await start(ids.clean)).result()) as RunResult;
    const cleanMs = Date.now() - t0;
    log(`undisturbed run ${ids.clean}: ${(cleanMs / 1000).toFixed(1)} s`);
    await killed(w);

    // 2. The same run under kills.
    w = await worker();
    const t1 = Date.now();
    const handle = await start(ids.chaos);
    let finished = false;
    const done = handle.result().finally(() => {
      finished = true;
    });
    done.catch(() => {});
    const kills: Kill[] = [];
    let temporalKill: Kill | null = null;
    const missed: string[] = [];
    // The phase is asked just before the kill: a killed worker cannot answer, and a killed server
    // cannot pass the question on.
    const kill = async (plan: KillPlan, what: string): Promise<Kill> => {
      const k = {
        intended: planLabel(plan),
        phase: await phaseOf(ids.chaos),
        atMs: Date.now() - t1,
      };
      const hit = landed(plan, k.phase);
      log(
        `${(k.atMs / 1000).toFixed(1)} s: SIGKILL ${what} in ${k.phase}` +
          (hit ? '' : ` - MISSED, intended ${k.intended}`),
      );
      if (!hit) missed.push(`${what}: intended ${k.intended}, hit ${k.phase}`);
      return k;
    };
    const plans = [...opts.workerKills];
    let temporalPlan = opts.temporalKill;
    while (!finished && (plans.length > 0 || temporalPlan)) {
      if (temporalPlan && (await phaseReached(runDir(ids.chaos), temporalPlan))) {
        temporalKill = await kill(temporalPlan, 'Temporal server kill');
        process.kill(server.pid, 'SIGKILL');
        await sleep(1000);
        server = await startServer();
        temporalPlan = undefined;
        continue;
      }
      // Any pending plan may be due: one whose phase the run has passed is reported, not waited on.
      for (const p of plans) {
        if (!(await phaseReached(runDir(ids.chaos), p))) continue;
        plans.splice(plans.indexOf(p), 1);
        kills.push(await kill(p, `worker kill ${kills.length + 1} (pid ${w.pid})`));
        await killed(w);
        w = await worker();
        break;
      }
      await sleep(100);
    }
    for (const p of plans) missed.push(`worker kill in ${planLabel(p)}: the run never got there`);
    if (temporalPlan)
      missed.push(`Temporal server kill in ${planLabel(temporalPlan)}: the run never got there`);
    await done;
    const chaosMs = Date.now() - t1;
    log(`run under kills ${ids.chaos}: ${(chaosMs / 1000).toFixed(1)} s`);

    // 3. Byte for byte.
    const a = await resultFiles(runDir(ids.clean));
    const b = await resultFiles(runDir(ids.chaos));
    const different = [...new Set([...a, ...b])].filter((f) => !a.includes(f) || !b.includes(f));
    for (const f of a.filter((x) => b.includes(x))) {
      if ((await sha(join(runDir(ids.clean), f))) !== (await sha(join(runDir(ids.chaos), f))))
        different.push(f);
    }
    return {
      compared: a.length,
      different: different.sort(),
      kills,
      temporalKill,
      missed,
      cleanMs,
      chaosMs,
    };
  } finally {
    await Promise.all([...workers].map(killed));
    await connection.close().catch(() => {});
    await server.stop();
  }
}

// Counts kills per phase ("round 1 sampling": 2, ...).
export function killsByPhase(kills: ChaosResult['kills']): Record<string, number> {
  const out: Record<string, number> = {};
  for (const k of kills) out[k.phase] = (out[k.phase] ?? 0) + 1;
  return out;
}

// Short heartbeat timeouts: a killed worker's activity moves to the next worker within seconds.
export const CHAOS_ACTIVITIES = {
  heartbeatTimeoutS: { control: 5, sampler: 5, trainer: 10 },
  retry: { initialIntervalS: 0.2, maximumIntervalS: 2, maximumAttempts: 0 },
};

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      seed: { type: 'string', default: '1' },
      kills: { type: 'string', default: '3' },
      rounds: { type: 'string', default: '3' },
      storage: { type: 'string', default: join(REPO, '.opsr', 'chaos') },
    },
  });
  const int = (name: string, v: string, min: number) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min)
      throw new Error(`--${name} "${v}": allowed an integer >= ${min}`);
    return n;
  };
  const seed = int('seed', values.seed, 0);
  const nKills = int('kills', values.kills, 0);
  const rounds = int('rounds', values.rounds, 1);
  const preset = await loadRunConfig(presetPath('tiny'));
  const storage = resolve(values.storage);
  // The kills' places: a seeded choice among the rounds' sampling and training phases, distinct,
  // in run order (a second kill in the same phase could find it already over).
  const slots: KillPlan[] = Array.from({ length: rounds }, (_, i) => [
    { phase: 'sampling' as const, round: i + 1 },
    { phase: 'training' as const, round: i + 1 },
  ]).flat();
  if (nKills > slots.length)
    throw new Error(
      `--kills ${nKills}: at most ${slots.length} (a sampling and a training phase per round)`,
    );
  const rand = rng(seed); // the same places for the same seed
  const order = slots.map((s, i) => ({ i, key: rand() })).sort((x, y) => x.key - y.key);
  const workerKills = order
    .slice(0, nKills)
    .map((o) => o.i)
    .sort((x, y) => x - y)
    .map((i) => slots[i]);
  const temporalKill = slots[Math.floor(rand() * slots.length)];
  const moved = (p: string) => join(storage, relative(preset.storage, p));
  const config = parseRunConfig({
    ...preset,
    storage,
    model: moved(preset.model),
    rounds,
    prefixes: {
      ...preset.prefixes,
      rejectedScores: preset.prefixes.rejectedScores.slice(0, rounds),
    },
    prompts: { ...preset.prompts, file: moved(preset.prompts.file) },
    // Small shards and frequent checkpoints: a phase's work shows on disk early, so a kill placed
    // by the files lands well inside it.
    sampling: { ...preset.sampling, shardSize: 16 },
    training: {
      ...preset.training,
      learningRate: preset.training.learningRate.slice(0, rounds),
      checkpointEvery: 2,
    },
    init: { sft: { ...preset.init!.sft!, data: moved(preset.init!.sft!.data) } },
    evaluation: {
      ...preset.evaluation!,
      prompts: { ...preset.evaluation!.prompts, file: moved(preset.evaluation!.prompts.file) },
    },
    activities: CHAOS_ACTIVITIES,
  });
  const r = await runChaos({ config, workerKills, temporalKill });
  console.log(
    `\nseed ${seed}: ${r.kills.length} worker kills, Temporal server killed ` +
      `${r.temporalKill ? `once (${r.temporalKill.phase})` : 'never'}`,
  );
  for (const [phase, n] of Object.entries(killsByPhase(r.kills))) console.log(`  ${n} x ${phase}`);
  let failed = false;
  if (r.missed.length) {
    console.log(`KILLS THAT MISSED THEIR PHASE (${r.missed.length}):\n  ${r.missed.join('\n  ')}`);
    failed = true;
  }
  console.log(
    `undisturbed ${(r.cleanMs / 1000).toFixed(1)} s, under kills ` +
      `${(r.chaosMs / 1000).toFixed(1)} s`,
  );
  if (r.different.length) {
    console.log(
      `DIFFERENT (${r.different.length} of ${r.compared}):\n  ${r.different.join('\n  ')}`,
    );
    return 1;
  }
  console.log(
    `${r.compared} artifacts byte-identical (samples, pairs, datasets, rewards, ` +
      `weights, evaluation answers)`,
  );
  return failed ? 1 : 0;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().then(
    (code) => process.exit(code),
    (err: unknown) => {
      console.error(`chaos: ${err instanceof Error ? err.message : String(err)}`);
      process.exit(1);
    },
  );
}
