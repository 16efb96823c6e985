// opsr dev: a Temporal dev server (Web UI, SQLite file under the storage root, opsr's search
// attributes) plus a worker on all task queues, until Ctrl-C stops both.
import { mkdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { startDevServer } from '../lib/temporal.ts';
import { SEARCH_ATTRIBUTES, TASK_QUEUES } from '../contracts/workflows.ts';
import { EXIT, UsageError, guard, parseFlags } from './common.ts';
import { loadRunConfig } from '../activities/load-config.ts';

const USAGE = `Usage: opsr dev [--storage DIR] [--config FILE] [--port 7233] [--ui-port 8233] \
[--ip 127.0.0.1]
                [--namespace default] [--queues control,sampler,trainer] [--no-worker]

Starts \`temporal server start-dev\` with its SQLite file at <storage>/temporal/dev.sqlite (runs
survive a restart) and the Web UI, then a worker for the task queues \
(${Object.values(TASK_QUEUES).join(', ')}).
The storage root is --storage, else the config's storage, else ./.opsr. Ctrl-C stops the worker
(running activities drain) and then the server.`;

const port = (name: string, v: string) => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1 || n > 65535)
    throw new UsageError(`--${name} "${v}" is not a port; allowed 1-65535`);
  return n;
};

export async function main(argv: string[]): Promise<number> {
  return guard(async () => {
    const { values } = parseFlags(
      argv,
      {
        storage: { type: 'string' },
        config: { type: 'string' },
        port: { type: 'string', default: '7233' },
        'ui-port': { type: 'string', default: '8233' },
        ip: { type: 'string', default: '127.0.0.1' },
        namespace: { type: 'string' },
        queues: { type: 'string' },
        'no-worker': { type: 'boolean' },
      },
      USAGE,
    );
    const ports = { port: port('port', values.port), ui: port('ui-port', values['ui-port']) };
    const config = values.config ? await loadRunConfig(values.config) : undefined;
    const storage = resolve(values.storage ?? config?.storage ?? '.opsr');
    const namespace = values.namespace ?? config?.temporal.namespace ?? 'default';
    const { QUEUE_NAMES, createWorkers, installWorkerLogging } =
      await import('../workers/index.ts');
    installWorkerLogging('INFO');
    const queues = (values.queues ?? QUEUE_NAMES.join(','))
      .split(',')
      .map((q) => q.trim())
      .filter(Boolean);
    const bad = queues.filter((q) => !(QUEUE_NAMES as string[]).includes(q));
    if (bad.length)
      throw new UsageError(
        `--queues: "${bad.join(',')}" unknown; allowed ${QUEUE_NAMES.join(', ')}`,
      );

    const dir = join(storage, 'temporal');
    await mkdir(dir, { recursive: true });
    // Ctrl-C at any point: during start-up it ends the start-up, later it drains the worker
    // (Temporal's runtime does the same on its own); the server is stopped last either way.
    let signalled = false;
    let workers: Awaited<ReturnType<typeof createWorkers>> | null = null;
    let wake = () => {};
    const onSignal = () => {
      signalled = true;
      workers?.shutdown();
      wake();
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    let server: Awaited<ReturnType<typeof startDevServer>> | null = null;
    try {
      server = await startDevServer({
        dbFile: join(dir, 'dev.sqlite'),
        logFile: join(dir, 'server.log'),
        ip: values.ip,
        port: ports.port,
        uiPort: ports.ui,
        namespace,
        searchAttributes: Object.values(SEARCH_ATTRIBUTES),
      });
      process.stdout.write(
        `Temporal dev server: ${server.address} (namespace ${namespace}, data ` +
          `${join(dir, 'dev.sqlite')}, log ${join(dir, 'server.log')})\n` +
          `Temporal Web UI: ${server.uiUrl}\n`,
      );
      if (values['no-worker']) {
        process.stdout.write('no worker started (--no-worker); Ctrl-C stops the server\n');
        if (!signalled)
          await new Promise<void>((res) => {
            wake = res;
          });
        return EXIT.ok;
      }
      if (signalled) return EXIT.ok;
      workers = await createWorkers({
        address: server.address,
        namespace,
        taskQueues: queues as (typeof QUEUE_NAMES)[number][],
      });
      if (signalled) workers.shutdown();
      else
        process.stdout.write(
          `worker polling ` +
            `${queues.map((q) => TASK_QUEUES[q as keyof typeof TASK_QUEUES]).join(', ')}; ` +
            `start a run with: opsr run --config FILE (Ctrl-C stops)\n`,
        );
      await workers.run();
      return EXIT.ok;
    } finally {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      if (server) {
        await server.stop();
        process.stdout.write('stopped the worker and the dev server\n');
      }
    }
  });
}
