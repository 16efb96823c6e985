// POST /v1/completions (vLLM's OpenAIServingCompletion): n choices per prompt, streamed or whole,
// with logprobs in the legacy OpenAI shape.
import type { ServerResponse } from 'node:http';
import { randomBytes } from 'node:crypto';
import type { TokenLogprob } from './choice.ts';
import { openStream, sendJson } from './http.ts';
import { CompletionRequest, parseBody, toSampling } from './protocol.ts';
import { OpenAIServing, usage, wantsUsage } from './serving.ts';

export class CompletionServing extends OpenAIServing {
  async create(body: Record<string, unknown>, res: ServerResponse, signal: AbortSignal) {
    this.checkModel(body);
    const request = parseBody(CompletionRequest, body);
    const s = toSampling(request, this.ctx.defaults);
    const raw = request.prompt;
    this.ctx.queue.admit(raw.length * s.n, raw.length > 1 ? 'prompt' : 'n');
    const prompts: number[][] = [];
    for (const [i, p] of raw.entries()) {
      // other requests (and /health) between prompts
      if (i > 0) await new Promise((r) => setImmediate(r));
      prompts.push(this.encodePrompt(p, raw.length > 1 ? `prompt[${i}]` : 'prompt', true));
    }
    // the queue may have filled while this tokenized
    this.ctx.queue.admit(prompts.length * s.n, 'n');
    const maxTokens = prompts.map((ids) => this.budget(ids, s, 'max_tokens'));
    const id = `cmpl-${randomBytes(12).toString('hex')}`;
    const head = {
      id,
      object: 'text_completion',
      created: Math.floor(Date.now() / 1000),
      model: this.ctx.name,
    };
    if (s.stream) {
      const sse = openStream(res, this.ctx.log);
      const results = await this.generate(
        prompts,
        s,
        maxTokens,
        signal,
        (index, text, lps) =>
          sse.send({
            ...head,
            choices: [
              {
                index,
                text,
                logprobs: this.logprobs(lps.length ? lps : null, 0),
                finish_reason: null,
                stop_reason: null,
              },
            ],
          }),
        (index, r) =>
          sse.send({
            ...head,
            choices: [
              {
                index,
                text: '',
                logprobs: null,
                finish_reason: r.finishReason,
                stop_reason: r.stopReason,
              },
            ],
          }),
      ).catch((err) => sse.fail(err));
      if (results && wantsUsage(body))
        sse.send({ ...head, choices: [], usage: usage(prompts, results) });
      return sse.end();
    }
    const results = await this.generate(prompts, s, maxTokens, signal);
    sendJson(res, 200, {
      ...head,
      choices: results.map((r, index) => ({
        index,
        text: r.text,
        logprobs: this.logprobs(r.logprobs, 0),
        finish_reason: r.finishReason,
        stop_reason: r.stopReason,
      })),
      usage: usage(prompts, results),
    });
  }

  private logprobs(lps: TokenLogprob[] | null, offset0: number) {
    if (!lps) return null;
    let offset = offset0;
    const text_offset: number[] = [];
    const tokens = lps.map((l) => {
      const t = this.tokenText(l.token);
      text_offset.push(offset);
      offset += t.length;
      return t;
    });
    return {
      tokens,
      token_logprobs: lps.map((l) => l.logprob),
      text_offset,
      top_logprobs: lps.map((l) =>
        Object.fromEntries(
          (l.top.length ? l.top : [[l.token, l.logprob]]).map(([id, lp]) => [
            this.tokenText(id),
            lp,
          ]),
        ),
      ),
    };
  }
}
