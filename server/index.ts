// The embedded OpenAI-compatible server (vLLM's API shapes) on node:http, generating with one
// long-lived `opsr-engine serve` child that it restarts when it dies. Endpoints in
// server/README.md; the parts: router.ts (routes), protocol.ts (requests, errors, the wire),
// serving.ts (each endpoint's work), engine-supervisor.ts (the engine process).
import { createServer, type ServerResponse } from 'node:http';
import { readFile } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import { loadTokenizer } from '../lib/tokenizer.ts';
import { EngineSupervisor, type EngineDtype } from './engine-supervisor.ts';
import type { GenerationDefaults } from './protocol.ts';
import { createRouter } from './router.ts';
import { createServing } from './serving.ts';

export interface ServerOptions {
  modelDir: string;
  host?: string;
  port?: number;
  servedModelName?: string;
  threads?: number;
  maxBatch?: number;
  /** 'fp32' (default, exact) or 'bf16' (AMX matrix products; faster, not bit-equal to fp32). */
  dtype?: EngineDtype;
  enginePath?: string;
  /** Logs one line per engine restart (default: stderr). */
  log?: (line: string) => void;
}

export interface RunningServer {
  url: string;
  port: number;
  close(): Promise<void>;
  /** The engine child's pid (undefined while it restarts). */
  enginePid(): number | undefined;
}

async function readGenerationDefaults(modelDir: string): Promise<{ defaults: GenerationDefaults }> {
  let cfg: Record<string, unknown>;
  try {
    cfg = JSON.parse(await readFile(join(modelDir, 'generation_config.json'), 'utf8'));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { defaults: {} };
    throw new Error(`${join(modelDir, 'generation_config.json')}: ${(err as Error).message}`);
  }
  // Only sampling checkpoints carry sampling defaults; greedy ones (do_sample false) do not apply.
  const sampling = cfg.do_sample === true;
  const pick = (k: string) => (sampling && typeof cfg[k] === 'number' ? (cfg[k]) : undefined);
  const defaults = { temperature: pick('temperature'), topP: pick('top_p'), topK: pick('top_k') };
  return { defaults };
}

export async function startServer(opts: ServerOptions): Promise<RunningServer> {
  const modelDir = resolve(opts.modelDir);
  const name = opts.servedModelName ?? basename(modelDir);
  const log = opts.log ?? ((l: string) => process.stderr.write(l + '\n'));
  const tok = await loadTokenizer(modelDir);
  const gen = await readGenerationDefaults(modelDir);
  const engine = new EngineSupervisor({
    modelDir, enginePath: opts.enginePath, threads: opts.threads, maxBatch: opts.maxBatch,
    dtype: opts.dtype,
  }, log);
  const info = await engine.start();
  const serving = createServing({ name, modelDir, tok, defaults: gen.defaults, info, engine });
  const route = createRouter(serving, engine);
  const openResponses = new Set<ServerResponse>();
  const server = createServer((req, res) => {
    openResponses.add(res);
    res.on('close', () => openResponses.delete(res));
    void route(req, res);
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, opts.host ?? '127.0.0.1', () => resolve());
  }).catch(async (err) => {
    await engine.close();
    throw err;
  });
  const port = (server.address() as { port: number }).port;
  const host = opts.host ?? '127.0.0.1';
  const urlHost = host.includes(':') ? `[${host}]` : host === '0.0.0.0' ? '127.0.0.1' : host;
  return {
    url: `http://${urlHost}:${port}/v1`,
    port,
    async close() {
      const closed = new Promise<void>((r) => server.close(() => r()));
      for (const res of openResponses) res.destroy();
      server.closeAllConnections();
      await engine.close();
      await closed;
    },
    enginePid: () => engine.pid,
  };
}
