// opsr models fetch: the real SmolLM2 directory (fetched by scripts/setup.sh test) is a plain fp32
// Hugging Face Llama directory; a second fetch into a fresh directory gives the same bytes and a
// fetch into an existing directory touches nothing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sha256File } from '../../lib/hash.ts';
import { defaultModelDir, fetchModel } from '../../cli/models.ts';
import { opsr } from '../helpers/opsr-cli.ts';

const SMOL = defaultModelDir('smollm2-135m-instruct');
const FILES = [
  'config.json',
  'generation_config.json',
  'model.safetensors',
  'tokenizer.json',
  'tokenizer_config.json',
];

async function readJson(file: string) {
  return JSON.parse(await readFile(file, 'utf8'));
}

type Header = Record<string, { dtype: string; shape: number[] }>;

async function safetensorsHeader(file: string): Promise<Header> {
  const fh = await import('node:fs/promises').then((m) => m.open(file));
  try {
    const len = Buffer.alloc(8);
    await fh.read(len, 0, 8, 0);
    const n = Number(len.readBigUInt64LE());
    const head = Buffer.alloc(n);
    await fh.read(head, 0, n, 8);
    return JSON.parse(head.toString('utf8'));
  } finally {
    await fh.close();
  }
}

test('the fetched SmolLM2 is a plain fp32 Llama directory with its chat template', async () => {
  assert.deepEqual((await readdir(SMOL)).sort(), FILES);
  const config = await readJson(join(SMOL, 'config.json'));
  assert.equal(config.model_type, 'llama');
  assert.equal(config.quantization_config, undefined);
  assert.deepEqual(
    [
      config.num_hidden_layers,
      config.hidden_size,
      config.intermediate_size,
      config.num_attention_heads,
      config.num_key_value_heads,
      config.vocab_size,
      config.rope_theta,
      config.rms_norm_eps,
      config.tie_word_embeddings,
    ],
    [30, 576, 1536, 9, 3, 49152, 1e5, 1e-5, true],
  );
  const header = await safetensorsHeader(join(SMOL, 'model.safetensors'));
  const tensors = Object.entries(header).filter(([k]) => k !== '__metadata__');
  assert.equal(tensors.length, 1 + 30 * 9 + 1); // embeddings, 9 per layer, final norm; lm_head tied
  assert.ok(tensors.every(([, t]) => t.dtype === 'F32'));
  assert.deepEqual(header['model.embed_tokens.weight'].shape, [49152, 576]);
  assert.deepEqual(header['model.layers.29.self_attn.k_proj.weight'].shape, [192, 576]);
  const tokConfig = await readJson(join(SMOL, 'tokenizer_config.json'));
  assert.match(tokConfig.chat_template, /<\|im_start\|>/);
  assert.equal(tokConfig.eos_token, '<|im_end|>');
  assert.equal((await readJson(join(SMOL, 'generation_config.json'))).eos_token_id, 2);
});

test('fetch is idempotent: an existing dir stays, a fresh one gets the same bytes', async () => {
  const before = await stat(join(SMOL, 'model.safetensors'));
  const out = await opsr(['models', 'fetch', 'smollm2-135m-instruct']);
  assert.equal(out.code, 0, out.stderr);
  assert.equal(out.stdout.trim(), SMOL);
  assert.equal((await stat(join(SMOL, 'model.safetensors'))).mtimeMs, before.mtimeMs);

  const dir = await mkdtemp(join(tmpdir(), 'opsr-fetch-'));
  try {
    const target = join(dir, 'smol');
    assert.equal(await fetchModel('smollm2-135m-instruct', target), target);
    // Only the finished directory is left beside it (the work area is removed).
    assert.deepEqual(await readdir(dir), ['smol']);
    for (const f of FILES) {
      assert.equal(await sha256File(join(target, f)), await sha256File(join(SMOL, f)), f);
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('an unknown model or action is a usage error naming what is allowed', async () => {
  const bad = await opsr(['models', 'fetch', 'gpt-5']);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /unknown model "gpt-5"; allowed: smollm2-135m-instruct/);
  const action = await opsr(['models', 'pull', 'x']);
  assert.equal(action.code, 2);
  assert.match(action.stderr, /unknown action "pull"; allowed: list, fetch/);
});
