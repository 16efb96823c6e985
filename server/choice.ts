// One sampled answer ("choice"): feeds a request to the engine, detokenizes as tokens arrive,
// ends it at a stop string (cancelling it in the engine) and retries it from scratch when the
// engine dies before anything was streamed.
import type { LoadedTokenizer } from '../lib/tokenizer.ts';
import { EngineError, type EngineDone, type EngineRequest } from './engine-supervisor.ts';
import { ApiError, type Sampling } from './protocol.ts';

export interface TokenLogprob {
  token: number;
  logprob: number;
  top: [number, number][];
}

export interface ChoiceResult {
  text: string;
  finishReason: 'stop' | 'length';
  /** The stop string or stop token id that ended the answer (null for EOS or length). */
  stopReason: string | number | null;
  tokens: number[];
  logprobs: TokenLogprob[] | null;
  completionTokens: number;
}

/** The engine as the choice sees it: EngineSupervisor (waits for restarts). */
export interface EngineSink {
  submit(
    req: EngineRequest,
    h: {
      onToken: (t: { token: number; logprob?: number; topLogprobs?: [number, number][] }) => void;
      onDone: (d: EngineDone) => void;
      onError: (e: EngineError) => void;
    },
  ): Promise<number>;
  cancel(id: number): void;
}

// Streaming text that could still grow into a stop string is held back until it cannot.
class Detokenizer {
  private ids: number[] = [];
  private prefix = 0;
  private read = 0;
  text = '';
  constructor(
    private readonly tok: LoadedTokenizer,
    private readonly skipSpecial: boolean,
  ) {}
  // vLLM's incremental scheme: decode a short window and keep only a complete extension, so a
  // multi-byte character split over tokens is emitted once whole.
  push(id: number): void {
    this.ids.push(id);
    const opts = { skipSpecialTokens: this.skipSpecial };
    const prev = this.tok.decode(this.ids.slice(this.prefix, this.read), opts);
    const cur = this.tok.decode(this.ids.slice(this.prefix), opts);
    if (cur.length > prev.length && !cur.endsWith('\uFFFD')) {
      this.text += cur.slice(prev.length);
      this.prefix = this.read;
      this.read = this.ids.length;
    }
  }
  full(): string {
    return this.tok.decode(this.ids, { skipSpecialTokens: this.skipSpecial });
  }
}

/** Mixes a request seed with the choice index so n > 1 answers differ; choice 0 keeps the seed. */
export function choiceSeed(seed: number, index: number): number {
  if (index === 0) return seed;
  let z = (BigInt(seed) + BigInt(index) * 0x9e3779b97f4a7c15n) & 0xffffffffffffffffn;
  z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & 0xffffffffffffffffn;
  z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & 0xffffffffffffffffn;
  return Number((z ^ (z >> 31n)) >> 11n); // 53 bits: exact in JSON
}

interface ChoiceOptions {
  prompt: number[];
  sampling: Sampling;
  maxTokens: number;
  seed: number;
  eosIds: number[];
  signal: AbortSignal;
  /** Streaming: called with each new piece of final text. */
  onDelta?: (text: string, logprobs: TokenLogprob[]) => void;
}

const MAX_ATTEMPTS = 3;

export function runChoice(
  engine: EngineSink,
  tok: LoadedTokenizer,
  o: ChoiceOptions,
): Promise<ChoiceResult> {
  const s = o.sampling;
  const req: EngineRequest = {
    prompt: o.prompt,
    maxTokens: o.maxTokens,
    temperature: s.temperature,
    topP: s.topP,
    topK: s.topK,
    seed: o.seed,
    stopTokenIds: [...new Set([...s.stopTokenIds, ...(s.ignoreEos ? [] : o.eosIds)])],
    logprobs: s.logprobs !== null,
    topLogprobs: s.logprobs ?? 0,
  };
  const maxStop = Math.max(0, ...s.stop.map((x) => x.length));
  const needText = s.stop.length > 0 || o.onDelta !== undefined;
  return new Promise((resolve, reject) => {
    let attempt = 0;
    let streamed = 0; // characters of text handed to onDelta
    let pendingLp: TokenLogprob[] = [];
    let settled = false;
    const settle = (fn: () => void) => {
      if (!settled) {
        settled = true;
        o.signal.removeEventListener('abort', onAbort);
        fn();
      }
    };
    let engineId: number | null = null;
    let cancelled = false;
    const onAbort = () => {
      if (engineId !== null) engine.cancel(engineId);
      settle(() => reject(new ApiError(499, 'client closed the request')));
    };
    o.signal.addEventListener('abort', onAbort);

    const start = () => {
      attempt++;
      const tokens: number[] = [];
      const lps: TokenLogprob[] | null = s.logprobs !== null ? [] : null;
      const detok = new Detokenizer(tok, s.skipSpecialTokens);
      let stopHit: { index: number; stop: string } | null = null;
      const stopped = (): ChoiceResult => {
        const end = stopHit!.index + (s.includeStopStrInOutput ? stopHit!.stop.length : 0);
        return {
          text: detok.text.slice(0, end),
          finishReason: 'stop',
          stopReason: stopHit!.stop,
          tokens,
          logprobs: lps,
          completionTokens: tokens.length,
        };
      };
      const flush = (text: string) => {
        if (!o.onDelta) return;
        const delta = text.slice(streamed);
        if (delta.length > 0 || pendingLp.length > 0) o.onDelta(delta, pendingLp);
        streamed = text.length;
        pendingLp = [];
      };
      engine
        .submit(req, {
          onToken: (t) => {
            if (stopHit) return; // tokens racing the cancel
            tokens.push(t.token);
            if (lps) {
              const lp = { token: t.token, logprob: t.logprob!, top: t.topLogprobs ?? [] };
              lps.push(lp);
              pendingLp.push(lp);
            }
            if (!needText) return;
            const before = detok.text.length;
            detok.push(t.token);
            for (const stop of s.stop) {
              const k = detok.text.indexOf(stop, Math.max(0, before - stop.length + 1));
              if (k >= 0 && (!stopHit || k < stopHit.index)) stopHit = { index: k, stop };
            }
            if (stopHit) {
              cancelled = true;
              if (engineId !== null) engine.cancel(engineId);
              const r = stopped();
              flush(r.text);
              settle(() => resolve(r));
            } else if (o.onDelta) {
              flush(
                detok.text.slice(
                  0,
                  Math.max(streamed, detok.text.length - Math.max(0, maxStop - 1)),
                ),
              );
            }
          },
          onDone: (d) => {
            if (stopHit || settled) return;
            if (d.finishReason === 'cancelled' && !cancelled) {
              settle(() => reject(new ApiError(503, 'the request was cancelled in the engine')));
              return;
            }
            const text = needText
              ? detok.full()
              : tok.decode(tokens, { skipSpecialTokens: s.skipSpecialTokens });
            flush(text);
            const stopReason =
              d.stopToken !== null && !o.eosIds.includes(d.stopToken) ? d.stopToken : null;
            settle(() =>
              resolve({
                text,
                finishReason: d.finishReason === 'stop' ? 'stop' : 'length',
                stopReason,
                tokens,
                logprobs: lps,
                completionTokens: d.completionTokens,
              }),
            );
          },
          onError: (e) => {
            if (settled) return;
            if (
              e.kind === 'engine_down' &&
              streamed === 0 &&
              attempt < MAX_ATTEMPTS &&
              !o.signal.aborted
            ) {
              start(); // deterministic by seed: a rerun produces the answer the lost run would have
              return;
            }
            // The engine's own reason stays in the server log; the client learns only that it
            // failed.
            settle(() =>
              reject(
                e.kind === 'bad_request'
                  ? new ApiError(400, e.message)
                  : new ApiError(503, 'the engine failed while answering; see the server log'),
              ),
            );
          },
        })
        .then(
          (id) => {
            engineId = id;
            if (settled && !stopHit) engine.cancel(id);
          },
          (err: Error) =>
            settle(() =>
              reject(
                err instanceof ApiError
                  ? err
                  : new ApiError(503, 'the engine is not available; see the server log'),
              ),
            ),
        );
    };
    start();
  });
}
