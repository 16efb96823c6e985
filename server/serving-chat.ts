// POST /v1/chat/completions (vLLM's OpenAIServingChat): messages through the model's chat
// template, n choices, streamed as chat.completion.chunk deltas or whole.
import type { ServerResponse } from 'node:http';
import { randomBytes } from 'node:crypto';
import type { TokenLogprob } from './choice.ts';
import { openStream, sendJson } from './http.ts';
import { bad, ChatCompletionRequest, parseBody, toSampling } from './protocol.ts';
import { OpenAIServing, usage, wantsUsage } from './serving.ts';

export class ChatServing extends OpenAIServing {
  async create(body: Record<string, unknown>, res: ServerResponse, signal: AbortSignal) {
    const { name, tok } = this.ctx;
    this.checkModel(body);
    const request = parseBody(ChatCompletionRequest, body);
    const s = toSampling(request, this.ctx.defaults);
    if (!tok.hasChatTemplate)
      throw bad(
        `the model ${name} has no chat_template in tokenizer_config.json; use /v1/completions`,
        'messages',
        'chat_template_missing',
      );
    this.ctx.queue.admit(s.n, 'n');
    const addGenerationPrompt =
      body.add_generation_prompt === undefined ? true : body.add_generation_prompt === true;
    const text = this.applyTemplate(
      request.messages,
      addGenerationPrompt,
      request.continue_final_message ?? false,
    );
    const prompt = this.encodePrompt(text, 'messages', false);
    const tokensKey =
      body.max_completion_tokens !== undefined ? 'max_completion_tokens' : 'max_tokens';
    const maxTokens = [this.budget(prompt, s, tokensKey)];
    const id = `chatcmpl-${randomBytes(12).toString('hex')}`;
    const head = { id, created: Math.floor(Date.now() / 1000), model: name };
    if (s.stream) {
      const sse = openStream(res, this.ctx.log);
      const chunk = (index: number, delta: object, extra: object = {}) =>
        sse.send({
          ...head,
          object: 'chat.completion.chunk',
          choices: [{ index, delta, logprobs: null, finish_reason: null, ...extra }],
        });
      for (let i = 0; i < s.n; i++) chunk(i, { role: 'assistant', content: '' });
      const results = await this.generate(
        [prompt],
        s,
        maxTokens,
        signal,
        (index, text, lps) =>
          chunk(index, { content: text }, { logprobs: this.logprobs(lps.length ? lps : null) }),
        (index, r) =>
          chunk(index, {}, { finish_reason: r.finishReason, stop_reason: r.stopReason }),
      ).catch((err) => sse.fail(err));
      if (results && wantsUsage(body))
        sse.send({
          ...head,
          object: 'chat.completion.chunk',
          choices: [],
          usage: usage([prompt], results),
        });
      return sse.end();
    }
    const results = await this.generate([prompt], s, maxTokens, signal);
    sendJson(res, 200, {
      ...head,
      object: 'chat.completion',
      choices: results.map((r, index) => ({
        index,
        message: { role: 'assistant', content: r.text },
        logprobs: this.logprobs(r.logprobs),
        finish_reason: r.finishReason,
        stop_reason: r.stopReason,
      })),
      usage: usage([prompt], results),
    });
  }

  private logprobs(lps: TokenLogprob[] | null) {
    if (!lps) return null;
    const entry = (id: number, logprob: number) => {
      const token = this.tokenText(id);
      return { token, logprob, bytes: [...Buffer.from(token, 'utf8')] };
    };
    return {
      content: lps.map((l) => ({
        ...entry(l.token, l.logprob),
        top_logprobs: l.top.map(([id, lp]) => entry(id, lp)),
      })),
    };
  }
}
