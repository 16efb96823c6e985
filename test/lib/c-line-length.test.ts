// Every C/H source line of the engine and the benches fits engine/.clang-format's ColumnLimit.
// clang-format only touches the lines someone changes and eslint's max-len sees only TypeScript,
// so without this check long C lines creep back in.
import test from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const LIMIT = 120; // engine/.clang-format ColumnLimit
// The fuzz corpora are inputs, not sources; build/ holds generated output.
const SKIP = new Set(['corpus', 'regressions', 'build']);

function cFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    if (SKIP.has(e.name) || e.name.startsWith('.')) return [];
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return cFiles(p);
    return /\.[ch]$/.test(e.name) ? [p] : [];
  });
}

// "file:line: N columns" for each line over LIMIT; columns count code points, not UTF-8 bytes.
function overLong(file: string, text: string): string[] {
  return text.split('\n').flatMap((line, i) => {
    const cols = [...line.replace(/\r$/, '')].length;
    return cols > LIMIT ? [`${file}:${i + 1}: ${cols} columns`] : [];
  });
}

test('overLong() reports file:line of a line over 120 columns only', () => {
  const text = ['x'.repeat(120), 'é'.repeat(120), 'y'.repeat(121), ''].join('\n');
  assert.deepEqual(overLong('a.c', text), ['a.c:3: 121 columns']);
});

test('no C/H line under engine/ (fuzz corpora aside) or bench/ exceeds 120 columns', () => {
  const files = [...cFiles(path.join(ROOT, 'engine')), ...cFiles(path.join(ROOT, 'bench'))];
  // Guards against the walk silently finding nothing (e.g. after a move).
  for (const f of ['engine/src/main.c', 'engine/fuzz/fuzz_json.c', 'bench/train_step.c']) {
    assert.ok(files.includes(path.join(ROOT, f)), `${f} is checked`);
  }
  const long = files.flatMap((f) => overLong(path.relative(ROOT, f), readFileSync(f, 'utf8')));
  assert.deepEqual(long, []);
});
