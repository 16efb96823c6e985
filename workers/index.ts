// Worker wiring: one process serves all three task queues, or a subset (a GPU machine runs only
// the trainer queue). Workflows run on the control queue; each queue's worker registers the
// activities that belong to it (contracts/activities.ts ACTIVITY_QUEUES).
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  bundleWorkflowCode,
  DefaultLogger,
  NativeConnection,
  Runtime,
  Worker,
  type LogLevel,
  type WorkflowBundleWithSourceMap,
} from '@temporalio/worker';
import { ACTIVITY_QUEUES, type OpsrActivities } from '../contracts/activities.ts';
import { TASK_QUEUES } from '../contracts/workflows.ts';
import type { SamplerPool } from '../activities/index.ts';

export type QueueName = keyof typeof TASK_QUEUES;
export const QUEUE_NAMES = Object.keys(TASK_QUEUES) as QueueName[];

const WORKFLOWS_PATH = path.join(
  path.dirname(fileURLToPath(import.meta.url)),
  '..',
  'workflows',
  'index.ts',
);

let bundle: Promise<WorkflowBundleWithSourceMap> | null = null;
/** The workflow bundle, built once per process (webpack takes a few seconds). */
export function workflowBundle(): Promise<WorkflowBundleWithSourceMap> {
  bundle ??= bundleWorkflowCode({ workflowsPath: WORKFLOWS_PATH, logger: quietLogger });
  return bundle;
}
const quietLogger = {
  log() {},
  trace() {},
  debug() {},
  info() {},
  warn: (m: string) => console.warn(m),
  error: (m: string) => console.error(m),
};

/**
 * The SDK's process-wide logging at `level` (call once, before any worker or connection). The
 * sampler and trainer workers carry no workflows by design; the SDK's warning about that is
 * dropped.
 */
export function installWorkerLogging(level: LogLevel = 'WARN'): void {
  const sink = new DefaultLogger(level);
  Runtime.install({
    logger: new DefaultLogger(level, (entry) => {
      if (!entry.message.startsWith('No workflows registered'))
        sink.log(entry.level, entry.message, entry.meta);
    }),
  });
}

interface RunWorkerOptions {
  address?: string; // default 127.0.0.1:7233
  namespace?: string; // default "default"
  tls?: boolean;
  apiKeyEnv?: string; // name of the env var holding the Temporal Cloud API key
  taskQueues?: QueueName[]; // default all three
  activities?: Partial<OpsrActivities>; // default createActivities' (activities/index.ts)
  connection?: NativeConnection; // reuse one (tests); otherwise one is opened and closed here
  // defaults control 8, sampler 2, trainer 1
  maxConcurrentActivities?: Partial<Record<QueueName, number>>;
  identity?: string;
}

export interface OpsrWorkers {
  workers: Worker[];
  /**
   * Runs until shutdown() or a shutdown signal (SIGINT/SIGTERM: Temporal's Runtime drains the
   * workers).
   */
  run(): Promise<void>;
  shutdown(): void;
}

export async function createWorkers(opts: RunWorkerOptions = {}): Promise<OpsrWorkers> {
  const queues = opts.taskQueues ?? QUEUE_NAMES;
  for (const q of queues) {
    if (!QUEUE_NAMES.includes(q))
      throw new Error(`task queue "${q}": allowed ${QUEUE_NAMES.join(', ')}`);
  }
  let apiKey: string | undefined;
  if (opts.apiKeyEnv) {
    apiKey = process.env[opts.apiKeyEnv];
    if (!apiKey)
      throw new Error(`temporal.apiKeyEnv: environment variable ${opts.apiKeyEnv} is not set`);
  }
  const ownConnection = !opts.connection;
  const connection =
    opts.connection ??
    (await NativeConnection.connect({
      address: opts.address ?? '127.0.0.1:7233',
      tls: opts.tls || !!apiKey,
      apiKey,
    }));
  // Embedded and managed-vLLM servers live in this process: stopped when the workers stop.
  let samplers: SamplerPool | null = null;
  let activities = opts.activities;
  if (!activities) {
    const real = await import('../activities/index.ts');
    samplers = new real.SamplerPool();
    activities = real.createActivities({ samplers });
  }
  const concurrency = { control: 8, sampler: 2, trainer: 1, ...opts.maxConcurrentActivities };

  const workers: Worker[] = [];
  try {
    for (const queue of queues) {
      const mine = Object.fromEntries(
        Object.entries(activities).filter(
          ([name]) => ACTIVITY_QUEUES[name as keyof OpsrActivities] === queue,
        ),
      );
      workers.push(
        await Worker.create({
          connection,
          namespace: opts.namespace ?? 'default',
          taskQueue: TASK_QUEUES[queue],
          activities: mine,
          ...(queue === 'control' ? { workflowBundle: await workflowBundle() } : {}),
          maxConcurrentActivityTaskExecutions: concurrency[queue],
          ...(opts.identity ? { identity: opts.identity } : {}),
        }),
      );
    }
  } catch (err) {
    // A created worker holds the runtime open until it has run and shut down.
    await Promise.all(workers.map((w) => w.runUntil(Promise.resolve())));
    if (ownConnection) await connection.close();
    throw err;
  }
  return {
    workers,
    async run() {
      try {
        await Promise.all(workers.map((w) => w.run()));
      } finally {
        await samplers?.close();
        if (ownConnection) await connection.close();
      }
    },
    shutdown() {
      for (const w of workers) if (w.getState() === 'RUNNING') w.shutdown();
    },
  };
}

/** Creates the workers and runs them until shutdown (SIGINT/SIGTERM). */
export async function runWorker(opts: RunWorkerOptions = {}): Promise<void> {
  const w = await createWorkers(opts);
  await w.run();
}
