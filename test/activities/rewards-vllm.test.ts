// Reward-model scoring through the real vLLM's pooling runner: a random
// LlamaForSequenceClassification saved by transformers, served by the CPU build with
// `--runner pooling`, scored by analyzeRewards over /classify (raw scores) and /pooling; both
// equal transformers' scores of the same texts.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MockActivityEnvironment } from '@temporalio/testing';
import { analyzeRewards, checkRewardModel } from '../../activities/rewards.ts';
import type { RewardModelConfig, RewardSummary } from '../../contracts/activities.ts';
import { readJsonl } from '../../lib/jsonl.ts';
import { writeTinyTokenizer } from '../helpers/tiny-tokenizer.ts';
import { PYTHON } from '../helpers/tiny-gpt2.ts';
import { cpuVllm, freePort, processTree, waitGone } from '../helpers/vllm.ts';

const root = await mkdtemp(join(tmpdir(), 'opsr-vllm-rm-'));
const rmDir = join(root, 'rm');
const PAIRS = [
  { prompt: 'Sort 3 1 2', chosen: '1 2 3', rejected: 'three two one' },
  { prompt: 'Add 4 and 5', chosen: 'The sum is 9.', rejected: '45' },
  { prompt: 'Name a colour', chosen: 'Blue', rejected: 'The weather is nice today, thank you.' },
];
let server: ChildProcess;
let baseURL: string;

// A random reward model (one raw logit) in Hugging Face layout, and its score of each text.
const MAKE_RM = `
import json, sys, torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification
d, vocab, texts = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
torch.manual_seed(0)
cfg = LlamaConfig(vocab_size=vocab, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                  num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
                  num_labels=1, pad_token_id=vocab - 1, bos_token_id=vocab - 1,
                  eos_token_id=vocab - 1)
m = LlamaForSequenceClassification(cfg).eval()
with torch.no_grad():
    m.score.weight.normal_(0, 1.0)  # the default init scores everything near 0
m.save_pretrained(d)
tok = AutoTokenizer.from_pretrained(d)
with torch.no_grad():
    print(json.dumps([m(torch.tensor([tok(t)["input_ids"]])).logits[0, 0].item() for t in texts]))
`;
let expected: number[];

before(async () => {
  await mkdir(rmDir);
  const vocab = await writeTinyTokenizer(rmDir);
  // analyzeRewards scores "<prompt>\n<answer>", chosen then rejected per pair.
  const texts = PAIRS.flatMap((p) => [`${p.prompt}\n${p.chosen}`, `${p.prompt}\n${p.rejected}`]);
  const args = ['-c', MAKE_RM, rmDir, String(vocab), JSON.stringify(texts)];
  expected = JSON.parse(execFileSync(PYTHON, args, { encoding: 'utf8' }));
  const port = await freePort();
  const v = cpuVllm(port, ['--runner', 'pooling', '--served-model-name', 'rm']);
  const serve = [
    '-m',
    v.module,
    '--model',
    rmDir,
    '--host',
    v.host,
    '--port',
    String(port),
    ...v.args,
  ];
  server = spawn(v.executable, serve, {
    env: { ...process.env, ...v.env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let tail = '';
  server.stderr!.on('data', (d: Buffer) => (tail = (tail + d.toString()).slice(-3000)));
  baseURL = `http://127.0.0.1:${port}/v1`;
  for (const deadline = Date.now() + v.startupTimeoutS * 1000; ;) {
    if (
      await fetch(`http://127.0.0.1:${port}/health`).then(
        (r) => r.ok,
        () => false,
      )
    )
      break;
    if (server.exitCode !== null || Date.now() > deadline) {
      throw new Error(`vLLM (pooling) did not start: ${tail}`);
    }
    await new Promise((r) => setTimeout(r, 500));
  }
});
after(async () => {
  if (server?.pid !== undefined) {
    const tree = await processTree(server.pid);
    server.kill('SIGTERM');
    await waitGone(tree, 30_000);
  }
  await rm(root, { recursive: true, force: true });
});

async function score(rewardModel: RewardModelConfig, dir: string) {
  const roundDir = join(root, dir);
  await mkdir(roundDir);
  const pairsFile = join(roundDir, 'pairs.jsonl');
  const answer = (text: string) => ({ text, finish_reason: 'stop', tokens: 3, seed: 0 });
  await writeFile(
    pairsFile,
    PAIRS.map((p, index) =>
      JSON.stringify({
        index,
        round: 1,
        prompt: p.prompt,
        chosen: answer(p.chosen),
        rejected: answer(p.rejected),
        chosenScore: 10,
        rejectedScore: 3,
        seed: 0,
      }),
    ).join('\n') + '\n',
  );
  const input = { runId: 'rm', round: 1, roundDir, pairsFile, rewardModel, notify: [] };
  const env = new MockActivityEnvironment();
  const summary = await (env.run(analyzeRewards, input) as Promise<RewardSummary>);
  assert.equal(summary.count, PAIRS.length);
  return readJsonl<{ chosen: number; rejected: number }>(summary.rewardsFile);
}

test('checked before sampling: the served model passes, an unknown one is bad input', async () => {
  for (const type of ['vllm-classify', 'vllm-pooling'] as const) {
    await checkRewardModel({ type, baseURL, model: 'rm' } as RewardModelConfig);
    await assert.rejects(
      checkRewardModel({ type, baseURL, model: 'rm-typo' } as RewardModelConfig),
      (e: Error & { type?: string }) => {
        assert.equal(e.type, 'BadInput', e.message);
        assert.match(e.message, /^rewardModel \(checked before sampling\): .* HTTP 404: .*rm-typo/);
        return true;
      },
    );
  }
});

test("analyzeRewards through vLLM /classify and /pooling: transformers' scores", async () => {
  assert.equal(
    new Set(expected.map((x) => x.toFixed(3))).size,
    expected.length,
    `distinct: ${expected.join(',')}`,
  );
  for (const [type, dir] of [
    ['vllm-classify', 'classify'],
    ['vllm-pooling', 'pooling'],
  ] as const) {
    const activation = type === 'vllm-classify' ? { useActivation: false } : {};
    const rows = await score(
      { type, baseURL, model: 'rm', ...activation } as RewardModelConfig,
      dir,
    );
    const got = rows.flatMap((r) => [r.chosen, r.rejected]);
    for (let i = 0; i < got.length; i++) {
      const tolerance = 1e-3 * Math.max(1, Math.abs(expected[i]));
      const what = `${type} text ${i}: vLLM ${got[i]} vs transformers ${expected[i]}`;
      assert.ok(Math.abs(got[i] - expected[i]) < tolerance, what);
    }
  }
});
