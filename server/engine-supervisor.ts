// One long-lived `opsr-engine serve` child process and its JSON-lines protocol
// (engine/README.md, "serve"): requests go in on stdin, token and done events come back on stdout.
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createInterface } from 'node:readline';
import { existsSync } from 'node:fs';
import { DEFAULT_ENGINE_PATH, engineEnv } from '../lib/engine.ts';
import { ApiError } from './protocol.ts';

export { DEFAULT_ENGINE_PATH, engineEnv };

export interface EngineRequest {
  prompt: number[];
  maxTokens: number;
  temperature: number;
  topP: number;
  topK: number;
  seed: number;
  stopTokenIds: number[];
  logprobs: boolean;
  topLogprobs: number;
}

export interface EngineToken {
  token: number;
  logprob?: number;
  topLogprobs?: [number, number][];
}

export interface EngineDone {
  finishReason: 'stop' | 'length' | 'cancelled';
  stopToken: number | null;
  promptTokens: number;
  completionTokens: number;
}

interface EngineHandlers {
  onToken(t: EngineToken): void;
  onDone(d: EngineDone): void;
  /** The engine rejected the request (message from the engine) or the engine process ended. */
  onError(err: EngineError): void;
}

export class EngineError extends Error {
  constructor(
    message: string,
    readonly kind: 'bad_request' | 'engine_down',
  ) {
    super(message);
  }
}

export type EngineDtype = 'fp32' | 'bf16';

export interface EngineInfo {
  nCtx: number;
  vocabSize: number;
  maxBatch: number;
  dtype: EngineDtype;
}

interface EngineOptions {
  modelDir: string;
  enginePath?: string;
  threads?: number;
  maxBatch?: number;
  /** Matrix products in fp32 (default: exact) or bf16 on AMX (faster; see engine/README.md). */
  dtype?: EngineDtype;
  /** An engine that has not reported ready by then is killed and start() fails (default 120 s). */
  readyTimeoutMs?: number;
}

export class EngineProcess {
  private child: ChildProcessWithoutNullStreams | null = null;
  private inflight = new Map<number, EngineHandlers>();
  private nextId = 1;
  private stderrTail: string[] = [];
  private exited: Promise<void> = Promise.resolve();
  info: EngineInfo | null = null;
  /** Called once when the process ends without stop() having been called. */
  onExit: ((reason: string) => void) | null = null;

  constructor(private readonly opts: EngineOptions) {}

  get running(): boolean {
    return this.child !== null && this.info !== null;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** Spawns the engine and resolves with its ready line (n_ctx, vocab_size, max_batch). */
  start(): Promise<EngineInfo> {
    const enginePath = this.opts.enginePath ?? DEFAULT_ENGINE_PATH;
    if (!existsSync(enginePath)) {
      return Promise.reject(
        new Error(`engine binary not found at ${enginePath}; build it with: make -C engine`),
      );
    }
    const args = ['serve', '--model', this.opts.modelDir];
    if (this.opts.threads) args.push('--threads', String(this.opts.threads));
    if (this.opts.maxBatch) args.push('--max-batch', String(this.opts.maxBatch));
    if (this.opts.dtype) args.push('--dtype', this.opts.dtype);
    const child = spawn(enginePath, args, { stdio: ['pipe', 'pipe', 'pipe'], env: engineEnv() });
    this.child = child;
    this.info = null;
    this.stderrTail = [];
    createInterface({ input: child.stderr }).on('line', (line) => {
      this.stderrTail.push(line);
      if (this.stderrTail.length > 20) this.stderrTail.shift();
    });
    child.stdin.on('error', () => {}); // a dead engine is reported through 'exit'
    return new Promise((resolve, reject) => {
      let settled = false;
      const readyMs = this.opts.readyTimeoutMs ?? 120_000;
      const timer = setTimeout(() => {
        if (settled) return;
        settled = true;
        child.kill('SIGKILL');
        reject(
          new Error(
            `the engine did not become ready within ${readyMs / 1000} s (loading ` +
              `${this.opts.modelDir})${this.lastError()}`,
          ),
        );
      }, readyMs);
      this.exited = new Promise((done) => {
        child.on('exit', (code, signal) => {
          const reason = `engine exited (${signal ?? `code ${code}`})${this.lastError()}`;
          const wasReady = this.info !== null;
          this.child = null;
          this.info = null;
          this.failAll(reason);
          clearTimeout(timer);
          if (!settled) {
            settled = true;
            reject(new Error(reason));
          } else if (wasReady && this.onExit) this.onExit(reason);
          done();
        });
      });
      child.on('error', (err) => {
        if (!settled) {
          settled = true;
          reject(new Error(`cannot start ${enginePath}: ${err.message}`));
        }
      });
      createInterface({ input: child.stdout }).on('line', (line) => {
        let ev: Record<string, unknown>;
        try {
          ev = JSON.parse(line);
        } catch {
          this.stderrTail.push(`unparseable engine output: ${line.slice(0, 200)}`);
          return;
        }
        if (ev.event === 'ready') {
          this.info = {
            nCtx: ev.n_ctx as number,
            vocabSize: ev.vocab_size as number,
            maxBatch: ev.max_batch as number,
            dtype: ev.dtype as EngineDtype,
          };
          clearTimeout(timer);
          if (!settled) {
            settled = true;
            resolve(this.info);
          }
          return;
        }
        this.dispatch(ev);
      });
    });
  }

  private lastError(): string {
    const last = this.stderrTail[this.stderrTail.length - 1];
    if (!last) return '';
    try {
      const e = JSON.parse(last).error;
      if (e && typeof e.message === 'string') return `: ${e.message}`;
    } catch {
      // not the JSON error line: report the raw text
    }
    return `: ${last}`;
  }

  private dispatch(ev: Record<string, unknown>): void {
    const id = ev.id as number;
    const h = this.inflight.get(id);
    if (!h) return; // a late event for a request already given up
    if (ev.event === 'token') {
      h.onToken({
        token: ev.token as number,
        logprob: ev.logprob as number | undefined,
        topLogprobs: ev.top_logprobs as [number, number][] | undefined,
      });
    } else if (ev.event === 'done') {
      this.inflight.delete(id);
      h.onDone({
        finishReason: ev.finish_reason as EngineDone['finishReason'],
        stopToken: (ev.stop_token as number | null) ?? null,
        promptTokens: ev.prompt_tokens as number,
        completionTokens: ev.completion_tokens as number,
      });
    } else if (ev.event === 'error') {
      this.inflight.delete(id);
      h.onError(new EngineError(String(ev.message), 'bad_request'));
    }
  }

  private failAll(reason: string): void {
    const handlers = [...this.inflight.values()];
    this.inflight.clear();
    for (const h of handlers) h.onError(new EngineError(reason, 'engine_down'));
  }

  /** Queues a request in the engine; returns its id (for cancel). */
  generate(req: EngineRequest, handlers: EngineHandlers): number {
    const id = this.nextId++;
    if (!this.child || !this.info) {
      queueMicrotask(() =>
        handlers.onError(new EngineError('engine is not running', 'engine_down')),
      );
      return id;
    }
    this.inflight.set(id, handlers);
    this.child.stdin.write(
      JSON.stringify({
        op: 'generate',
        id,
        prompt: req.prompt,
        max_tokens: req.maxTokens,
        temperature: req.temperature,
        top_p: req.topP,
        top_k: req.topK,
        seed: req.seed,
        stop_token_ids: req.stopTokenIds,
        logprobs: req.logprobs,
        top_logprobs: req.topLogprobs,
      }) + '\n',
    );
    return id;
  }

  /**
   * Ends a request early; its onDone comes with finishReason 'cancelled' (or the real end if it
   * raced).
   */
  cancel(id: number): void {
    if (this.child && this.inflight.has(id))
      this.child.stdin.write(JSON.stringify({ op: 'cancel', id }) + '\n');
  }

  /** Stops the process (in-flight requests fail) and waits for it to exit. */
  async stop(): Promise<void> {
    const child = this.child;
    if (!child) return;
    this.onExit = null;
    child.kill('SIGTERM');
    await this.exited;
  }
}

const RESTART_DELAYS_MS = [100, 500, 1000, 2000, 5000];
// After this many failed restarts in a row, waiting requests fail (503) instead of hanging;
// restarts go on for the requests that come later.
const FAIL_WAITERS_AFTER = 3;

/** Keeps the engine process up for the server: requests wait while it restarts. */
export class EngineSupervisor {
  private engine: EngineProcess;
  private upWaiters: { resolve: () => void; reject: (e: Error) => void }[] = [];
  private closing = false;
  private restarts = 0;
  lastFailure = '';

  constructor(
    opts: EngineOptions,
    private readonly log: (l: string) => void,
  ) {
    this.engine = new EngineProcess(opts);
  }

  get up(): boolean {
    return this.engine.running;
  }
  get pid(): number | undefined {
    return this.engine.pid;
  }

  async start(): Promise<EngineInfo> {
    const info = await this.engine.start();
    this.engine.onExit = (reason) => void this.restart(reason);
    return info;
  }

  private async restart(reason: string): Promise<void> {
    this.lastFailure = reason;
    this.log(`opsr serve: ${reason}; restarting the engine`);
    while (!this.closing) {
      const delay = RESTART_DELAYS_MS[Math.min(this.restarts++, RESTART_DELAYS_MS.length - 1)];
      await new Promise((r) => setTimeout(r, delay));
      if (this.closing) return;
      try {
        await this.engine.start();
        this.engine.onExit = (why) => void this.restart(why);
        this.restarts = 0;
        this.log('opsr serve: engine restarted');
        for (const w of this.upWaiters.splice(0)) w.resolve();
        return;
      } catch (err) {
        this.lastFailure = (err as Error).message;
        this.log(`opsr serve: engine restart failed: ${this.lastFailure}`);
        if (this.restarts >= FAIL_WAITERS_AFTER) {
          // The reason goes to the log; responses carry no engine internals or paths.
          const e = new ApiError(
            503,
            `the engine is down and ${this.restarts} restarts failed; see the server log`,
          );
          for (const w of this.upWaiters.splice(0)) w.reject(e);
        }
      }
    }
  }

  async submit(req: EngineRequest, h: EngineHandlers): Promise<number> {
    if (!this.engine.running) {
      if (this.closing) throw new ApiError(503, 'the server is shutting down');
      await new Promise<void>((resolve, reject) => this.upWaiters.push({ resolve, reject }));
    }
    return this.engine.generate(req, h);
  }

  cancel(id: number): void {
    this.engine.cancel(id);
  }

  async close(): Promise<void> {
    this.closing = true;
    for (const w of this.upWaiters.splice(0))
      w.reject(new ApiError(503, 'the server is shutting down'));
    await this.engine.stop();
  }
}
