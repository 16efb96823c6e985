// npm run bench:generate: output tokens/s for P prompts x N new tokens on a GPT-2 124M-shaped
// random model — the engine alone (fp32, and bf16 on AMX where available), transformers' generate
// on the same weights (fp32 CPU, same batch) and the embedded HTTP server (fp32) through the
// openai client — then a table and bench/results/generate.json.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import OpenAI from 'openai';
import { EngineProcess, DEFAULT_ENGINE_PATH, engineEnv, type EngineDtype } from '../server/engine-supervisor.ts';
import { startServer } from '../server/index.ts';
import { writeJsonAtomic } from '../lib/atomic.ts';
import { writeTinyTokenizer } from '../test/helpers/tiny-tokenizer.ts';

const REPO = join(import.meta.dirname, '..');
const PYTHON = join(REPO, '.venv', 'bin', 'python');
const PEER = join(REPO, 'bench', 'generate_peer.py');

const { values } = parseArgs({
  options: {
    prompts: { type: 'string', default: '64' }, 'new-tokens': { type: 'string', default: '128' },
    'prompt-len': { type: 'string', default: '32' }, threads: { type: 'string', default: '2' },
    concurrency: { type: 'string', default: '16' }, model: { type: 'string' }, 'skip-transformers': { type: 'boolean', default: false },
  },
});
const P = Number(values.prompts), N = Number(values['new-tokens']), L = Number(values['prompt-len']);
const threads = Number(values.threads), concurrency = Number(values.concurrency);
if (P % concurrency !== 0) throw new Error(`--prompts (${P}) must be a multiple of --concurrency (${concurrency})`);

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
const prompts = Array.from({ length: P }, (_, i) => Array.from({ length: L }, (_, k) => (i * 7919 + k * 104729) % 50000));

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
    await Promise.all(prompts.map((prompt, i) => new Promise<void>((resolve, reject) => {
      engine.generate({ prompt, maxTokens: N, temperature: 1, topP: 1, topK: 0, seed: i, stopTokenIds: [], logprobs: false, topLogprobs: 0 }, {
        onToken: () => tokens++, onDone: () => resolve(), onError: reject,
      });
    })));
    const seconds = (performance.now() - start) / 1000;
    if (tokens !== P * N) throw new Error(`engine produced ${tokens} tokens, expected ${P * N}`);
    return tokens / seconds;
  } finally {
    await engine.stop();
  }
}

// Concurrency C clients, each sending P/C prompts in one request (a prompt list), so the engine
// batch is as wide as in engineAlone.
async function server(): Promise<number> {
  const srv = await startServer({ modelDir, threads, maxBatch: P, log: () => {} });
  try {
    const client = new OpenAI({ baseURL: srv.url, apiKey: 'EMPTY', maxRetries: 0, timeout: 3_600_000 });
    const per = P / concurrency;
    const start = performance.now();
    const results = await Promise.all(Array.from({ length: concurrency }, (_, c) =>
      client.completions.create({
        model: 'opsr-bench-gpt2-124m', prompt: prompts.slice(c * per, (c + 1) * per), max_tokens: N, temperature: 1, seed: c, ignore_eos: true,
      } as OpenAI.CompletionCreateParamsNonStreaming)));
    const seconds = (performance.now() - start) / 1000;
    const tokens = results.reduce((a, r) => a + r.usage!.completion_tokens, 0);
    if (tokens !== P * N) throw new Error(`server produced ${tokens} tokens, expected ${P * N}`);
    return tokens / seconds;
  } finally {
    await srv.close();
  }
}

async function transformers(): Promise<number> {
  const spec = join(tmpdir(), `opsr-bench-gen-${process.pid}.json`);
  await writeFile(spec, JSON.stringify({ prompts, new_tokens: N, threads }));
  try {
    // The peer runs as users run it (PyTorch's own OpenMP defaults), on a quiet machine.
    const out = execFileSync(PYTHON, [PEER, 'generate', modelDir, spec], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
    const r = JSON.parse(out.trim().split('\n').pop()!) as { seconds: number; tokens: number };
    if (r.tokens !== P * N) throw new Error(`transformers produced ${r.tokens} tokens, expected ${P * N}`);
    return r.tokens / r.seconds;
  } finally {
    await rm(spec, { force: true });
  }
}

const engine_tokens_per_s = (await engineAlone('fp32'))!;
console.error(`engine fp32: ${engine_tokens_per_s.toFixed(1)} tokens/s`);
const engine_bf16_tokens_per_s = await engineAlone('bf16');
console.error(`engine bf16: ${engine_bf16_tokens_per_s === null ? 'no AMX' : engine_bf16_tokens_per_s.toFixed(1)} tokens/s`);
const server_tokens_per_s = await server();
console.error(`server: ${server_tokens_per_s.toFixed(1)} tokens/s`);
const transformers_tokens_per_s = values['skip-transformers'] ? null : await transformers();
const ratio = transformers_tokens_per_s ? engine_tokens_per_s / transformers_tokens_per_s : null;
const ratio_bf16 = transformers_tokens_per_s && engine_bf16_tokens_per_s ? engine_bf16_tokens_per_s / transformers_tokens_per_s : null;
const result = {
  engine_tokens_per_s, transformers_tokens_per_s, ratio, server_tokens_per_s, engine_bf16_tokens_per_s, ratio_bf16,
  server_vs_engine: server_tokens_per_s / engine_tokens_per_s,
  setup: { engine_env: { OMP_WAIT_POLICY: engineEnv().OMP_WAIT_POLICY }, peer_env: 'defaults', prompts: P, prompt_tokens: L, new_tokens: N, threads, http_concurrency: concurrency, model: 'GPT-2 124M shape, random, fp32', engine: DEFAULT_ENGINE_PATH },
};
const f = (x: number | null) => (x === null ? 'skipped' : x.toFixed(1));
console.log(`\n${P} prompts x ${N} new tokens, ${threads} threads, GPT-2 124M shape (fp32)`);
console.log('| path | output tokens/s |\n|---|---|');
console.log(`| opsr-engine serve fp32 (batch ${P}) | ${f(engine_tokens_per_s)} |`);
console.log(`| opsr-engine serve bf16 AMX (batch ${P}) | ${engine_bf16_tokens_per_s === null ? 'no AMX' : f(engine_bf16_tokens_per_s)} |`);
console.log(`| transformers generate (batch ${P}) | ${f(transformers_tokens_per_s)} |`);
console.log(`| HTTP server fp32, openai client, concurrency ${concurrency} | ${f(server_tokens_per_s)} |`);
const x = (r: number | null) => (r === null ? 'n/a' : `${r.toFixed(2)}x`);
console.log(`engine / transformers: fp32 ${x(ratio)}, bf16 ${x(ratio_bf16)} (target >= 3); HTTP / engine (fp32): ${(100 * result.server_vs_engine).toFixed(1)}% (target >= 90%)`);
await writeJsonAtomic(join(REPO, 'bench', 'results', 'generate.json'), result);
