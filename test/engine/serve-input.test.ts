// `opsr-engine serve` on hostile input, under the AddressSanitizer build so an out-of-bounds
// access fails the test: a model whose logits overflow to NaN/infinity gets each request refused
// with a clear error (sampling never indexes outside its buffers) while serve keeps running.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ENGINE, REPO } from '../helpers/tiny-gpt2.ts';
import { readSafetensors, writeSafetensors } from '../helpers/engine-files.ts';

const ASAN = join(REPO, 'engine', 'build', 'opsr-engine-asan');
const root = await mkdtemp(join(tmpdir(), 'opsr-serve-input-'));
const model = join(root, 'model');
after(() => rm(root, { recursive: true, force: true }));

before(async () => {
  execFileSync(
    'make',
    ['-s', '-C', join(REPO, 'engine'), 'build/opsr-engine', 'build/opsr-engine-asan'],
    { stdio: ['ignore', 'ignore', 'inherit'] },
  );
  const cfg = join(root, 'config.json');
  await writeFile(
    cfg,
    JSON.stringify({ vocab_size: 8, n_positions: 32, n_embd: 16, n_layer: 1, n_head: 2 }),
  );
  execFileSync(ENGINE, ['init', '--config', cfg, '--out', model, '--seed', '1'], {
    stdio: 'ignore',
  });
});

function serve(input: string, modelDir: string): Record<string, unknown>[] {
  const r = spawnSync(ASAN, ['serve', '--model', modelDir, '--threads', '1'], {
    input,
    encoding: 'utf8',
    timeout: 60_000,
  });
  assert.equal(r.status, 0, `serve exited ${r.status}: ${r.stderr}`);
  assert.doesNotMatch(r.stderr, /AddressSanitizer|runtime error/);
  return r.stdout
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

test('NaN or infinite logits: each request refused, error names it, serve goes on', async () => {
  // Finite weights whose final LayerNorm scale overflows float32 in the LM head.
  const broken = join(root, 'broken');
  execFileSync('cp', ['-r', model, broken]);
  const file = join(broken, 'model.safetensors');
  const { header, data } = await readSafetensors(file);
  for (const name of ['transformer.ln_f.weight', 'transformer.ln_f.bias']) {
    const [b, e] = header[name].data_offsets as [number, number];
    for (let o = b; o < e; o += 4) data.writeFloatLE(3e38, o);
  }
  await writeSafetensors(file, header, data);
  const requests = [
    { op: 'generate', id: 1, prompt: [1, 2], max_tokens: 3, temperature: 0 },
    {
      op: 'generate',
      id: 2,
      prompt: [1, 2, 3],
      max_tokens: 3,
      top_p: 0.5,
      seed: 3,
      logprobs: true,
      top_logprobs: 2,
    },
    { op: 'generate', id: 3, prompt: [4], max_tokens: 3, top_k: 3 },
  ];
  const events = serve(requests.map((r) => `${JSON.stringify(r)}\n`).join(''), broken);
  for (const { id } of requests) {
    const mine = events.filter((e) => e.id === id);
    assert.equal(mine.length, 1, `request ${id}: one event, got ${JSON.stringify(mine)}`);
    assert.equal(mine[0].event, 'error');
    assert.equal(mine[0].code, 'nonfinite_logits');
    assert.match(
      String(mine[0].message),
      new RegExp(`request ${id}: the model produced a NaN or infinite logit`),
    );
  }
  // The unbroken model answers the same requests.
  const ok = serve(requests.map((r) => `${JSON.stringify(r)}\n`).join(''), model);
  for (const { id } of requests)
    assert.ok(
      ok.some((e) => e.event === 'done' && e.id === id),
      `request ${id} done`,
    );
});
