// The embedded OpenAI-compatible server (vLLM's API shapes) on node:http, generating with one
// long-lived `opsr-engine serve` child that it restarts when it dies. Endpoints in
// server/README.md.
// This file wires it: the engine supervisor, one serving class per endpoint family (they hold
// the logic), the routing table, listening and shutdown.
import { createServer, type ServerResponse } from 'node:http';
import { basename, resolve } from 'node:path';
import { loadTokenizer } from '../lib/tokenizer.ts';
import { EngineSupervisor, type EngineDtype } from './engine-supervisor.ts';
import { dispatch, sendJson, withJsonBody, type Routes } from './http.ts';
import { ApiError } from './protocol.ts';
import {
  maxPromptChars,
  readGenerationDefaults,
  SequenceQueue,
  type ServingContext,
} from './serving.ts';
import { ChatServing } from './serving-chat.ts';
import { CompletionServing } from './serving-completion.ts';
import { TokenizeServing } from './serving-tokenize.ts';

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
  /** Sequences (prompts x n) one request may ask for (default 256): more is a 400. */
  maxSequencesPerRequest?: number;
  /** Sequences all open requests may hold at once (default 4096): more is a 429. */
  maxQueuedSequences?: number;
  /** Start-up fails when the engine is not ready by then (default 120 s). */
  readyTimeoutMs?: number;
}

export interface RunningServer {
  url: string;
  port: number;
  close(): Promise<void>;
  /** The engine child's pid (undefined while it restarts). */
  enginePid(): number | undefined;
}

export async function startServer(opts: ServerOptions): Promise<RunningServer> {
  const modelDir = resolve(opts.modelDir);
  const name = opts.servedModelName ?? basename(modelDir);
  const log = opts.log ?? ((l: string) => process.stderr.write(l + '\n'));
  const tok = await loadTokenizer(modelDir);
  const defaults = await readGenerationDefaults(modelDir);
  const engine = new EngineSupervisor(
    {
      modelDir,
      enginePath: opts.enginePath,
      threads: opts.threads,
      maxBatch: opts.maxBatch,
      dtype: opts.dtype,
      readyTimeoutMs: opts.readyTimeoutMs,
    },
    log,
  );
  const info = await engine.start();
  const host = opts.host ?? '127.0.0.1';
  if (!/^(127\.\d+\.\d+\.\d+|::1|localhost)$/.test(host)) {
    log(
      `opsr serve: warning: listening on ${host} makes the server reachable from other ` +
        'machines, without authentication',
    );
  }
  const ctx: ServingContext = {
    name,
    tok,
    info,
    engine,
    defaults,
    queue: new SequenceQueue(opts.maxSequencesPerRequest ?? 256, opts.maxQueuedSequences ?? 4096),
    maxPromptChars: maxPromptChars(tok, info),
    log,
  };
  const completion = new CompletionServing(ctx);
  const chat = new ChatServing(ctx);
  const tokenization = new TokenizeServing(ctx);
  const created = Math.floor(Date.now() / 1000);
  const models = {
    object: 'list',
    data: [
      {
        id: name,
        object: 'model',
        created,
        owned_by: 'opsr',
        root: name,
        parent: null,
        max_model_len: info.nCtx,
      },
    ],
  };

  const routes: Routes = {
    '/health': {
      GET: (_req, res) => {
        if (!engine.up) throw new ApiError(503, 'the engine is down; it is being restarted');
        res.writeHead(200).end();
      },
    },
    '/v1/models': { GET: (_req, res) => sendJson(res, 200, models) },
    '/v1/completions': {
      POST: withJsonBody((b, res, signal) => completion.create(b, res, signal)),
    },
    '/v1/chat/completions': { POST: withJsonBody((b, res, signal) => chat.create(b, res, signal)) },
    '/tokenize': { POST: withJsonBody((b, res) => tokenization.tokenize(b, res)) },
    '/detokenize': { POST: withJsonBody((b, res) => tokenization.detokenize(b, res)) },
  };
  const openResponses = new Set<ServerResponse>();
  const server = createServer(dispatch(routes, openResponses, log));

  // Node closes a keep-alive connection after 5 s idle by default, racing a client that reuses it
  // at that moment (ECONNRESET); a busy machine left pooled connections idle that long and failed
  // whole evaluations. Clients close first now (undici keeps idle connections 4 s).
  server.keepAliveTimeout = 65_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, host, () => resolve());
  }).catch(async (err) => {
    await engine.close();
    throw err;
  });
  const port = (server.address() as { port: number }).port;
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
