// Sampler lifecycle: which OpenAI-compatible server answers a round's sampling requests.
//   embedded      E3's server started inside this worker process, replaced when the policy changes
//   external      a server someone else runs (sampling.baseURL + sampling.model)
//   managed-vllm  `vllm serve <dir>` spawned by this worker, replaced when the policy changes
// Embedded and managed servers live in the sampler worker's process; activities that use an
// endpoint call ensureLocal first so a restarted worker brings its server back.
import { execa } from 'execa';
import { startServer } from '../server/index.ts';
import type { EnsureSamplerInput, ReleaseSamplerInput, SamplerEndpoint, SamplingConfig } from './api.ts';

interface Running {
  key: string;
  endpoint: SamplerEndpoint;
  close(): Promise<void>;
}

let running: Running | null = null;

export function apiKeyOf(sampling: SamplingConfig): string {
  const name = sampling.apiKeyEnv;
  // Local servers accept any key; the openai client insists on one being set.
  return (name ? process.env[name] : undefined) || 'EMPTY';
}

// The name requests use; embedded and managed servers serve every round's policy under it.
export const servedName = (sampling: SamplingConfig) => sampling.model ?? 'opsr-policy';

export async function ensureLocal(sampling: SamplingConfig, modelDir: string): Promise<SamplerEndpoint> {
  const key = JSON.stringify([sampling.lifecycle, modelDir, sampling.model, sampling.baseURL, sampling.vllm, sampling.embedded]);
  if (running?.key === key) return running.endpoint;
  await releaseLocal();
  if (sampling.lifecycle === 'external') {
    const { baseURL, model } = sampling as { baseURL: string; model: string }; // required by the schema for external
    await checkModels(baseURL, model, apiKeyOf(sampling));
    return { lifecycle: 'external', baseURL, model, modelDir };
  }
  if (sampling.lifecycle === 'embedded') {
    const server = await startServer({
      modelDir,
      servedModelName: servedName(sampling),
      threads: sampling.embedded.threads,
      maxBatch: sampling.embedded.maxBatch,
    });
    running = { key, endpoint: { lifecycle: 'embedded', baseURL: server.url, model: servedName(sampling), modelDir }, close: () => server.close() };
    return running.endpoint;
  }
  running = await startVllm(sampling, modelDir, key);
  return running.endpoint;
}

export async function releaseLocal(): Promise<void> {
  const r = running;
  running = null;
  if (r) await r.close();
}

export async function ensureSampler(input: EnsureSamplerInput): Promise<SamplerEndpoint> {
  return ensureLocal(input.sampling, input.modelDir);
}

export async function releaseSampler(input: ReleaseSamplerInput): Promise<void> {
  if (running && running.endpoint.baseURL === input.endpoint.baseURL) await releaseLocal();
}

async function checkModels(baseURL: string, model: string, apiKey: string): Promise<void> {
  let res: Response;
  try {
    res = await fetch(`${baseURL.replace(/\/$/, '')}/models`, { headers: { authorization: `Bearer ${apiKey}` } });
  } catch (err) {
    throw new Error(`sampling.baseURL ${baseURL}: GET /models failed: ${(err as Error).message}`);
  }
  if (!res.ok) throw new Error(`sampling.baseURL ${baseURL}: GET /models answered HTTP ${res.status}`);
  const body = (await res.json()) as { data?: { id?: string }[] };
  const ids = (body.data ?? []).map((m) => m.id);
  if (!ids.includes(model)) throw new Error(`sampling.model "${model}" is not served at ${baseURL} (served: ${ids.join(', ') || 'none'})`);
}

async function startVllm(sampling: SamplingConfig, modelDir: string, key: string): Promise<Running> {
  const v = sampling.vllm;
  const args = [
    'serve', modelDir, '--served-model-name', servedName(sampling), '--host', v.host, '--port', String(v.port),
    '--generation-config', 'vllm', ...v.args,
  ];
  const child = execa(v.executable, args, { stdin: 'ignore', stdout: 'ignore', stderr: 'pipe', reject: false, forceKillAfterDelay: 10_000 });
  let stderrTail = '';
  child.stderr?.on('data', (d: Buffer) => (stderrTail = (stderrTail + d.toString()).slice(-4000)));
  let exited = false;
  const finished = child.then(() => { exited = true; });
  const stop = async () => {
    if (!exited) child.kill('SIGTERM');
    await finished;
  };
  const origin = `http://${v.host === '0.0.0.0' ? '127.0.0.1' : v.host}:${v.port}`;
  const deadline = Date.now() + v.startupTimeoutS * 1000;
  for (;;) {
    if (exited) {
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
  return { key, endpoint: { lifecycle: 'managed-vllm', baseURL: `${origin}/v1`, model: servedName(sampling), modelDir }, close: stop };
}
