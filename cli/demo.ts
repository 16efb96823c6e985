// opsr demo: the whole method on a laptop. Creates what config/presets/tiny.json points at (the
// digits task's seed data and prompts, a tiny randomly initialized GPT-2 with the task's
// tokenizer), starts a Temporal dev server with the Web UI and a worker in this process, and runs
// the real preferenceRun workflow: seed SFT (cached), then 3 rounds with rejected scores 3, 5, 7,
// the embedded sampler, the engine, and the builtin scorer for the held-out reward.
import { mkdir, readFile, rename, rm } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { execa } from 'execa';
import { WorkflowExecutionAlreadyStartedError } from '@temporalio/client';
import type { RunConfig } from '../config/index.ts';
import { parseRunConfig, presetPath } from '../config/index.ts';
import { loadRunConfig } from '../activities/load-config.ts';
import { DEFAULT_ENGINE_PATH, engineEnv } from '../lib/engine.ts';
import { writeFileAtomic, writeJsonAtomic } from '../lib/atomic.ts';
import { freePort, startDevServer } from '../lib/temporal.ts';
import {
  INSTRUCTION_FILES,
  writeDigitsData,
  writeInstructionData,
  writeTokenizer,
} from '../tasks/files.ts';
import { vocabulary } from '../tasks/tokenizer.ts';
import type { DigitsDataSpec } from '../tasks/seed.ts';
import { OPERATIONS } from '../tasks/digits.ts';
import {
  SEARCH_ATTRIBUTES,
  TASK_QUEUES,
  WORKFLOW_TYPES,
  type RunResult,
} from '../contracts/workflows.ts';
import {
  EXIT,
  UsageError,
  connect,
  guard,
  parseFlags,
  timestampId,
  workflowLink,
} from './common.ts';
import { fetchModel, MODELS } from './models.ts';
import { follow, printRunResult, runProgressRenderer, type Target } from './runs.ts';

const USAGE = `Usage: opsr demo [--config FILE|PRESET] [--rounds N] [--prompts N] [--id RUN_ID]
                 [--port N] [--ui-port N] [--keep]

Runs the paper's pipeline end to end on the digits task with config/presets/tiny.json (or
--config): seed data, a tiny base model, a Temporal dev server with the Web UI (SQLite under the
storage root), a worker, 3 rounds through the preferenceRun workflow, then the per-round table
and report.html (figures) / report.md / report.json in the run directory. Ports default to 7233 / \
8233 when free.
A config whose model is one \`opsr models\` knows (e.g. --config smollm2-135m-instruct) runs
that real model instead: it is fetched if missing, and a prompts file named
${INSTRUCTION_FILES.train} gets the project's instruction prompts.
--rounds N runs only the first N rounds; --prompts N only the first N prompts.
--keep leaves the server and its Web UI up after the run, until Ctrl-C.`;

// The base model: small enough for the seed SFT to take well under a minute on 2 cores, big
// enough to learn to sort.
const DEMO_MODEL = { n_embd: 64, n_layer: 2, n_head: 4, n_positions: 64 } as const;
const DEMO_MODEL_SEED = 0;

// The seed data; prompts and held-out counts come from the config's limits.
const DEMO_DATA = {
  seed: 0,
  sftExamples: 4000,
  unprefixedFraction: 0.3,
  perfectShare: 0.5,
} as const;

// Where the config expects the demo's files; they must be the task's files, not something else.
function demoPaths(config: RunConfig) {
  const sft = config.init?.sft?.data;
  const heldout = config.evaluation?.prompts.file;
  if (!sft || !heldout) {
    throw new UsageError(
      'the demo config needs init.sft.data and evaluation.prompts.file (the seed data ' +
        'and held-out prompts it generates)',
    );
  }
  const dataDir = dirname(config.prompts.file);
  for (const [field, p, name] of [
    ['init.sft.data', sft, 'sft.jsonl'],
    ['evaluation.prompts.file', heldout, 'heldout.jsonl'],
    ['prompts.file', config.prompts.file, 'prompts.jsonl'],
  ] as const) {
    if (p !== join(dataDir, name))
      throw new UsageError(
        `${field} is ${p}; the demo writes its data to ${join(dataDir, name)} (keep ` +
          `the three data files side by side)`,
      );
  }
  return dataDir;
}

// Seed data and prompts: deterministic by seed, so rewriting them is idempotent; written only when
// missing so the content hashes (and with them the cached SFT stage) stay put.
export async function prepareDemoData(
  config: RunConfig,
  data: Omit<
    DigitsDataSpec,
    'chosenTemplate' | 'rejectedTemplate' | 'trainPrompts' | 'heldoutPrompts'
  > = DEMO_DATA,
): Promise<void> {
  const dataDir = demoPaths(config);
  const marker = join(dataDir, 'spec.json');
  const spec: DigitsDataSpec = {
    ...data,
    trainPrompts: config.prompts.limit ?? 128,
    heldoutPrompts: config.evaluation?.prompts.limit ?? 100,
    // Only a config that sets the task changes the spec: the default demo's data stays cached.
    ...(config.task && { digits: { ...config.task.digits, ops: OPERATIONS } }),
    chosenTemplate: config.prefixes.chosenTemplate,
    rejectedTemplate: config.prefixes.rejectedTemplate,
  };
  if ((await readFile(marker, 'utf8').catch(() => null)) === JSON.stringify(spec)) return;
  await writeDigitsData(dataDir, spec);
  await writeFileAtomic(marker, JSON.stringify(spec)); // last: the files above are complete
}

// The base model: `opsr-engine init` plus the task's tokenizer files, built aside and renamed into
// place, so an interrupted demo never leaves a half-made model that later runs would trust.
export async function prepareBaseModel(
  config: RunConfig,
  shape: typeof DEMO_MODEL = DEMO_MODEL,
  seed = DEMO_MODEL_SEED,
): Promise<string> {
  const dir = config.model;
  const made = JSON.stringify({ shape, seed, vocab: vocabulary() });
  if ((await readFile(join(dir, 'demo-init.json'), 'utf8').catch(() => null)) === made) return dir;
  const tmp = `${dir}.tmp-${process.pid}`;
  await rm(tmp, { recursive: true, force: true });
  await mkdir(tmp, { recursive: true });
  const hfConfig = join(tmp, 'init-config.json');
  await writeJsonAtomic(hfConfig, {
    ...shape,
    vocab_size: vocabulary().length,
    layer_norm_epsilon: 1e-5,
    n_inner: null,
    activation_function: 'gelu_new',
  });
  const engine = config.training.engine.path ?? DEFAULT_ENGINE_PATH;
  await execa(engine, ['init', '--config', hfConfig, '--out', tmp, '--seed', String(seed)], {
    env: engineEnv(),
    extendEnv: false,
  });
  await rm(hfConfig);
  await writeTokenizer(tmp, shape.n_positions);
  await writeFileAtomic(join(tmp, 'demo-init.json'), made);
  await rm(dir, { recursive: true, force: true });
  await rename(tmp, dir);
  return dir;
}

// A real model `opsr models` knows, with the instruction prompts when the config names their
// file; otherwise the digits task's data and tiny base model.
async function prepareInputs(config: RunConfig, seed: number | undefined): Promise<void> {
  const known = basename(config.model);
  if (Object.hasOwn(MODELS, known)) {
    if (basename(config.prompts.file) === INSTRUCTION_FILES.train) {
      await writeInstructionData(dirname(config.prompts.file));
    }
    await fetchModel(known, config.model);
    return;
  }
  await prepareDemoData(config, { ...DEMO_DATA, seed: seed ?? DEMO_DATA.seed });
  await prepareBaseModel(config, DEMO_MODEL, seed ?? DEMO_MODEL_SEED);
}

// The first `rounds` rounds (per-round lists cut to match) and the first `prompts` prompts.
export function shortenRun(config: RunConfig, rounds?: number, prompts?: number): RunConfig {
  if (rounds !== undefined && rounds > config.rounds) {
    const max = config.rounds;
    throw new UsageError(`--rounds ${rounds}: the config has ${max}; allowed 1-${max}`);
  }
  const n = rounds ?? config.rounds;
  const rs = config.prefixes.rejectedScores;
  const lr = config.training.learningRate;
  return parseRunConfig(
    {
      ...config,
      rounds: n,
      prefixes: { ...config.prefixes, rejectedScores: Array.isArray(rs) ? rs.slice(0, n) : rs },
      training: { ...config.training, learningRate: Array.isArray(lr) ? lr.slice(0, n) : lr },
      prompts: { ...config.prompts, limit: prompts ?? config.prompts.limit },
    },
    { source: 'opsr demo' },
  );
}

async function pickPort(preferred: number): Promise<number> {
  const { createServer } = await import('node:net');
  const free = await new Promise<boolean>((res) => {
    const s = createServer()
      .once('error', () => res(false))
      .listen(preferred, '127.0.0.1', () => s.close(() => res(true)));
  });
  return free ? preferred : freePort();
}

interface DemoRun {
  result: RunResult;
  runId: string;
  uiLink: string | null;
  report: { json: string; markdown: string; html: string };
}

// Runs a config through a fresh dev server and an in-process worker; prints progress and the table
// when `print` is set. The server's SQLite file lives under the storage root (the history survives
// the server); `keepServer` holds the server and its Web UI open after the run until Ctrl-C.
// `seed` picks the seed data and the base model's initialization (the config holds the sampling
// and training seeds).
export async function runDemo(
  config: RunConfig,
  opts: {
    runId?: string;
    port?: number;
    uiPort?: number | null;
    print?: boolean;
    seed?: number;
    keepServer?: boolean;
  } = {},
): Promise<DemoRun> {
  const print = opts.print ?? true;
  const say = (s: string) => {
    if (print) process.stdout.write(`${s}\n`);
  };
  await prepareInputs(config, opts.seed);
  const runId = opts.runId ?? config.runId ?? timestampId('demo');
  const input = parseRunConfig({ ...config, runId }, { source: 'opsr demo' });

  const tdir = join(config.storage, 'temporal');
  await mkdir(tdir, { recursive: true });
  const port = opts.port ?? (await pickPort(7233));
  const uiPort = opts.uiPort === null ? undefined : (opts.uiPort ?? (await pickPort(8233)));
  const server = await startDevServer({
    dbFile: join(tdir, 'demo.sqlite'),
    logFile: join(tdir, 'demo-server.log'),
    port,
    uiPort,
    namespace: config.temporal.namespace,
    searchAttributes: Object.values(SEARCH_ATTRIBUTES),
  });
  say(`Temporal dev server ${server.address}${server.uiUrl ? `, Web UI ${server.uiUrl}` : ''}`);
  const { createWorkers } = await import('../workers/index.ts');
  const workers = await createWorkers({
    address: server.address,
    namespace: config.temporal.namespace,
  });
  const running = workers.run();
  const conn = await connect({
    address: server.address,
    namespace: config.temporal.namespace,
    tls: false,
  });
  try {
    const t: Target = {
      client: conn.client,
      namespace: config.temporal.namespace,
      ui: server.uiUrl ?? '',
    };
    const uiLink = server.uiUrl ? workflowLink(server.uiUrl, t.namespace, runId) : null;
    try {
      await t.client.workflow.start(WORKFLOW_TYPES.run, {
        taskQueue: TASK_QUEUES.control,
        workflowId: runId,
        args: [input],
      });
      say(`started ${runId}${uiLink ? `: ${uiLink}` : ''}`);
    } catch (e) {
      // An interrupted demo's run is still open in the SQLite file: pick it up where it stopped.
      if (!(e instanceof WorkflowExecutionAlreadyStartedError)) throw e;
      say(`resuming ${runId}${uiLink ? `: ${uiLink}` : ''}`);
    }
    const handle = t.client.workflow.getHandle(runId);
    const render = print ? runProgressRenderer(t, runId) : async () => null;
    const r = await follow<RunResult>(t, handle, render, 1000);
    if (r.detached)
      throw new Error(
        `interrupted; ${runId} waits in ${join(tdir, 'demo.sqlite')}: \`npm run demo ` +
          `-- --id ${runId}\` picks it up where it stopped`,
      );
    if (print) printRunResult(t, runId, r.result);
    if (opts.keepServer) {
      say(`the Temporal server and its Web UI stay up (--keep); Ctrl-C stops them`);
      await new Promise<void>((res) => {
        process.once('SIGINT', res);
        process.once('SIGTERM', res);
      });
    }
    return {
      result: r.result,
      runId,
      uiLink,
      report: {
        json: join(r.result.runDir, 'report.json'),
        markdown: join(r.result.runDir, 'report.md'),
        html: join(r.result.runDir, 'report.html'),
      },
    };
  } finally {
    await conn.close();
    workers.shutdown();
    await running;
    await server.stop();
  }
}

export async function main(argv: string[]): Promise<number> {
  return guard(async () => {
    const { values } = parseFlags(
      argv,
      {
        config: { type: 'string' },
        id: { type: 'string' },
        port: { type: 'string' },
        'ui-port': { type: 'string' },
        keep: { type: 'boolean' },
        rounds: { type: 'string' },
        prompts: { type: 'string' },
      },
      USAGE,
    );
    if (values.help) {
      process.stdout.write(`${USAGE}\n`);
      return EXIT.ok;
    }
    const port = (name: string, v: string | undefined) => {
      if (v === undefined) return undefined;
      const n = Number(v);
      if (!Number.isInteger(n) || n < 1 || n > 65535)
        throw new UsageError(`--${name} "${v}" is not a port; allowed 1-65535`);
      return n;
    };
    // The worker runs in this process: keep its lifecycle chatter off the progress display.
    const { installWorkerLogging } = await import('../workers/index.ts');
    installWorkerLogging();
    const file = presetPath(values.config ?? 'tiny');
    const count = (name: string, v: string | undefined) => {
      if (v === undefined) return undefined;
      const n = Number(v);
      if (!Number.isInteger(n) || n < 1) {
        throw new UsageError(`--${name} "${v}" is not a count; allowed an integer >= 1`);
      }
      return n;
    };
    const config = shortenRun(
      await loadRunConfig(file),
      count('rounds', values.rounds),
      count('prompts', values.prompts),
    );
    const t0 = Date.now();
    const run = await runDemo(config, {
      runId: values.id,
      port: port('port', values.port),
      uiPort: port('ui-port', values['ui-port']),
      keepServer: values.keep,
    });
    process.stdout.write(
      `report: ${run.report.html} (figures inline)\n        ${run.report.markdown}\n   ` +
        `     ${run.report.json}\n` +
        `TensorBoard: tensorboard --logdir ${resolve(config.storage, 'runs')}\n` +
        (`demo finished in ${((Date.now() - t0) / 1000).toFixed(0)} s (config ` +
          `${basename(file)}, storage ${resolve(config.storage)})\n`),
    );
    return EXIT.ok;
  });
}
