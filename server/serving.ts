// What the serving classes share (vLLM's OpenAIServing): the served model's name, tokenizer and
// context, the limits every request is held to, and generating n choices per prompt.
import { randomInt } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { LoadedTokenizer } from '../lib/tokenizer.ts';
import type { EngineInfo } from './engine-supervisor.ts';
import {
  runChoice,
  choiceSeed,
  type ChoiceResult,
  type EngineSink,
  type TokenLogprob,
} from './choice.ts';
import {
  ApiError,
  bad,
  preview,
  type GenerationDefaults,
  type Message,
  type Sampling,
} from './protocol.ts';

/** Sequences (prompts x n) one request, and all open requests together, may hold. */
export class SequenceQueue {
  private queued = 0; // sequences of the open requests
  constructor(
    private readonly maxPerRequest: number,
    private readonly maxQueued: number,
  ) {}

  admit(count: number, param: string): void {
    if (count > this.maxPerRequest) {
      throw bad(
        `this request asks for ${count} sequences (prompts x n); ` +
          `the server takes at most ${this.maxPerRequest} per request`,
        param,
        'too_many_sequences',
      );
    }
    if (this.queued + count > this.maxQueued) {
      throw new ApiError(
        429,
        `the server holds ${this.queued} sequences; with this request's ${count} it would ` +
          `exceed its queue of ${this.maxQueued}; retry later`,
        null,
        'queue_full',
        'rate_limit_error',
      );
    }
  }
  hold(count: number): void {
    this.queued += count;
  }
  release(count: number): void {
    this.queued -= count;
  }
}

export interface ServingContext {
  /** The served model name requests must name (or leave out). */
  name: string;
  tok: LoadedTokenizer;
  info: EngineInfo;
  engine: EngineSink;
  defaults: GenerationDefaults;
  queue: SequenceQueue;
  /** A text longer than this cannot fit the context whatever it tokenizes to. */
  maxPromptChars: number;
  log: (l: string) => void;
}

/** Sampling defaults from generation_config.json (none when it is absent). */
export async function readGenerationDefaults(modelDir: string): Promise<GenerationDefaults> {
  let cfg: Record<string, unknown>;
  try {
    cfg = JSON.parse(await readFile(join(modelDir, 'generation_config.json'), 'utf8'));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return {};
    throw new Error(`${join(modelDir, 'generation_config.json')}: ${(err as Error).message}`);
  }
  // Only sampling checkpoints carry sampling defaults; greedy ones (do_sample false) do not apply.
  const sampling = cfg.do_sample === true;
  const pick = (k: string) => (sampling && typeof cfg[k] === 'number' ? cfg[k] : undefined);
  return { temperature: pick('temperature'), topP: pick('top_p'), topK: pick('top_k') };
}

// A text longer than this many characters cannot fit the context whatever it tokenizes to:
// refused without tokenizing it, so a huge prompt does not hold up the other requests.
export function maxPromptChars(tok: LoadedTokenizer, info: EngineInfo): number {
  let maxTokenChars = 1;
  for (let id = 0; id < info.vocabSize; id++)
    maxTokenChars = Math.max(maxTokenChars, tok.decode([id]).length);
  return 2 * info.nCtx * maxTokenChars;
}

export class OpenAIServing {
  constructor(protected readonly ctx: ServingContext) {}

  protected checkModel(body: Record<string, unknown>): void {
    const { name } = this.ctx;
    if (body.model !== undefined && body.model !== null && body.model !== name) {
      const model = typeof body.model === 'string' ? body.model.slice(0, 100) : preview(body.model);
      throw new ApiError(
        400,
        `The model \`${model}\` does not exist; this server serves "${name}".`,
        'model',
        'model_not_found',
      );
    }
  }

  protected tooLong(param: string, chars: number): ApiError {
    return bad(
      `This model's maximum context length is ${this.ctx.info.nCtx} tokens; the ${param} ` +
        `has ${chars} characters, more than that many tokens can hold.`,
      param,
      'context_length_exceeded',
    );
  }

  // continueFinal (vLLM's continue_final_message): the text stops right after the final
  // assistant message's content so that generation continues it, cut as transformers'
  // apply_chat_template cuts it (a template may have trimmed the content's spaces).
  protected applyTemplate(
    messages: Message[],
    addGenerationPrompt: boolean,
    continueFinal = false,
  ): string {
    const chars = messages.reduce((a, m) => a + m.content.length, 0);
    if (chars > this.ctx.maxPromptChars) throw this.tooLong('messages', chars);
    const last = messages[messages.length - 1];
    if (continueFinal && addGenerationPrompt)
      throw bad(
        'continue_final_message needs add_generation_prompt: false',
        'continue_final_message',
      );
    if (continueFinal && last.role !== 'assistant')
      throw bad(
        `continue_final_message needs the last message to be the assistant's; got role ` +
          JSON.stringify(last.role),
        'continue_final_message',
      );
    let text: string;
    try {
      text = this.ctx.tok.applyChatTemplate(messages, { addGenerationPrompt });
    } catch (err) {
      throw bad(
        `the chat template of ${this.ctx.name} refuses these messages: ${(err as Error).message}`,
        'messages',
        'chat_template_error',
      );
    }
    if (!continueFinal) return text;
    const at = text.lastIndexOf(last.content.trim());
    if (at < 0)
      throw bad(
        `the chat template of ${this.ctx.name} does not render the final message's content, ` +
          'so continue_final_message cannot continue it',
        'continue_final_message',
      );
    const lead = last.content.trimStart();
    const kept = text.startsWith(lead, at) ? lead : last.content.trim();
    return text.slice(0, at + kept.length);
  }

  protected encodePrompt(p: string | number[], param: string, specials: boolean): number[] {
    const { tok, info } = this.ctx;
    const limit = `This model's maximum context length is ${info.nCtx} tokens`;
    if (typeof p === 'string' && p.length > this.ctx.maxPromptChars)
      throw this.tooLong(param, p.length);
    if (typeof p !== 'string' && p.length >= info.nCtx)
      throw bad(`${limit}; the ${param} has ${p.length} tokens.`, param, 'context_length_exceeded');
    const ids = typeof p === 'string' ? tok.encode(p, { addSpecialTokens: specials }) : p;
    if (ids.length === 0) throw bad(`${param} encodes to no tokens`, param);
    const badId = ids.find((t) => t >= info.vocabSize);
    if (badId !== undefined)
      throw bad(
        `${param} holds token id ${badId}; the vocabulary has ${info.vocabSize} ids`,
        param,
      );
    if (ids.length >= info.nCtx) {
      throw bad(
        `${limit}; the ${param} has ${ids.length} tokens, which leaves no room for a completion.`,
        param,
        'context_length_exceeded',
      );
    }
    return ids;
  }

  /** The completion's token budget: what the request asks for, if the context has room. */
  protected budget(ids: number[], s: Sampling, param: string): number {
    const { nCtx } = this.ctx.info;
    if (s.maxTokens === null) return nCtx - ids.length;
    if (ids.length + s.maxTokens > nCtx) {
      throw bad(
        `This model's maximum context length is ${nCtx} tokens. However, you requested ` +
          `${ids.length + s.maxTokens} tokens (${ids.length} in the prompt, ${s.maxTokens} ` +
          `in the completion). Please reduce the prompt or ${param}.`,
        param,
        'context_length_exceeded',
      );
    }
    return s.maxTokens;
  }

  // Runs n choices for each prompt; choice index = prompt index * n + i.
  protected generate(
    prompts: number[][],
    s: Sampling,
    maxTokens: number[],
    signal: AbortSignal,
    onDelta?: (index: number, text: string, lps: TokenLogprob[]) => void,
    onChoice?: (index: number, r: ChoiceResult) => void,
  ): Promise<ChoiceResult[]> {
    const { engine, tok, queue } = this.ctx;
    const seed = s.seed ?? randomInt(0, 2 ** 48 - 1);
    // One failed choice ends the request: the others are cancelled in the engine.
    const group = new AbortController();
    const stop = () => group.abort();
    signal.addEventListener('abort', stop);
    const jobs: Promise<ChoiceResult>[] = [];
    const count = prompts.length * s.n;
    queue.hold(count);
    prompts.forEach((prompt, j) => {
      for (let i = 0; i < s.n; i++) {
        const index = j * s.n + i;
        jobs.push(
          runChoice(engine, tok, {
            prompt,
            sampling: s,
            maxTokens: maxTokens[j],
            seed: choiceSeed(seed, i),
            eosIds: tok.stopTokenIds,
            signal: group.signal,
            onDelta: onDelta && ((text, lps) => onDelta(index, text, lps)),
          }).then((r) => {
            onChoice?.(index, r);
            return r;
          }),
        );
      }
    });
    return Promise.all(jobs)
      .catch((err) => {
        stop();
        throw err;
      })
      .finally(() => {
        queue.release(count);
        signal.removeEventListener('abort', stop);
      });
  }

  protected tokenText(id: number): string {
    return this.ctx.tok.decode([id]);
  }
}

export function usage(prompts: number[][], results: ChoiceResult[]) {
  const p = prompts.reduce((a, x) => a + x.length, 0),
    c = results.reduce((a, r) => a + r.completionTokens, 0);
  return { prompt_tokens: p, completion_tokens: c, total_tokens: p + c };
}

export function wantsUsage(body: Record<string, unknown>): boolean {
  const o = body.stream_options as { include_usage?: unknown } | undefined;
  return !!o && o.include_usage === true;
}
