// `npm run bench:train`: one DPO step (policy forward + backward on chosen and rejected,
// reference log-probs precomputed), 4 pairs of 128 prompt + 128 response tokens, 2 threads, for
// a GPT-2 124M-shaped model (random weights) and the real SmolLM2-135M-Instruct: the engine
// (bench/train_step.c, packed pairs and separate sequences) against PyTorch eager fp32
// (bench/train_peer.py; SmolLM2 with eager attention, the ratio's peer, and with sdpa), in the
// same run, with each process's peak RSS. Prints a table and writes bench/results/train.json
// (one entry per model; a run of one model keeps the other's last entry).
//   node --import tsx bench/train.ts [--model gpt2|smollm2|all] [--steps N] [--threads N]
//     [--pairs N] [--prompt N] [--response N]
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { execa } from 'execa';
import { defaultModelDir } from '../cli/models.ts';
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
  params: number;
  loaded_rss_mb: number;
  peak_rss_mb: number;
}
interface PeerRun {
  step_s: number;
  best_step_s: number;
  tokens_per_s: number;
  loss: number;
  threads: number;
  attn_implementation: string;
  torch: string;
  loaded_rss_mb: number;
  peak_rss_mb: number;
}
interface Bench {
  name: string;
  label: string;
  /** train_step's and train_peer's first argument: gpt2 (random weights) or an HF directory. */
  source: string;
  /** Attention implementations of the PyTorch rows; the first is the ratio's peer. */
  attn: string[];
  maxLen: number;
}

const BENCHES: Bench[] = [
  {
    name: 'gpt2',
    label: 'GPT-2 124M shape (V 50257, L 12, C 768, NH 12), random weights',
    source: 'gpt2',
    attn: ['sdpa'],
    maxLen: 1024,
  },
  {
    name: 'smollm2',
    label: 'SmolLM2-135M-Instruct (V 49152, L 30, C 576, NH 9, KVH 3, tied), real weights',
    source: defaultModelDir('smollm2-135m-instruct'),
    attn: ['eager', 'sdpa'],
    maxLen: 8192,
  },
];

function positiveInt(name: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1)
    throw new Error(`bench:train: --${name} must be a positive integer, got "${value}"`);
  return n;
}

async function readResults(file: string): Promise<Record<string, unknown>> {
  try {
    const old = JSON.parse(await readFile(file, 'utf8')) as Record<string, unknown>;
    // Entries are keyed by model name; a file from before that keying is replaced whole.
    return BENCHES.some((b) => typeof old[b.name] === 'object') ? old : {};
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return {};
    throw e;
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      model: { type: 'string' },
      steps: { type: 'string' },
      threads: { type: 'string' },
      pairs: { type: 'string' },
      prompt: { type: 'string' },
      response: { type: 'string' },
    },
  });
  const which = values.model ?? 'all';
  const benches = BENCHES.filter((b) => which === 'all' || which === b.name);
  if (benches.length === 0)
    throw new Error(`bench:train: --model must be gpt2, smollm2 or all, got "${which}"`);
  const steps = positiveInt('steps', values.steps, 2);
  const threads = positiveInt('threads', values.threads, 2);
  const PAIRS = positiveInt('pairs', values.pairs, 4);
  const PROMPT = positiveInt('prompt', values.prompt, 128);
  const RESPONSE = positiveInt('response', values.response, 128);
  for (const b of benches)
    if (PROMPT + RESPONSE > b.maxLen)
      throw new Error(`bench:train: --prompt + --response must be <= ${b.maxLen} for ${b.name}`);
  const env = {
    OMP_NUM_THREADS: String(threads),
    MKL_NUM_THREADS: String(threads),
    OPENBLAS_NUM_THREADS: String(threads),
    HF_HUB_OFFLINE: '1',
  };
  const out = path.join(repoRoot, 'bench/results/train.json');
  const results = await readResults(out);
  const dir = await mkdtemp(path.join(tmpdir(), 'opsr-bench-train-'));
  try {
    const exe = await linkWithEngine(
      path.join(repoRoot, 'bench/train_step.c'),
      path.join(dir, 'train_step'),
    );
    const shape = [String(PAIRS), String(PROMPT), String(RESPONSE), String(steps)];
    for (const b of benches) {
      // One-minute load average before the model's runs: above the thread count means the
      // numbers were measured under load.
      const load = loadavg()[0];
      const engine: Record<string, EngineRun> = {};
      for (const mode of ['pairs', 'separate']) {
        const { stdout } = await execa(exe, [b.source, mode, ...shape], { env });
        engine[mode] = JSON.parse(stdout) as EngineRun;
      }
      const peers: PeerRun[] = [];
      for (const attn of b.attn) {
        const args = [path.join(repoRoot, 'bench/train_peer.py'), b.source, ...shape];
        const { stdout } = await execa(
          path.join(repoRoot, '.venv/bin/python'),
          [...args, String(threads), attn],
          { env },
        );
        peers.push(JSON.parse(stdout) as PeerRun);
      }
      const main = engine.pairs;
      const peer = peers[0];
      const result = {
        shape: {
          model: b.label,
          params: main.params,
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
        engine_peak_rss_mb: main.peak_rss_mb,
        engine_separate_peak_rss_mb: engine.separate.peak_rss_mb,
        pytorch_peak_rss_mb: peer.peak_rss_mb,
        engine_loaded_rss_mb: main.loaded_rss_mb,
        pytorch_loaded_rss_mb: peer.loaded_rss_mb,
        pytorch: { version: peer.torch, attn_implementation: peer.attn_implementation },
        peers: peers.map((p) => ({
          attn_implementation: p.attn_implementation,
          step_s: p.step_s,
          tokens_per_s: p.tokens_per_s,
          ratio: main.tokens_per_s / p.tokens_per_s,
          peak_rss_mb: p.peak_rss_mb,
        })),
        load_average_1m: load,
        measured_at: new Date().toISOString(),
      };
      results[b.name] = result;
      const row = (name: string, s: number, tps: number, rss: number) =>
        console.log(
          `${name.padEnd(34)} ${s.toFixed(2).padStart(8)} s  ${tps.toFixed(1).padStart(8)} ` +
            `tokens/s  ${rss.toFixed(0).padStart(6)} MiB peak RSS`,
        );
      console.log(
        `DPO step, ${b.label}, ${PAIRS} pairs x (${PROMPT} + ${RESPONSE}) tokens, ` +
          `${threads} threads, mean of ${steps} steps, load average ${load.toFixed(2)}`,
      );
      row('engine (shared prompts)', main.step_s, main.tokens_per_s, main.peak_rss_mb);
      row(
        'engine (separate sequences)',
        engine.separate.step_s,
        engine.separate.tokens_per_s,
        engine.separate.peak_rss_mb,
      );
      for (const p of peers)
        row(
          `pytorch ${p.torch} eager fp32, ${p.attn_implementation}`,
          p.step_s,
          p.tokens_per_s,
          p.peak_rss_mb,
        );
      console.log(
        `ratio ${result.ratio.toFixed(2)} (separate: ${result.ratio_separate.toFixed(2)}); ` +
          `engine ${main.gflops.toFixed(1)} GFLOP/s, sgemm ${main.sgemm_gflops.toFixed(1)} GFLOP/s`,
      );
      // Written after each model: a later model's failure keeps the earlier rows.
      await writeJsonAtomic(out, results);
    }
    console.log(`wrote ${path.relative(process.cwd(), out)}`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
