// The engine's command line on Llama-family models (issue 8): init writes llama/mistral/qwen2
// dirs that transformers loads with the engine's log-probs; every loss trains, and a run resumed
// from a mid-run checkpoint ends bit-identical to the uninterrupted one; bad configs are refused
// naming the field and what is allowed (exit 2).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { cp, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { execFileSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { writeSftData, writePreferenceData } from '../../lib/tokdata.ts';
import { ENGINE, PYTHON } from '../helpers/tiny-gpt2.ts';

const root = await mkdtemp(join(tmpdir(), 'opsr-llama-cli-'));
after(() => rm(root, { recursive: true, force: true }));

const run = (args: string[]) => execa(ENGINE, args, { reject: false });
const events = (stdout: string) =>
  stdout
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Record<string, any>);
function errorOf(stderr: string): { code: string; message: string } {
  return JSON.parse(stderr.trim().split('\n').pop()!).error;
}

const BASE = {
  vocab_size: 50,
  hidden_size: 24,
  intermediate_size: 40,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  max_position_embeddings: 32,
  rms_norm_eps: 1e-5,
  bos_token_id: 1,
  eos_token_id: 49,
};
const CONFIGS: Record<string, Record<string, unknown>> = {
  llama: {
    ...BASE,
    model_type: 'llama',
    num_key_value_heads: 2,
    attention_bias: true,
    tie_word_embeddings: false,
    rope_theta: 5e5,
    initializer_range: 0.1,
    rope_scaling: {
      rope_type: 'llama3',
      factor: 4,
      low_freq_factor: 1,
      high_freq_factor: 4,
      original_max_position_embeddings: 16,
    },
  },
  mistral: {
    ...BASE,
    model_type: 'mistral',
    num_key_value_heads: 1,
    sliding_window: 4,
    initializer_range: 0.1,
  },
  qwen2: {
    ...BASE,
    model_type: 'qwen2',
    num_key_value_heads: 2,
    tie_word_embeddings: true,
    rope_theta: 1e6,
    initializer_range: 0.1,
  },
};

const sftRecords = Array.from({ length: 6 }, (_, i) => ({
  prompt: [1 + (i % 4), 5 + (i % 3)],
  response: [10 + i, 20, 30, 49],
}));
const prefRecords = Array.from({ length: 6 }, (_, i) => ({
  prompt: [1 + (i % 4), 6, 7, 8, 9],
  chosen: [10 + (i % 4), 20, 49],
  rejected: [40 + (i % 3), 41, 42, 43, 49],
}));
const sftData = join(root, 'sft.bin');
const prefData = join(root, 'pref.bin');

before(async () => {
  await writeSftData(sftData, sftRecords);
  await writePreferenceData(prefData, prefRecords);
  for (const [arch, cfg] of Object.entries(CONFIGS)) {
    await writeFile(join(root, `${arch}.json`), JSON.stringify(cfg));
    const config = join(root, `${arch}.json`);
    const r = await run(['init', '--config', config, '--out', join(root, arch), '--seed', '3']);
    assert.equal(r.exitCode, 0, r.stderr);
  }
});

// Per-record response log-prob sums by transformers, any architecture.
const HF_LOGPS = `
import json, sys, torch
from transformers import AutoModelForCausalLM
m = AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.float32).eval()
out = []
for p, r in json.loads(sys.argv[2]):
    with torch.no_grad():
        lp = torch.log_softmax(m(torch.tensor([p + r])).logits[0].double(), -1)
    out.append(sum(lp[len(p) - 1 + i, t].item() for i, t in enumerate(r)))
print(json.dumps({"logps": out, "arch": m.config.architectures}))
`;

test('init: llama, mistral and qwen2 dirs that transformers loads, same log-probs', async () => {
  const names = {
    llama: 'LlamaForCausalLM',
    mistral: 'MistralForCausalLM',
    qwen2: 'Qwen2ForCausalLM',
  } as const;
  for (const arch of Object.keys(CONFIGS) as (keyof typeof names)[]) {
    const dir = join(root, arch);
    const r = await run(['logprobs', '--model', dir, '--data', sftData, '--threads', '1']);
    assert.equal(r.exitCode, 0, r.stderr);
    const got = events(r.stdout);
    const pairs = JSON.stringify(sftRecords.map((x) => [x.prompt, x.response]));
    const hf = JSON.parse(
      execFileSync(PYTHON, ['-c', HF_LOGPS, dir, pairs], {
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'ignore'],
      }),
    );
    assert.deepEqual(hf.arch, [names[arch]]);
    got.forEach((e, i) =>
      assert.ok(
        Math.abs(e.logp_sum - hf.logps[i]) <= 1e-4 * Math.abs(hf.logps[i]),
        `${arch} record ${i}: ${e.logp_sum} vs ${hf.logps[i]}`,
      ),
    );
    const spread = Math.max(...hf.logps) - Math.min(...hf.logps);
    assert.ok(spread > 0.1, `${arch}: records' log-probs differ (${spread}): init not degenerate`);
  }
});

async function finalWeights(out: string) {
  return readFile(join(out, 'final', 'model.safetensors'));
}

for (const loss of ['sft', 'dpo', 'simpo', 'ipo', 'hinge']) {
  test(`${loss} trains llama and qwen2; resumed mid-run, bit-identical`, async () => {
    for (const arch of ['llama', 'qwen2']) {
      const args = (out: string) => [
        'train',
        '--model',
        join(root, arch),
        '--data',
        loss === 'sft' ? sftData : prefData,
        '--out',
        out,
        '--loss',
        loss,
        '--lr',
        '1e-2',
        '--batch-size',
        '2',
        '--epochs',
        '2',
        '--weight-decay',
        '0.1',
        '--checkpoint-every',
        '1',
        '--keep-checkpoints',
        '10',
        '--threads',
        '2',
        '--seed',
        '5',
      ];
      const full = join(root, `${arch}-${loss}`);
      const r = await run(args(full));
      assert.equal(r.exitCode, 0, r.stderr);
      const steps = events(r.stdout).filter((e) => e.event === 'step');
      assert.equal(steps.length, 6);
      steps.forEach((s) =>
        assert.ok(Number.isFinite(s.loss) && s.grad_norm >= 0, `${arch} ${loss} step ${s.step}`),
      );
      // hinge may reach zero loss (and gradient) later
      assert.ok(steps[0].grad_norm > 0, `${arch} ${loss}: the first step has a gradient`);
      const start = await readFile(join(root, arch, 'model.safetensors'));
      assert.notDeepEqual(await finalWeights(full), start);
      // a crash after step 2: only checkpoints 1 and 2 were complete
      const crashed = join(root, `${arch}-${loss}-crashed`);
      await cp(full, crashed, { recursive: true });
      await rm(join(crashed, 'final'), { recursive: true });
      for (const d of await readdir(join(crashed, 'checkpoints')))
        if (Number(d.slice('step-'.length)) > 2) {
          await rm(join(crashed, 'checkpoints', d), { recursive: true });
        }
      const resumed = await run([...args(crashed), '--resume']);
      assert.equal(resumed.exitCode, 0, resumed.stderr);
      assert.equal(events(resumed.stdout)[0].resumed_from, 2);
      assert.deepEqual(
        await finalWeights(crashed),
        await finalWeights(full),
        `${arch} ${loss}: resumed weights differ`,
      );
    }
  });
}

test('bad Llama-family configs are refused naming the field and what is allowed', async () => {
  const cases: [Record<string, unknown>, RegExp][] = [
    [
      { ...CONFIGS.llama, model_type: 'falcon' },
      /model_type is "falcon"; supported: gpt2, llama, mistral, qwen2/,
    ],
    [
      { ...CONFIGS.llama, num_key_value_heads: 3 },
      /num_attention_heads \(4\) must be a multiple of num_key_value_heads \(3\)/,
    ],
    [{ ...CONFIGS.llama, hidden_act: 'gelu' }, /hidden_act must be "silu"/],
    [
      { ...CONFIGS.llama, rope_scaling: { rope_type: 'yarn', factor: 2 } },
      /rope_type is yarn; supported: default, llama3/,
    ],
    [
      { ...CONFIGS.llama, vocab_size: 1 << 30, hidden_size: 1 << 20 },
      /model.embed_tokens.weight is too large/,
    ],
    [{ ...CONFIGS.qwen2, use_sliding_window: true }, /use_sliding_window must be false/],
    [
      { ...CONFIGS.mistral, intermediate_size: 0 },
      /field intermediate_size must be an integer in \[1, 2\^30\]/,
    ],
  ];
  for (const [i, [cfg, want]] of cases.entries()) {
    const path = join(root, `bad-${i}.json`);
    await writeFile(path, JSON.stringify(cfg));
    const r = await run(['init', '--config', path, '--out', join(root, `bad-${i}`)]);
    assert.equal(r.exitCode, 2, `case ${i}: ${r.stderr}`);
    const err = errorOf(r.stderr);
    assert.equal(err.code, 'bad_config');
    assert.match(err.message, want);
    assert.ok(err.message.includes(path), `case ${i} names the file`);
  }
});
