// Sampling edge cases of `opsr-engine serve`, run under the AddressSanitizer build so an
// out-of-bounds read fails the test: more top log-probs than the vocabulary, a top_p so small that
// the nucleus would be empty, a temperature so small that logits / T overflow, and a last request
// line without its newline.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeTinyModel, REPO } from '../helpers/tiny-gpt2.ts';

const ASAN = join(REPO, 'engine', 'build', 'opsr-engine-asan');
let dir: string;
let model: string;
let small: string; // a vocabulary smaller than the 20 top log-probs a request may ask for

before(async () => {
  execFileSync('make', ['-s', '-C', join(REPO, 'engine'), 'build/opsr-engine-asan'], {
    stdio: 'inherit',
  });
  dir = await mkdtemp(join(tmpdir(), 'opsr-gen-edges-'));
  model = join(dir, 'model');
  await makeTinyModel(model, { nPositions: 32 });
  small = join(dir, 'small');
  const cfg = join(dir, 'small.json');
  await writeFile(
    cfg,
    JSON.stringify({ vocab_size: 8, n_positions: 32, n_embd: 16, n_layer: 1, n_head: 2 }),
  );
  execFileSync(
    join(REPO, 'engine', 'build', 'opsr-engine'),
    ['init', '--config', cfg, '--out', small, '--seed', '1'],
    { stdio: 'ignore' },
  );
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

// Runs serve on the given stdin text; returns its JSON events (the ready line first).
function serve(input: string, modelDir = model): Record<string, unknown>[] {
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

// One `generate` line of the serve protocol.
const generate = (fields: Record<string, unknown>) =>
  `${JSON.stringify({ op: 'generate', ...fields })}\n`;

const tokensOf = (events: Record<string, unknown>[], id: number) =>
  events.filter((e) => e.event === 'token' && e.id === id).map((e) => e.token as number);

test('top_logprobs beyond the vocabulary is refused, naming the bound', () => {
  const line = (id: number, k: number) =>
    generate({ id, prompt: [1, 2], logprobs: true, top_logprobs: k, max_tokens: 2 });
  const events = serve(line(1, 20) + line(2, 8), small);
  assert.equal(events[0].vocab_size, 8);
  const err = events.find((e) => e.event === 'error' && e.id === 1);
  assert.ok(err, 'an error event for 20 top log-probs of 8 tokens');
  assert.match(String(err.message), /top_logprobs must be in \[0, 8\]/);
  const tops = events
    .filter((e) => e.event === 'token' && e.id === 2)
    .map((e) => e.top_logprobs as unknown[]);
  assert.equal(tops.length, 2);
  for (const t of tops) assert.equal(t.length, 8);
});

test('a tiny top_p keeps the most likely token; a tiny temperature is greedy', () => {
  const greedy = serve(generate({ id: 1, prompt: [1, 2, 3], temperature: 0, max_tokens: 6 }));
  const expected = tokensOf(greedy, 1);
  assert.equal(expected.length, 6);
  for (const params of [
    { top_p: 1e-6 },
    { temperature: 1e-40 },
    { temperature: 1e-40, top_k: 2, top_p: 0.1 },
  ]) {
    const events = serve(generate({ id: 2, prompt: [1, 2, 3], max_tokens: 6, seed: 7, ...params }));
    assert.deepEqual(tokensOf(events, 2), expected, JSON.stringify(params));
  }
});

test('a last request line without a newline is still answered', () => {
  const events = serve(JSON.stringify({ op: 'generate', id: 3, prompt: [1, 2], max_tokens: 2 }));
  const done = events.find((e) => e.event === 'done' && e.id === 3);
  assert.ok(done, 'a done event for the unterminated line');
  assert.equal(done.completion_tokens, 2);
});
