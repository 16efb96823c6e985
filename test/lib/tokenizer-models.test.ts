// lib/tokenizer.ts and the dataset's tokenization (activities/dataset.ts) against transformers on
// tiny tokenizers of both kinds the test trains itself (byte-level BPE with ChatML; Metaspace BPE
// with byte fallback and a Mistral template) and on the real SmolLM2 (scripts/setup.sh test).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { cp, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadTokenizer, TokenizerError, type ChatMessage } from '../../lib/tokenizer.ts';
import { promptIds, responseIds } from '../../activities/dataset.ts';
import { defaultModelDir } from '../../cli/models.ts';

const HELPERS = join(import.meta.dirname, '..', 'helpers');
const PYTHON = join(import.meta.dirname, '..', '..', '.venv', 'bin', 'python');
const SMOL = defaultModelDir('smollm2-135m-instruct');

const CASES = {
  texts: [
    'Hello world',
    ' the sea',
    'naïve café — 3.14 🙂\n\tdef f(x):\n    return x',
    '',
    'Paris is the capital of France.',
  ],
  chats: [
    [{ role: 'user', content: 'Write a short poem about the sea.' }],
    [
      { role: 'user', content: 'What is 12 times 7?' },
      { role: 'assistant', content: '84.' },
      { role: 'user', content: 'And 13 times 7? Explain briefly.' },
    ],
  ] as ChatMessage[][],
  pairs: [
    {
      messages: [{ role: 'user', content: 'Name a capital.' }],
      response: 'Paris is the capital of France.',
    },
    {
      messages: [{ role: 'user', content: 'Code?' }],
      response: 'def add(a, b):\n    return a + b',
    },
  ],
};
// ChatML has a system turn; Mistral's template allows only alternating user/assistant turns.
const SYSTEM_CHAT: ChatMessage[] = [
  { role: 'system', content: 'Be brief.' },
  { role: 'user', content: 'Hi!' },
];

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'opsr-hftok-'));
  execFileSync(PYTHON, [join(HELPERS, 'tiny_hf_tokenizers.py'), dir]);
  // Variants: generation_config.json eos as a list, and as a number; a template in
  // chat_template.jinja instead of tokenizer_config.json; add_bos_token false.
  const genConfig = (d: string, eos: unknown) =>
    writeFile(join(dir, d, 'generation_config.json'), JSON.stringify({ eos_token_id: eos }));
  await genConfig('bytelevel', [2, 0]);
  await genConfig('metaspace', 2);
  await cp(join(dir, 'bytelevel'), join(dir, 'jinja'), { recursive: true });
  const cfg = JSON.parse(await readFile(join(dir, 'jinja', 'tokenizer_config.json'), 'utf8'));
  await writeFile(join(dir, 'jinja', 'chat_template.jinja'), cfg.chat_template);
  delete cfg.chat_template;
  await writeFile(join(dir, 'jinja', 'tokenizer_config.json'), JSON.stringify(cfg));
  await cp(join(dir, 'metaspace'), join(dir, 'nobos'), { recursive: true });
  const nobos = JSON.parse(await readFile(join(dir, 'nobos', 'tokenizer_config.json'), 'utf8'));
  await writeFile(
    join(dir, 'nobos', 'tokenizer_config.json'),
    JSON.stringify({ ...nobos, add_bos_token: false }),
  );
});
after(async () => rm(dir, { recursive: true, force: true }));

async function compare(modelDir: string, chatml: boolean) {
  const cases = chatml ? { ...CASES, chats: [...CASES.chats, SYSTEM_CHAT] } : CASES;
  const py = JSON.parse(
    execFileSync(
      PYTHON,
      [join(HELPERS, 'tokenizer_reference.py'), modelDir, JSON.stringify(cases)],
      { encoding: 'utf8', maxBuffer: 1 << 26 },
    ),
  );
  const tok = await loadTokenizer(modelDir);
  assert.equal(tok.bosTokenId, py.bos);
  assert.equal(tok.eosTokenId, py.eos);
  const genEos = py.generation_eos === null ? [] : [py.generation_eos].flat();
  assert.deepEqual(tok.stopTokenIds, [...new Set([py.eos, ...genEos])]);
  assert.deepEqual(
    cases.texts.map((t) => tok.encode(t)),
    py.encoded,
  );
  assert.deepEqual(
    py.encoded.map((ids: number[]) => tok.decode(ids)),
    py.decoded,
  );
  const skipped = py.encoded.map((ids: number[]) => tok.decode(ids, { skipSpecialTokens: true }));
  assert.deepEqual(skipped, py.decoded_skip);
  assert.deepEqual(
    cases.chats.map((m, i) => promptIds(tok, m, `chat ${i}`)),
    py.chats,
  );
  const pairs = cases.pairs.map((p, i) => [
    ...promptIds(tok, p.messages, `pair ${i}`),
    ...responseIds(tok, p.response, 'stop'),
  ]);
  assert.deepEqual(pairs, py.pairs);
  // With ChatML the trained sequence is exactly the start of the templated conversation.
  if (chatml) {
    pairs.forEach((ids, i) => assert.deepEqual(ids, py.conversations[i].slice(0, ids.length)));
  }
  // A cut answer (finish_reason "length") gets no EOS.
  assert.deepEqual(
    responseIds(tok, 'Hello world', 'length'),
    tok.encode('Hello world', { addSpecialTokens: false }),
  );
  return { tok, py };
}

test('byte-level BPE, ChatML: ids, prompt+answer sequences, stop ids = transformers', async () => {
  const { tok } = await compare(join(dir, 'bytelevel'), true);
  assert.deepEqual(tok.stopTokenIds, [2, 0]);
  assert.equal(tok.bosTokenId, null);
});

test('Metaspace BPE with byte fallback and a bos_token template equals transformers', async () => {
  const { tok, py } = await compare(join(dir, 'metaspace'), false);
  // The template writes BOS; encoding adds no second one.
  assert.equal(py.chats[0][0], tok.bosTokenId);
  assert.notEqual(py.chats[0][1], tok.bosTokenId);
  assert.equal(py.encoded[0][0], tok.bosTokenId); // the post-processor adds BOS to plain prompts
  assert.throws(
    () => tok.applyChatTemplate([{ role: 'assistant', content: 'x' }]),
    /roles must alternate/,
  );
});

test('add_bos_token false and chat_template.jinja read as transformers reads them', async () => {
  await compare(join(dir, 'nobos'), false);
  const { tok } = await compare(join(dir, 'jinja'), true);
  assert.equal(tok.hasChatTemplate, true);
});

test('SmolLM2-135M-Instruct: chat prompts, prompt+response sequences = transformers', async (t) => {
  if (
    !(await stat(join(SMOL, 'tokenizer.json')).then(
      () => true,
      () => false,
    ))
  ) {
    t.skip(`needs ${SMOL}: \`opsr models fetch smollm2-135m-instruct\` (setup.sh test runs it)`);
    return;
  }
  const { tok, py } = await compare(SMOL, true);
  assert.equal(tok.eosTokenId, 2);
  assert.deepEqual(tok.stopTokenIds, [2]);
  // The default system turn of SmolLM2's template is there.
  assert.match(
    tok.decode(py.chats[0]),
    /^<\|im_start\|>system\nYou are a helpful AI assistant named SmolLM/,
  );
});

test('bad generation_config.json eos_token_id is an error naming the file and field', async () => {
  const bad = join(dir, 'badgen');
  await cp(join(dir, 'bytelevel'), bad, { recursive: true });
  await writeFile(join(bad, 'generation_config.json'), JSON.stringify({ eos_token_id: ['2'] }));
  const named =
    /generation_config\.json: eos_token_id must be a token id or a list of token ids; got \["2"\]/;
  await assert.rejects(
    loadTokenizer(bad),
    (e: Error) => e instanceof TokenizerError && named.test(e.message),
  );
  await writeFile(join(bad, 'generation_config.json'), JSON.stringify({ eos_token_id: 100000 }));
  await assert.rejects(
    loadTokenizer(bad),
    /eos_token_id 100000 is outside the vocabulary \(size 400\)/,
  );
});
