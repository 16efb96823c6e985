// lib/tokenizer.ts against Python transformers on the same tiny tokenizer files.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { loadTokenizer, TokenizerError } from '../../lib/tokenizer.ts';
import { writeTinyTokenizer, TINY_EOS } from '../helpers/tiny-tokenizer.ts';

const PYTHON = join(import.meta.dirname, '..', '..', '.venv', 'bin', 'python');
let dir: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'opsr-tok-'));
  await writeTinyTokenizer(join(dir, 'model'));
});
after(async () => rm(dir, { recursive: true, force: true }));

const TEXTS = [
  'Hello world',
  ' the answer is in the water',
  'naïve café — 3.14!\n\tnew line',
  '',
  'ouen ' + TINY_EOS + ' tail',
];
const MESSAGES = [
  { role: 'system', content: 'Be brief.' },
  { role: 'user', content: 'What is the answer?' },
];

test('encode, decode and chat template match Python transformers', async () => {
  const tok = await loadTokenizer(join(dir, 'model'));
  const script = `
import json, sys
from transformers import AutoTokenizer
t = AutoTokenizer.from_pretrained(sys.argv[1])
texts = json.loads(sys.argv[2]); msgs = json.loads(sys.argv[3])
ids = [t.encode(x) for x in texts]
print(json.dumps({"ids": ids, "decoded": [t.decode(i) for i in ids], "eos": t.eos_token_id, "bos": \
t.bos_token_id,
  "chat": t.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True),
  "chat_nogen": t.apply_chat_template(msgs, tokenize=False)}))`;
  const py = JSON.parse(
    execFileSync(
      PYTHON,
      ['-c', script, join(dir, 'model'), JSON.stringify(TEXTS), JSON.stringify(MESSAGES)],
      { encoding: 'utf8' },
    ),
  );
  assert.deepEqual(
    TEXTS.map((t) => tok.encode(t)),
    py.ids,
  );
  assert.deepEqual(
    py.ids.map((ids: number[]) => tok.decode(ids)),
    py.decoded,
  );
  assert.equal(tok.eosTokenId, py.eos);
  assert.equal(tok.bosTokenId, py.bos);
  assert.equal(tok.hasChatTemplate, true);
  assert.equal(tok.applyChatTemplate(MESSAGES, { addGenerationPrompt: true }), py.chat);
  assert.equal(tok.applyChatTemplate(MESSAGES), py.chat_nogen);
  // Merges are applied (fewer tokens than bytes) and decoding round-trips.
  assert.ok(tok.encode(' the').length === 1);
  assert.equal(tok.decode(tok.encode(TEXTS[2])), TEXTS[2]);
  assert.equal(
    tok.decode([...tok.encode('hi'), tok.eosTokenId!], { skipSpecialTokens: true }),
    'hi',
  );
  assert.ok(tok.specialTokenIds.has(tok.eosTokenId!));
});

test('missing chat template and bad files give clear errors', async () => {
  const plain = join(dir, 'plain');
  await writeTinyTokenizer(plain, { chatTemplate: false });
  const tok = await loadTokenizer(plain);
  assert.equal(tok.hasChatTemplate, false);
  assert.throws(
    () => tok.applyChatTemplate(MESSAGES),
    (e: Error) => e instanceof TokenizerError && /no chat_template/.test(e.message),
  );

  await assert.rejects(
    loadTokenizer(join(dir, 'nowhere')),
    (e: Error) => e instanceof TokenizerError && /tokenizer\.json/.test(e.message),
  );

  const badEos = join(dir, 'bad-eos');
  await writeTinyTokenizer(badEos);
  const cfg = JSON.parse(await readFile(join(badEos, 'tokenizer_config.json'), 'utf8'));
  cfg.eos_token = '<|missing|>';
  await writeFile(join(badEos, 'tokenizer_config.json'), JSON.stringify(cfg));
  await assert.rejects(loadTokenizer(badEos), (e: Error) =>
    /eos_token "<\|missing\|>" is not in the vocabulary/.test(e.message),
  );

  const broken = join(dir, 'broken');
  await writeTinyTokenizer(broken);
  await writeFile(join(broken, 'tokenizer_config.json'), '{not json');
  await assert.rejects(loadTokenizer(broken), (e: Error) =>
    /tokenizer_config\.json is not a JSON object/.test(e.message),
  );
});
