// The real vLLM (the CPU build scripts/setup.sh installs into .venv-vllm) for tests: how opsr's
// managed-vllm lifecycle starts it, a raw greedy request that returns token ids and log-probs,
// and the process tree a server leaves (to prove none is orphaned).
import { readFileSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';

const REPO = join(import.meta.dirname, '..', '..');
const VLLM_PYTHON = join(REPO, '.venv-vllm', 'bin', 'python');

// sampling.vllm for the CPU build: its `vllm` command is broken, both cores, a small KV cache,
// fp32 so its log-probs compare with the engine's, eager (torch.compile adds minutes to a start).
export function cpuVllm(port: number, args: string[] = []) {
  return {
    executable: VLLM_PYTHON,
    module: 'vllm.entrypoints.openai.api_server',
    host: '127.0.0.1',
    port,
    env: {
      VLLM_CPU_KVCACHE_SPACE: '1',
      VLLM_CPU_OMP_THREADS_BIND: '0-1',
      VLLM_CPU_NUM_OF_RESERVED_CPU: '0',
    },
    args: ['--dtype', 'float32', '--max-model-len', '256', '--enforce-eager', ...args],
    startupTimeoutS: 600,
  };
}

export async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as { port: number }).port;
  await new Promise((r) => srv.close(r));
  return port;
}

/** Greedy completion of token-id prompts: the generated ids and their log-probs. */
export async function greedy(baseURL: string, model: string, prompt: number[], maxTokens: number) {
  const res = await fetch(`${baseURL}/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      model,
      prompt,
      max_tokens: maxTokens,
      temperature: 0,
      logprobs: 0,
      ignore_eos: true,
      return_tokens_as_token_ids: true,
    }),
  });
  if (!res.ok) throw new Error(`greedy: HTTP ${res.status}: ${await res.text()}`);
  type Logprobs = { tokens: string[]; token_logprobs: number[] };
  const lp = ((await res.json()) as { choices: { logprobs: Logprobs }[] }).choices[0].logprobs;
  const tokens = lp.tokens.map((t) => Number(t.replace(/^token_id:/, '')));
  return { tokens, logprobs: lp.token_logprobs };
}

/** pid and every descendant of pid that runs now (from /proc). */
export async function processTree(pid: number): Promise<number[]> {
  const parent = new Map<number, number>();
  for (const d of await readdir('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    const stat = await readFile(`/proc/${d}/stat`, 'utf8').catch(() => '');
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    if (stat) parent.set(Number(d), ppid);
  }
  const out = [pid];
  for (let i = 0; i < out.length; i++) for (const [c, p] of parent) if (p === out[i]) out.push(c);
  return out.filter((p) => parent.has(p));
}

// Running: a zombie (dead, not yet reaped by whoever adopted it) does not count.
export const alive = (pid: number) => {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
};

/** Waits until none of pids runs; returns those still running after limitMs. */
export async function waitGone(pids: number[], limitMs: number): Promise<number[]> {
  for (const deadline = Date.now() + limitMs; Date.now() < deadline;) {
    if (!pids.some(alive)) return [];
    await new Promise((r) => setTimeout(r, 200));
  }
  return pids.filter(alive);
}
