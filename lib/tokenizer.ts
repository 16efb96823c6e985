// Hugging Face tokenizer loading for a model directory: tokenizer.json (the tokenizer itself: byte-
// level BPE as Llama 3, Qwen2 and SmolLM, or Metaspace BPE as Llama 2 and Mistral),
// tokenizer_config.json (eos_token, bos_token, chat_template, else chat_template.jinja), rendered
// with @huggingface/jinja, and generation_config.json's eos_token_id (the stop ids).
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { Template } from '@huggingface/jinja';

export type ChatMessage = { role: string; content: string };

export interface LoadedTokenizer {
  /**
   * Token ids of text; special tokens of the post-processor (e.g. BOS) are added unless
   * addSpecialTokens is false.
   */
  encode(text: string, opts?: { addSpecialTokens?: boolean }): number[];
  /** Text of ids; special tokens are kept unless skipSpecialTokens is true. */
  decode(ids: number[], opts?: { skipSpecialTokens?: boolean }): string;
  eosTokenId: number | null;
  bosTokenId: number | null;
  /** Ids that end an answer: eos_token and generation_config.json's eos_token_id (id or list). */
  stopTokenIds: number[];
  /** Ids of all special (added, special: true) tokens. */
  specialTokenIds: ReadonlySet<number>;
  vocabSize: number;
  hasChatTemplate: boolean;
  applyChatTemplate(messages: ChatMessage[], opts?: { addGenerationPrompt?: boolean }): string;
}

export class TokenizerError extends Error {}

async function readJson(file: string, required: boolean): Promise<Record<string, unknown> | null> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if (!required && (err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new TokenizerError(`cannot read ${file}: ${(err as Error).message}`);
  }
  try {
    const value = JSON.parse(text);
    if (value === null || typeof value !== 'object' || Array.isArray(value))
      throw new Error('top level is not an object');
    return value as Record<string, unknown>;
  } catch (err) {
    throw new TokenizerError(`${file} is not a JSON object: ${(err as Error).message}`);
  }
}

// eos_token/bos_token are either a string or an AddedToken object {content, ...}.
function tokenContent(value: unknown): string | null {
  if (typeof value === 'string') return value;
  if (
    value &&
    typeof value === 'object' &&
    typeof (value as { content?: unknown }).content === 'string'
  ) {
    return (value as { content: string }).content;
  }
  return null;
}

// A list of templates [{name, template}] is allowed by HF; "default" is the one used for chat.
// Without one in tokenizer_config.json, transformers reads chat_template.jinja beside it.
async function chatTemplateOf(
  config: Record<string, unknown>,
  file: string,
  jinjaFile: string,
): Promise<string | null> {
  const t = config.chat_template;
  if (t === undefined || t === null) {
    return readFile(jinjaFile, 'utf8').catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return null;
      throw new TokenizerError(`cannot read ${jinjaFile}: ${err.message}`);
    });
  }
  if (typeof t === 'string') return t;
  if (Array.isArray(t)) {
    const named = t.find(
      (x) => x && typeof x === 'object' && (x as { name?: unknown }).name === 'default',
    );
    if (named && typeof (named as { template?: unknown }).template === 'string')
      return (named as { template: string }).template;
  }
  throw new TokenizerError(
    `${file}: chat_template must be a string or a list containing ` +
      `{"name":"default","template":...}`,
  );
}

// generation_config.json's eos_token_id: absent, an id or a list of ids.
async function generationEosIds(file: string): Promise<number[]> {
  const config = await readJson(file, false);
  const e = config?.eos_token_id;
  if (e === undefined || e === null) return [];
  const ids = Array.isArray(e) ? e : [e];
  if (!ids.every((x) => Number.isInteger(x) && x >= 0)) {
    throw new TokenizerError(
      `${file}: eos_token_id must be a token id or a list of token ids; got ${JSON.stringify(e)}`,
    );
  }
  return ids as number[];
}

export async function loadTokenizer(modelDir: string): Promise<LoadedTokenizer> {
  const tokenizerFile = join(modelDir, 'tokenizer.json');
  const configFile = join(modelDir, 'tokenizer_config.json');
  const tokenizerJson = (await readJson(tokenizerFile, true))!;
  const config = (await readJson(configFile, false)) ?? {};
  const specialMap = (await readJson(join(modelDir, 'special_tokens_map.json'), false)) ?? {};
  let tok: Tokenizer;
  try {
    tok = new Tokenizer(tokenizerJson, config);
  } catch (err) {
    throw new TokenizerError(`${tokenizerFile}: unsupported tokenizer: ${(err as Error).message}`);
  }

  const idOf = (field: 'eos_token' | 'bos_token'): number | null => {
    const content = tokenContent(config[field]) ?? tokenContent(specialMap[field]);
    if (content === null) return null;
    const id = tok.token_to_id(content);
    if (id === undefined)
      throw new TokenizerError(
        `${configFile}: ${field} ${JSON.stringify(content)} is not in the vocabulary ` +
          `of ${tokenizerFile}`,
      );
    return id;
  };
  const eosTokenId = idOf('eos_token');
  const bosTokenId = idOf('bos_token');
  const specialTokenIds = new Set<number>();
  for (const [id, added] of tok.get_added_tokens_decoder())
    if (added.special) specialTokenIds.add(id);
  const vocab = tok.get_vocab(true);
  let vocabSize = 0;
  for (const id of vocab.values()) vocabSize = Math.max(vocabSize, id + 1);

  const genFile = join(modelDir, 'generation_config.json');
  const stopTokenIds = [
    ...new Set([
      ...(eosTokenId === null ? [] : [eosTokenId]),
      ...(await generationEosIds(genFile)),
    ]),
  ];
  for (const id of stopTokenIds) {
    if (id >= vocabSize) {
      throw new TokenizerError(
        `${genFile}: eos_token_id ${id} is outside the vocabulary (size ${vocabSize})`,
      );
    }
  }

  const jinjaFile = join(modelDir, 'chat_template.jinja');
  const templateSource = await chatTemplateOf(config, configFile, jinjaFile);
  const template = templateSource === null ? null : new Template(templateSource);
  const eosText =
    eosTokenId === null
      ? ''
      : (tokenContent(config.eos_token) ?? tokenContent(specialMap.eos_token) ?? '');
  const bosText =
    bosTokenId === null
      ? ''
      : (tokenContent(config.bos_token) ?? tokenContent(specialMap.bos_token) ?? '');

  return {
    encode: (text, opts) =>
      tok.encode(text, { add_special_tokens: opts?.addSpecialTokens ?? true }).ids,
    // The JS tokenizer rejects an empty id list; its text is the empty string.
    decode: (ids, opts) =>
      ids.length === 0
        ? ''
        : tok.decode(ids, { skip_special_tokens: opts?.skipSpecialTokens ?? false }),
    eosTokenId,
    bosTokenId,
    stopTokenIds,
    specialTokenIds,
    vocabSize,
    hasChatTemplate: template !== null,
    applyChatTemplate(messages, opts) {
      if (template === null) {
        throw new TokenizerError(
          `${configFile} has no chat_template (nor is there a ${jinjaFile});` +
            ' use a completions prompt or add a chat template',
        );
      }
      messages.forEach((m, i) => {
        if (!m || typeof m.role !== 'string' || typeof m.content !== 'string') {
          throw new TokenizerError(`messages[${i}] must be {role: string, content: string}`);
        }
      });
      return template.render({
        messages,
        add_generation_prompt: opts?.addGenerationPrompt ?? false,
        eos_token: eosText,
        bos_token: bosText,
      });
    },
  };
}
