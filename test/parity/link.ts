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
  const objDir = path.join(repoRoot, 'engine/build/obj');
  const objs = [
    ...(await readdir(objDir))
      .filter((f) => f.endsWith('.o') && f !== 'main.o')
      .map((f) => path.join(objDir, f)),
    ...(await readdir(path.join(objDir, 'cpu')))
      .filter((f) => f.endsWith('.o'))
      .map((f) => path.join(objDir, 'cpu', f)),
  ];
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
