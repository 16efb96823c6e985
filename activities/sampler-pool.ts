// Sampler lifecycle: which OpenAI-compatible server answers a round's sampling requests.
//   embedded      E3's server started inside this worker process for the policy being sampled
//   external      a server someone else runs (sampling.baseURL + sampling.model)
//   managed-vllm  `vllm serve <dir>` spawned by this worker; one port, so a new policy replaces
//                 the one being served
// Local servers live in the sampler worker's process. A run holds one server at a time, from
// ensureSampler to releaseSampler or to its next ensureSampler (a new policy replaces the old);
// a server closes when no run holds it and no activity uses it, so ablation arms sampling
// different policies at once each keep theirs. Activities that sample go through withSampler,
// which starts the server again on a worker that lacks it (a retry on another worker, a
// restarted worker).
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { forgetPid, recordPid, stopRecorded } from '../lib/pidfile.ts';
import { startServer } from '../server/index.ts';
import { badInput, isRequestError } from './errors.ts';
import type { EnsureSamplerInput, ReleaseSamplerInput, SamplerEndpoint, SamplingConfig } from '../contracts/activities.ts';

interface Running {
  key: string;
  endpoint: SamplerEndpoint;
  close(): Promise<void>;
  holds: Set<string>; // runs holding it (ensureSampler .. releaseSampler)
  active: number; // activities sampling from it now
}

const servers = new Map<string, Running>();
const starting = new Map<string, Promise<Running>>();

export function apiKeyOf(sampling: SamplingConfig): string {
  const name = sampling.apiKeyEnv;
  // Local servers accept any key; the openai client insists on one being set.
  return (name ? process.env[name] : undefined) || 'EMPTY';
}

// The name requests use; embedded and managed servers serve every round's policy under it.
export const servedName = (sampling: SamplingConfig) => sampling.model ?? 'opsr-policy';

async function external(sampling: SamplingConfig, modelDir: string): Promise<SamplerEndpoint> {
  const { baseURL, model } = sampling as { baseURL: string; model: string }; // required by the schema for external
  await checkModels(baseURL, model, apiKeyOf(sampling));
  return { lifecycle: 'external', baseURL, model, modelDir };
}

async function acquire(sampling: SamplingConfig, modelDir: string): Promise<Running> {
  const key = JSON.stringify([sampling.lifecycle, modelDir, servedName(sampling), sampling.vllm, sampling.embedded]);
  const have = servers.get(key) ?? (await starting.get(key));
  if (have) return have;
  const start = async (): Promise<Running> => {
    if (sampling.lifecycle === 'managed-vllm') {
      for (const r of [...servers.values()]) if (r.endpoint.lifecycle === 'managed-vllm') await closeServer(r);
      return startVllm(sampling, modelDir, key);
    }
    const server = await startServer({
      modelDir, servedModelName: servedName(sampling), threads: sampling.embedded.threads, maxBatch: sampling.embedded.maxBatch,
      dtype: sampling.embedded.dtype,
    });
    const endpoint: SamplerEndpoint = { lifecycle: 'embedded', baseURL: server.url, model: servedName(sampling), modelDir };
    return { key, endpoint, close: () => server.close(), holds: new Set(), active: 0 };
  };
  const pending = start();
  starting.set(key, pending);
  try {
    const r = await pending;
    servers.set(key, r);
    return r;
  } finally {
    starting.delete(key);
  }
}

async function closeServer(r: Running): Promise<void> {
  if (servers.get(r.key) !== r) return;
  servers.delete(r.key);
  await r.close();
}

async function closeIfUnused(r: Running): Promise<void> {
  if (r.holds.size === 0 && r.active <= 0) await closeServer(r);
}

// Runs fn against a server for (sampling, modelDir), starting one here if this process has none.
export async function withSampler<T>(sampling: SamplingConfig, modelDir: string, fn: (e: SamplerEndpoint) => Promise<T>): Promise<T> {
  if (sampling.lifecycle === 'external') return fn(await external(sampling, modelDir));
  const r = await acquire(sampling, modelDir);
  r.active++;
  try {
    return await fn(r.endpoint);
  } finally {
    r.active--;
    await closeIfUnused(r);
  }
}

export async function ensureSampler(input: EnsureSamplerInput): Promise<SamplerEndpoint> {
  if (input.sampling.lifecycle === 'external') return external(input.sampling, input.modelDir);
  const r = await acquire(input.sampling, input.modelDir);
  r.holds.add(input.runId);
  for (const other of [...servers.values()]) {
    if (other === r || !other.holds.delete(input.runId)) continue;
    await closeIfUnused(other); // this run moved on to another policy
  }
  return r.endpoint;
}

export async function releaseSampler(input: ReleaseSamplerInput): Promise<void> {
  for (const r of [...servers.values()]) {
    if (r.endpoint.baseURL !== input.endpoint.baseURL) continue;
    r.holds.delete(input.runId);
    await closeIfUnused(r);
  }
}

// Stops every server this process started (worker shutdown, tests).
export async function releaseLocal(): Promise<void> {
  await Promise.all([...servers.values()].map(closeServer));
}

async function checkModels(baseURL: string, model: string, apiKey: string): Promise<void> {
  let res: Response;
  try {
    res = await fetch(`${baseURL.replace(/\/$/, '')}/models`, { headers: { authorization: `Bearer ${apiKey}` } });
  } catch (err) {
    throw new Error(`sampling.baseURL ${baseURL}: GET /models failed: ${(err as Error).message}`);
  }
  if (!res.ok) {
    const message = `sampling.baseURL ${baseURL}: GET /models answered HTTP ${res.status}`;
    throw isRequestError(res.status) ? badInput(message) : new Error(message);
  }
  const body = (await res.json()) as { data?: { id?: string }[] };
  const ids = (body.data ?? []).map((m) => m.id);
  if (!ids.includes(model)) throw badInput(`sampling.model "${model}" is not served at ${baseURL} (served: ${ids.join(', ') || 'none'})`);
}

async function startVllm(sampling: SamplingConfig, modelDir: string, key: string): Promise<Running> {
  const v = sampling.vllm;
  const args = [
    'serve', modelDir, '--served-model-name', servedName(sampling), '--host', v.host, '--port', String(v.port),
    '--generation-config', 'vllm', ...v.args,
  ];
  const origin = `http://${v.host === '0.0.0.0' ? '127.0.0.1' : v.host}:${v.port}`;
  // A server a dead worker left on this port would serve stale weights: stop it, and never
  // mistake another process's server for the one started here.
  const pidFile = join(tmpdir(), `opsr-vllm-${v.port}.pid`);
  await stopRecorded(pidFile, ['serve', String(v.port)], 30_000);
  if (await fetch(`${origin}/health`).then(() => true, () => false)) {
    throw new Error(`sampling.vllm.port ${v.port} is already served by another process; stop it or choose another port`);
  }
  const child = execa(v.executable, args, { stdin: 'ignore', stdout: 'ignore', stderr: 'pipe', reject: false, forceKillAfterDelay: 10_000 });
  let stderrTail = '';
  child.stderr?.on('data', (d: Buffer) => (stderrTail = (stderrTail + d.toString()).slice(-4000)));
  let exited = false;
  const finished = child.then(() => { exited = true; });
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
      throw new Error(`sampling.vllm.executable ${v.executable} exited (code ${child.exitCode}) before serving: ${stderrTail.trim().split('\n').slice(-5).join(' | ')}`);
    }
    try {
      if ((await fetch(`${origin}/health`)).ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`sampling.vllm: ${v.executable} did not answer GET /health on port ${v.port} within ${v.startupTimeoutS}s`);
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  return { key, endpoint: { lifecycle: 'managed-vllm', baseURL: `${origin}/v1`, model: servedName(sampling), modelDir }, close: stop, holds: new Set(), active: 0 };
}
