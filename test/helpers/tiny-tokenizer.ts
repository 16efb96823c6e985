// Writes a tiny GPT-2-style byte-level BPE tokenizer (tokenizer.json, tokenizer_config.json with a
// chat template, special_tokens_map.json) that both @huggingface/tokenizers and Python transformers
// load. Vocabulary: the 256 byte symbols, a few merges, then <|endoftext|>.
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

// GPT-2's reversible byte -> printable unicode character map.
function byteSymbols(): string[] {
  const printable: number[] = [];
  for (let b = 33; b <= 126; b++) printable.push(b);
  for (let b = 161; b <= 172; b++) printable.push(b);
  for (let b = 174; b <= 255; b++) printable.push(b);
  const symbols: string[] = new Array(256);
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    symbols[b] = printable.includes(b)
      ? String.fromCodePoint(b)
      : String.fromCodePoint(256 + extra++);
  }
  return symbols;
}

const MERGES: [string, string][] = [
  ['Ġ', 't'],
  ['h', 'e'],
  ['Ġt', 'he'],
  ['i', 'n'],
  ['e', 'r'],
  ['a', 'n'],
  ['Ġ', 'a'],
  ['o', 'n'],
  ['r', 'e'],
  ['Ġ', 's'],
  ['Ġ', 'o'],
  ['o', 'u'],
  ['Ġ', 'w'],
  ['Ġ', 'c'],
  ['i', 's'],
  ['e', 'n'],
];

const TINY_CHAT_TEMPLATE =
  "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}{% if " +
  'add_generation_prompt %}<|assistant|>{% endif %}';

export const TINY_EOS = '<|endoftext|>';

/**
 * Writes the tokenizer files into dir and returns the vocabulary size (the EOS id is vocabSize-1).
 * vocabSize (default 273) larger than the fixed merges adds two-byte merges until it is reached,
 * for benchmarks at GPT-2's 50257.
 */
export async function writeTinyTokenizer(
  dir: string,
  opts: { chatTemplate?: boolean; vocabSize?: number } = {},
): Promise<number> {
  await mkdir(dir, { recursive: true });
  const vocab: Record<string, number> = {};
  const symbols = byteSymbols();
  let size = 0;
  for (const s of symbols) vocab[s] = size++;
  const merges = [...MERGES];
  for (const [a, b] of MERGES) vocab[a + b] = size++;
  const target = (opts.vocabSize ?? 0) - 1;
  for (let i = 0; i < 256 && size < target; i++) {
    for (let j = 0; j < 256 && size < target; j++) {
      const pair = symbols[i] + symbols[j];
      if (pair in vocab) continue;
      vocab[pair] = size++;
      merges.push([symbols[i], symbols[j]]);
    }
  }
  const eosId = size;
  const tokenizer = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [
      {
        id: eosId,
        content: TINY_EOS,
        single_word: false,
        lstrip: false,
        rstrip: false,
        normalized: false,
        special: true,
      },
    ],
    normalizer: null,
    pre_tokenizer: {
      type: 'ByteLevel',
      add_prefix_space: false,
      trim_offsets: true,
      use_regex: true,
    },
    post_processor: {
      type: 'ByteLevel',
      add_prefix_space: true,
      trim_offsets: false,
      use_regex: true,
    },
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: '',
      end_of_word_suffix: '',
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      merges: merges.map(([a, b]) => `${a} ${b}`),
    },
  };
  const config: Record<string, unknown> = {
    tokenizer_class: 'PreTrainedTokenizerFast',
    model_max_length: 1024,
    eos_token: TINY_EOS,
    bos_token: TINY_EOS,
    clean_up_tokenization_spaces: false,
  };
  if (opts.chatTemplate ?? true) config.chat_template = TINY_CHAT_TEMPLATE;
  await writeFile(join(dir, 'tokenizer.json'), JSON.stringify(tokenizer));
  await writeFile(join(dir, 'tokenizer_config.json'), JSON.stringify(config, null, 2));
  await writeFile(
    join(dir, 'special_tokens_map.json'),
    JSON.stringify({ eos_token: TINY_EOS, bos_token: TINY_EOS }),
  );
  return eosId + 1;
}
