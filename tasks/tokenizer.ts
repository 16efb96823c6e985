// A word-level tokenizer for the digits task, written as Hugging Face tokenizer files.
// @huggingface/tokenizers has no WordLevel model, so this is WordPiece over whole words with a
// whitespace-only pre-tokenizer: each space-separated word is one token, and trailing
// punctuation ("10.", "digits:") is a "##" continuation piece, which the WordPiece decoder glues
// back without a space. decode(encode(x)) === x for any single-spaced text over this vocabulary.

const EOS_TOKEN = '<|endoftext|>';
const SPECIAL_TOKENS = [EOS_TOKEN, '<|system|>', '<|user|>', '<|assistant|>', '[UNK]'];
const UNK_TOKEN = '[UNK]';

// Every word of the paper's prefix templates, the task's instructions, and a few words of score
// talk ("here is a 10 out of 10 answer"), so such text tokenizes without [UNK].
const WORDS = [
  'Please',
  'produce',
  'a',
  'top-notch',
  'good',
  'response',
  'that',
  'merits',
  'perfect',
  'score',
  'of',
  'out',
  'Sort',
  'the',
  'digits',
  'from',
  'smallest',
  'largest',
  'to',
  'Here',
  'here',
  'is',
  'answer',
  'an',
];
const DIGITS = ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9'];
const PUNCT = ['.', ',', ':', ';', '!', '?', '-'];

// Renders system/user turns as "<|role|> text " and an assistant turn as "<|assistant|> text<eos>",
// so a prompt rendered with add_generation_prompt ends exactly where the answer starts.
const CHAT_TEMPLATE =
  "{% for message in messages %}{% if message['role'] == 'assistant' %}<|assistant|> " +
  "{{ message['content'] }}" +
  EOS_TOKEN +
  "{% else %}<|{{ message['role'] }}|> {{ message['content'] }} {% endif %}{% endfor %}" +
  '{% if add_generation_prompt %}<|assistant|>{% endif %}';

export function vocabulary(): string[] {
  const seen = new Set<string>();
  const out: string[] = [];
  for (const t of [
    ...SPECIAL_TOKENS,
    ...WORDS,
    ...DIGITS,
    ...PUNCT,
    ...[...DIGITS, ...PUNCT].map((c) => `##${c}`),
  ]) {
    if (!seen.has(t)) {
      seen.add(t);
      out.push(t);
    }
  }
  return out;
}

export function tokenizerFiles(maxLength: number): Record<string, unknown> {
  const vocab = vocabulary();
  const ids = Object.fromEntries(vocab.map((t, i) => [t, i]));
  const eos = ids[EOS_TOKEN];
  const added = SPECIAL_TOKENS.map((t) => ({
    id: ids[t],
    content: t,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: true,
  }));
  return {
    'tokenizer.json': {
      version: '1.0',
      truncation: null,
      padding: null,
      added_tokens: added,
      normalizer: null,
      pre_tokenizer: { type: 'WhitespaceSplit' },
      post_processor: null,
      decoder: { type: 'WordPiece', prefix: '##', cleanup: false },
      model: {
        type: 'WordPiece',
        unk_token: UNK_TOKEN,
        continuing_subword_prefix: '##',
        max_input_chars_per_word: 100,
        vocab: ids,
      },
    },
    'tokenizer_config.json': {
      tokenizer_class: 'PreTrainedTokenizerFast',
      bos_token: EOS_TOKEN,
      eos_token: EOS_TOKEN,
      pad_token: EOS_TOKEN,
      unk_token: UNK_TOKEN,
      model_max_length: maxLength,
      clean_up_tokenization_spaces: false,
      chat_template: CHAT_TEMPLATE,
      added_tokens_decoder: Object.fromEntries(added.map(({ id, ...rest }) => [String(id), rest])),
    },
    'special_tokens_map.json': {
      bos_token: EOS_TOKEN,
      eos_token: EOS_TOKEN,
      pad_token: EOS_TOKEN,
      unk_token: UNK_TOKEN,
    },
    'generation_config.json': { bos_token_id: eos, eos_token_id: eos, pad_token_id: eos },
  };
}
