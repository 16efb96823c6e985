// The engine half of `npm run bench:train` (bench/train_step.c) on a tiny Llama with GQA made by
// `opsr-engine init`: it links against the engine's objects, its shared-prompt step and its
// separate-sequences step compute the same DPO loss, and it reports the model's parameter count
// and a peak RSS at least the loaded one. Timings are the benchmark's business, not asserted.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { ENGINE } from '../helpers/tiny-gpt2.ts';
import { linkWithEngine, repoRoot } from '../parity/link.ts';

const root = await mkdtemp(join(tmpdir(), 'opsr-train-step-'));
after(() => rm(root, { recursive: true, force: true }));

const C = 32,
  I = 48,
  L = 2,
  NH = 4,
  KVH = 2,
  V = 64,
  HD = C / NH;
const config = {
  model_type: 'llama',
  vocab_size: V,
  hidden_size: C,
  intermediate_size: I,
  num_hidden_layers: L,
  num_attention_heads: NH,
  num_key_value_heads: KVH,
  max_position_embeddings: 64,
  rms_norm_eps: 1e-5,
  tie_word_embeddings: true,
  initializer_range: 0.1,
};

test('bench train_step: shared-prompt and separate DPO steps agree on the loss', async () => {
  await writeFile(join(root, 'config.json'), JSON.stringify(config));
  const model = join(root, 'model');
  await execa(ENGINE, ['init', '--config', join(root, 'config.json'), '--out', model]);
  const exe = await linkWithEngine(join(repoRoot, 'bench/train_step.c'), join(root, 'step'));
  type Run = {
    mode: string;
    loss: number;
    params: number;
    loaded_rss_mb: number;
    peak_rss_mb: number;
    tokens_per_s: number;
  };
  const runs: Run[] = [];
  for (const mode of ['pairs', 'separate']) {
    const { stdout } = await execa(exe, [model, mode, '3', '5', '7', '1'], {
      env: { OMP_NUM_THREADS: '1' },
    });
    runs.push(JSON.parse(stdout) as Run);
  }
  const [pairs, separate] = runs;
  const perLayer = 2 * C + C * NH * HD + 2 * C * KVH * HD + NH * HD * C + 3 * C * I;
  for (const r of runs) {
    assert.equal(r.params, V * C + L * perLayer + C, r.mode);
    assert.ok(r.peak_rss_mb >= r.loaded_rss_mb && r.loaded_rss_mb > 0, JSON.stringify(r));
    assert.ok(r.tokens_per_s > 0 && Number.isFinite(r.loss) && r.loss > 0, JSON.stringify(r));
  }
  assert.ok(
    Math.abs(pairs.loss - separate.loss) <= 1e-5 * Math.abs(separate.loss),
    `pairs ${pairs.loss} vs separate ${separate.loss}`,
  );
});
