// The engine's C tests (engine/tests/*.c: gradient checks and unit tests), each built as its own
// program under AddressSanitizer and UBSan together with the sanitized engine, via `make test`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';

const ENGINE_DIR = join(import.meta.dirname, '..', '..', 'engine');

test('make -C engine test builds the sanitized engine and passes every C test', () => {
  const r = spawnSync('make', ['-s', '-C', ENGINE_DIR, 'test'], {
    encoding: 'utf8',
    maxBuffer: 64 << 20,
  });
  assert.equal(r.status, 0, `make test failed:\n${r.stdout}\n${r.stderr}`);
  assert.match(r.stdout, /engine tests passed \(\d+ programs\)/);
  assert.doesNotMatch(r.stdout + r.stderr, /FAILED|runtime error|AddressSanitizer/);
});
