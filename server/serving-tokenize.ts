// POST /tokenize and /detokenize (vLLM's OpenAIServingTokenization), with the same prompt and
// chat template rules as the generation endpoints.
import type { ServerResponse } from 'node:http';
import { sendJson } from './http.ts';
import {
  bad,
  detokenizeRequest,
  parseBody,
  TokenizeChatRequest,
  TokenizeRequest,
} from './protocol.ts';
import { OpenAIServing, type ServingContext } from './serving.ts';

export class TokenizeServing extends OpenAIServing {
  private readonly detokenizeSchema;
  constructor(ctx: ServingContext) {
    super(ctx);
    this.detokenizeSchema = detokenizeRequest(ctx.info.vocabSize);
  }

  tokenize(body: Record<string, unknown>, res: ServerResponse) {
    const { name, tok, info } = this.ctx;
    this.checkModel(body);
    let tokens: number[];
    if (body.messages !== undefined) {
      if (!tok.hasChatTemplate)
        throw bad(
          `the model ${name} has no chat_template in tokenizer_config.json`,
          'messages',
          'chat_template_missing',
        );
      const request = parseBody(TokenizeChatRequest, body);
      const text = this.applyTemplate(
        request.messages,
        body.add_generation_prompt !== false,
        request.continue_final_message ?? false,
      );
      tokens = tok.encode(text, { addSpecialTokens: body.add_special_tokens === true });
    } else {
      const { prompt } = parseBody(TokenizeRequest, body);
      if (prompt.length > this.ctx.maxPromptChars) throw this.tooLong('prompt', prompt.length);
      tokens = tok.encode(prompt, { addSpecialTokens: body.add_special_tokens !== false });
    }
    sendJson(res, 200, { tokens, count: tokens.length, max_model_len: info.nCtx });
  }

  detokenize(body: Record<string, unknown>, res: ServerResponse) {
    this.checkModel(body);
    const { tokens } = parseBody(this.detokenizeSchema, body);
    sendJson(res, 200, { prompt: this.ctx.tok.decode(tokens) });
  }
}
