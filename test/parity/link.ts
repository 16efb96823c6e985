// Builds a small C program against the engine's objects (all but main.o), as `make test` does
// for engine/tests: the parity dump (test/engine/parity.test.ts) and the training benchmark.
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const BLAS_INC = '/usr/include/x86_64-linux-gnu/openblas-openmp';
const BLAS_LIB = '/usr/lib/x86_64-linux-gnu/openblas-openmp';

/** Runs `make -C engine`, then compiles `source` into `exe` linked with the engine's objects. */
export async function linkWithEngine(source: string, exe: string): Promise<string> {
  await execa('make', ['-s', '-C', path.join(repoRoot, 'engine')]);
  // The objects of today's sources (as the Makefile's OBJ): a build directory can keep objects
  // of files since moved (src/packed.c -> src/cpu/packed.c), which would be defined twice.
  const src = path.join(repoRoot, 'engine/src');
  const objs = [];
  for (const dir of ['', 'cpu']) {
    for (const f of await readdir(path.join(src, dir))) {
      if (f.endsWith('.c') && f !== 'main.c')
        objs.push(path.join(repoRoot, 'engine/build/obj', dir, f.replace(/\.c$/, '.o')));
    }
  }
  await execa('gcc', [
    '-std=c11',
    '-D_GNU_SOURCE',
    '-O3',
    '-march=native',
    '-fopenmp',
    `-I${BLAS_INC}`,
    `-I${path.join(repoRoot, 'engine/src')}`,
    source,
    ...objs,
    `-L${BLAS_LIB}`,
    `-Wl,-rpath,${BLAS_LIB}`,
    '-lopenblas',
    '-lm',
    '-o',
    exe,
  ]);
  return exe;
}
