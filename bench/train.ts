// `npm run bench:train`: one DPO step (policy forward + backward on chosen and rejected,
// reference log-probs precomputed) of a GPT-2 124M-shaped model, 4 pairs of 128 prompt + 128
// response tokens, 2 threads: the engine (bench/train_step.c, packed pairs and separate
// sequences) against PyTorch eager fp32 (bench/train_peer.py), in the same run. Prints a table
// and writes bench/results/train.json.
//   node --import tsx bench/train.ts [--steps N] [--threads N] [--pairs N] [--prompt N] [--response N]
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { execa } from 'execa';
import { writeJsonAtomic } from '../lib/atomic.ts';
import { linkWithEngine, repoRoot } from '../test/parity/link.ts';

interface EngineRun {
  mode: string;
  step_s: number;
  best_step_s: number;
  tokens_per_s: number;
  gflops: number;
  sgemm_gflops: number;
  loss: number;
  threads: number;
}
interface PeerRun {
  step_s: number;
  best_step_s: number;
  tokens_per_s: number;
  loss: number;
  threads: number;
  attn_implementation: string;
  torch: string;
}

function positiveInt(name: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1)
    throw new Error(`bench:train: --${name} must be a positive integer, got "${value}"`);
  return n;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      steps: { type: 'string' },
      threads: { type: 'string' },
      pairs: { type: 'string' },
      prompt: { type: 'string' },
      response: { type: 'string' },
    },
  });
  const steps = positiveInt('steps', values.steps, 2);
  const threads = positiveInt('threads', values.threads, 2);
  const PAIRS = positiveInt('pairs', values.pairs, 4);
  const PROMPT = positiveInt('prompt', values.prompt, 128);
  const RESPONSE = positiveInt('response', values.response, 128);
  if (PROMPT + RESPONSE > 1024)
    throw new Error('bench:train: --prompt + --response must be <= 1024 (n_positions)');
  const env = {
    OMP_NUM_THREADS: String(threads),
    MKL_NUM_THREADS: String(threads),
    OPENBLAS_NUM_THREADS: String(threads),
  };
  const dir = await mkdtemp(path.join(tmpdir(), 'opsr-bench-train-'));
  try {
    const exe = await linkWithEngine(
      path.join(repoRoot, 'bench/train_step.c'),
      path.join(dir, 'train_step'),
    );
    const shape = [String(PAIRS), String(PROMPT), String(RESPONSE), String(steps)];
    const engine: Record<string, EngineRun> = {};
    for (const mode of ['pairs', 'separate']) {
      const { stdout } = await execa(exe, [mode, ...shape], { env });
      engine[mode] = JSON.parse(stdout) as EngineRun;
    }
    const { stdout } = await execa(
      path.join(repoRoot, '.venv/bin/python'),
      [path.join(repoRoot, 'bench/train_peer.py'), ...shape, String(threads)],
      { env },
    );
    const peer = JSON.parse(stdout) as PeerRun;
    const main = engine.pairs;
    const result = {
      shape: {
        model: 'gpt2-124M (V 50257, P 1024, L 12, C 768, NH 12)',
        pairs: PAIRS,
        prompt_tokens: PROMPT,
        response_tokens: RESPONSE,
        threads,
        timed_steps: steps,
      },
      engine_tokens_per_s: main.tokens_per_s,
      pytorch_tokens_per_s: peer.tokens_per_s,
      ratio: main.tokens_per_s / peer.tokens_per_s,
      engine_gflops: main.gflops,
      sgemm_gflops: main.sgemm_gflops,
      engine_step_s: main.step_s,
      pytorch_step_s: peer.step_s,
      engine_separate_tokens_per_s: engine.separate.tokens_per_s,
      ratio_separate: engine.separate.tokens_per_s / peer.tokens_per_s,
      pytorch: { version: peer.torch, attn_implementation: peer.attn_implementation },
      measured_at: new Date().toISOString(),
    };
    const row = (name: string, s: number, tps: number) =>
      console.log(
        `${name.padEnd(34)} ${s.toFixed(2).padStart(8)} s  ${tps.toFixed(1).padStart(8)} tokens/s`,
      );
    console.log(
      `DPO step, GPT-2 124M, ${PAIRS} pairs x (${PROMPT} + ${RESPONSE}) tokens, ${threads} threads, mean of ${steps} steps`,
    );
    row('engine (shared prompts)', main.step_s, main.tokens_per_s);
    row('engine (separate sequences)', engine.separate.step_s, engine.separate.tokens_per_s);
    row(`pytorch ${peer.torch} eager fp32`, peer.step_s, peer.tokens_per_s);
    console.log(
      `ratio ${result.ratio.toFixed(2)} (separate: ${result.ratio_separate.toFixed(2)}); engine ${main.gflops.toFixed(1)} GFLOP/s, sgemm ${main.sgemm_gflops.toFixed(1)} GFLOP/s`,
    );
    const out = path.join(repoRoot, 'bench/results/train.json');
    await writeJsonAtomic(out, result);
    console.log(`wrote ${path.relative(process.cwd(), out)}`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
