// Replays every committed fuzz input (engine/fuzz/corpus/NAME seeds and
// engine/fuzz/regressions/NAME, the crashes fuzzing found) through the fuzz targets built with gcc
// and ASan/UBSan: each must run to the end with no sanitizer report. `make -C engine fuzz` (clang)
// does the fuzzing itself.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { REPO } from '../helpers/tiny-gpt2.ts';

const FUZZ = join(REPO, 'engine', 'fuzz');
const TARGETS = ['json', 'safetensors', 'data', 'serve'];
const inputs = (dir: string) =>
  existsSync(dir) ? readdirSync(dir).filter((f) => !f.startsWith('.')).length : 0;

test('every committed fuzz seed and regression input replays cleanly under ASan/UBSan', () => {
  const r = spawnSync('make', ['-s', '-C', join(REPO, 'engine'), 'fuzz-replay'], {
    encoding: 'utf8',
    timeout: 600_000,
  });
  const log = `${r.stdout}\n${r.stderr}`;
  assert.equal(r.status, 0, log.slice(-4000));
  assert.doesNotMatch(log, /AddressSanitizer|runtime error|LeakSanitizer/);
  const counts = [...log.matchAll(/replayed (\d+) inputs/g)].map((m) => Number(m[1]));
  assert.deepEqual(
    counts,
    TARGETS.map((t) => inputs(join(FUZZ, 'corpus', t)) + inputs(join(FUZZ, 'regressions', t))),
  );
  for (const t of TARGETS) assert.ok(inputs(join(FUZZ, 'corpus', t)) >= 2, `${t}: a seed corpus`);
});
