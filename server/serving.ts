// The serving side of each endpoint (vLLM's serving_*.py): a validated request in, the engine's
// choices out as one JSON body or a stream of chunks. Routing and the HTTP server are router.ts
// and index.ts; request parsing and the error shape are protocol.ts.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { randomBytes, randomInt } from 'node:crypto';
import type { LoadedTokenizer } from '../lib/tokenizer.ts';
import { runChoice, choiceSeed, type ChoiceResult, type TokenLogprob } from './choice.ts';
import type { EngineInfo, EngineSink } from './engine-supervisor.ts';
import {
  ApiError, bad, openStream, parseMessages, parsePrompts, parseSampling, sendJson, wantsUsage,
  type GenerationDefaults, type Sampling,
} from './protocol.ts';

export interface ServingContext {
  name: string; // the served model name requests must use
  modelDir: string;
  tok: LoadedTokenizer;
  defaults: GenerationDefaults; // from generation_config.json
  info: EngineInfo;
  engine: EngineSink;
}

export type Handler = (
  body: Record<string, unknown>, req: IncomingMessage, res: ServerResponse, signal: AbortSignal,
) => unknown;

export interface Serving {
  models(res: ServerResponse): void;
  completions: Handler;
  chatCompletions: Handler;
  tokenize: Handler;
  detokenize: Handler;
}

export function createServing(ctx: ServingContext): Serving {
  const { name, modelDir, tok, defaults, info, engine } = ctx;
  const eosIds = tok.stopTokenIds;
  const created = Math.floor(Date.now() / 1000);

  const checkModel = (body: Record<string, unknown>) => {
    if (body.model !== undefined && body.model !== null && body.model !== name) {
      const asked = typeof body.model === 'string' ? body.model : JSON.stringify(body.model);
      throw new ApiError(
        400, `The model \`${asked}\` does not exist; this server serves "${name}".`, 'model',
        'model_not_found');
    }
  };

  const encodePrompt = (p: string | number[], param: string, specials: boolean): number[] => {
    const ids = typeof p === 'string' ? tok.encode(p, { addSpecialTokens: specials }) : p;
    if (ids.length === 0) throw bad(`${param} encodes to no tokens`, param);
    const badId = ids.find((t) => t >= info.vocabSize);
    if (badId !== undefined) throw bad(`${param} holds token id ${badId}; the vocabulary has ${info.vocabSize} ids`, param);
    if (ids.length >= info.nCtx) {
      throw bad(`This model's maximum context length is ${info.nCtx} tokens; the ${param} has ${ids.length} tokens, which leaves no room for a completion.`, param, 'context_length_exceeded');
    }
    return ids;
  };

  const budget = (ids: number[], s: Sampling, param: string): number => {
    if (s.maxTokens === null) return info.nCtx - ids.length;
    if (ids.length + s.maxTokens > info.nCtx) {
      throw bad(`This model's maximum context length is ${info.nCtx} tokens. However, you requested ${ids.length + s.maxTokens} tokens (${ids.length} in the prompt, ${s.maxTokens} in the completion). Please reduce the prompt or ${param}.`, param, 'context_length_exceeded');
    }
    return s.maxTokens;
  };

  // Runs n choices for each prompt; choice index = prompt index * n + i.
  const runAll = (prompts: number[][], s: Sampling, maxTokens: number[], signal: AbortSignal,
                  onDelta?: (index: number, text: string, lps: TokenLogprob[]) => void,
                  onChoice?: (index: number, r: ChoiceResult) => void): Promise<ChoiceResult[]> => {
    const seed = s.seed ?? randomInt(0, 2 ** 48 - 1);
    // One failed choice ends the request: the others are cancelled in the engine.
    const group = new AbortController();
    const stop = () => group.abort();
    signal.addEventListener('abort', stop);
    const jobs: Promise<ChoiceResult>[] = [];
    prompts.forEach((prompt, j) => {
      for (let i = 0; i < s.n; i++) {
        const index = j * s.n + i;
        jobs.push(runChoice(engine, tok, {
          prompt, sampling: s, maxTokens: maxTokens[j], seed: choiceSeed(seed, i), eosIds, signal: group.signal,
          onDelta: onDelta && ((text, lps) => onDelta(index, text, lps)),
        }).then((r) => { onChoice?.(index, r); return r; }));
      }
    });
    return Promise.all(jobs).catch((err) => { stop(); throw err; }).finally(() => signal.removeEventListener('abort', stop));
  };

  const tokenText = (id: number) => tok.decode([id]);
  const usage = (prompts: number[][], results: ChoiceResult[]) => {
    const p = prompts.reduce((a, x) => a + x.length, 0), c = results.reduce((a, r) => a + r.completionTokens, 0);
    return { prompt_tokens: p, completion_tokens: c, total_tokens: p + c };
  };

  const completionLogprobs = (lps: TokenLogprob[] | null, offset0: number) => {
    if (!lps) return null;
    let offset = offset0;
    const text_offset: number[] = [];
    const tokens = lps.map((l) => {
      const t = tokenText(l.token);
      text_offset.push(offset);
      offset += t.length;
      return t;
    });
    return {
      tokens, token_logprobs: lps.map((l) => l.logprob), text_offset,
      top_logprobs: lps.map((l) => Object.fromEntries((l.top.length ? l.top : [[l.token, l.logprob]]).map(([id, lp]) => [tokenText(id), lp]))),
    };
  };
  const chatLogprobs = (lps: TokenLogprob[] | null) => {
    if (!lps) return null;
    const entry = (id: number, logprob: number) => {
      const token = tokenText(id);
      return { token, logprob, bytes: [...Buffer.from(token, 'utf8')] };
    };
    return { content: lps.map((l) => ({ ...entry(l.token, l.logprob), top_logprobs: l.top.map(([id, lp]) => entry(id, lp)) })) };
  };

  async function completions(body: Record<string, unknown>, req: IncomingMessage, res: ServerResponse, signal: AbortSignal) {
    checkModel(body);
    const s = parseSampling(body, defaults, false);
    const prompts = parsePrompts(body).map((p, i, all) => encodePrompt(p, all.length > 1 ? `prompt[${i}]` : 'prompt', true));
    const maxTokens = prompts.map((ids) => budget(ids, s, 'max_tokens'));
    const id = `cmpl-${randomBytes(12).toString('hex')}`;
    const head = { id, object: 'text_completion', created: Math.floor(Date.now() / 1000), model: name };
    if (s.stream) {
      const sse = openStream(res);
      const results = await runAll(prompts, s, maxTokens, signal,
        (index, text, lps) => sse.send({ ...head, choices: [{ index, text, logprobs: completionLogprobs(lps.length ? lps : null, 0), finish_reason: null, stop_reason: null }] }),
        (index, r) => sse.send({ ...head, choices: [{ index, text: '', logprobs: null, finish_reason: r.finishReason, stop_reason: r.stopReason }] }),
      ).catch((err) => sse.fail(err));
      if (results && wantsUsage(body)) sse.send({ ...head, choices: [], usage: usage(prompts, results) });
      return sse.end();
    }
    const results = await runAll(prompts, s, maxTokens, signal);
    sendJson(res, 200, {
      ...head,
      choices: results.map((r, index) => ({ index, text: r.text, logprobs: completionLogprobs(r.logprobs, 0), finish_reason: r.finishReason, stop_reason: r.stopReason })),
      usage: usage(prompts, results),
    });
  }

  async function chatCompletions(body: Record<string, unknown>, req: IncomingMessage, res: ServerResponse, signal: AbortSignal) {
    checkModel(body);
    const messages = parseMessages(body);
    const s = parseSampling(body, defaults, true);
    if (!tok.hasChatTemplate) throw bad(`the model at ${modelDir} has no chat_template in tokenizer_config.json; use /v1/completions`, 'messages', 'chat_template_missing');
    const addGenerationPrompt = body.add_generation_prompt === undefined ? true : body.add_generation_prompt === true;
    const prompt = encodePrompt(tok.applyChatTemplate(messages, { addGenerationPrompt }), 'messages', false);
    const maxTokens = [budget(prompt, s, body.max_completion_tokens !== undefined ? 'max_completion_tokens' : 'max_tokens')];
    const id = `chatcmpl-${randomBytes(12).toString('hex')}`;
    const head = { id, created: Math.floor(Date.now() / 1000), model: name };
    if (s.stream) {
      const sse = openStream(res);
      const chunk = (index: number, delta: object, extra: object = {}) =>
        sse.send({ ...head, object: 'chat.completion.chunk', choices: [{ index, delta, logprobs: null, finish_reason: null, ...extra }] });
      for (let i = 0; i < s.n; i++) chunk(i, { role: 'assistant', content: '' });
      const results = await runAll([prompt], s, maxTokens, signal,
        (index, text, lps) => chunk(index, { content: text }, { logprobs: chatLogprobs(lps.length ? lps : null) }),
        (index, r) => chunk(index, {}, { finish_reason: r.finishReason, stop_reason: r.stopReason }),
      ).catch((err) => sse.fail(err));
      if (results && wantsUsage(body)) sse.send({ ...head, object: 'chat.completion.chunk', choices: [], usage: usage([prompt], results) });
      return sse.end();
    }
    const results = await runAll([prompt], s, maxTokens, signal);
    sendJson(res, 200, {
      ...head, object: 'chat.completion',
      choices: results.map((r, index) => ({
        index, message: { role: 'assistant', content: r.text }, logprobs: chatLogprobs(r.logprobs), finish_reason: r.finishReason, stop_reason: r.stopReason,
      })),
      usage: usage([prompt], results),
    });
  }

  function tokenize(body: Record<string, unknown>, res: ServerResponse) {
    checkModel(body);
    let tokens: number[];
    if (body.messages !== undefined) {
      if (!tok.hasChatTemplate) throw bad(`the model at ${modelDir} has no chat_template in tokenizer_config.json`, 'messages', 'chat_template_missing');
      const text = tok.applyChatTemplate(parseMessages(body), { addGenerationPrompt: body.add_generation_prompt !== false });
      tokens = tok.encode(text, { addSpecialTokens: body.add_special_tokens === true });
    } else {
      if (typeof body.prompt !== 'string') throw bad('prompt must be a string (or give messages)', 'prompt', 'missing_required_parameter');
      tokens = tok.encode(body.prompt, { addSpecialTokens: body.add_special_tokens !== false });
    }
    sendJson(res, 200, { tokens, count: tokens.length, max_model_len: info.nCtx });
  }

  function detokenize(body: Record<string, unknown>, res: ServerResponse) {
    checkModel(body);
    const t = body.tokens;
    if (!Array.isArray(t) || !t.every((x) => Number.isInteger(x) && x >= 0 && x < info.vocabSize)) {
      throw bad(`tokens must be a list of token ids in [0, ${info.vocabSize})`, 'tokens');
    }
    sendJson(res, 200, { prompt: tok.decode(t as number[]) });
  }

  function models(res: ServerResponse) {
    sendJson(res, 200, {
      object: 'list',
      data: [{
        id: name, object: 'model', created, owned_by: 'opsr', root: modelDir, parent: null,
        max_model_len: info.nCtx,
      }],
    });
  }

  return {
    models,
    completions,
    chatCompletions,
    tokenize: (b, _q, r) => tokenize(b, r),
    detokenize: (b, _q, r) => detokenize(b, r),
  };
}
