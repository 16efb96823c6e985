// Where the engine binary is and how every engine process is started (trainer and sampler alike).
import { join } from 'node:path';

export const DEFAULT_ENGINE_PATH = join(
  import.meta.dirname,
  '..',
  'engine',
  'build',
  'opsr-engine',
);

/**
 * Environment for engine processes: OpenMP threads spin briefly at barriers, then sleep
 * (GOMP_SPINCOUNT=10000, about a millisecond). libgomp's default spins some 300000 times: on a
 * shared or oversubscribed machine those spinning threads steal the cores the working ones need
 * (measured here: 5x slower generation, 10x slower training with 2 threads on a busy 2-core
 * machine). Sleeping at once (OMP_WAIT_POLICY=passive) pays a futex wake-up at each of a decode
 * step's several hundred parallel regions: SmolLM2 bf16 generation took 20.0 s that way against
 * 14.4 s with the short spin on a quiet machine, and about the same (11-13 s vs 10-12 s) next to
 * two busy processes. libgomp reads both at load, so they must be in the environment the process
 * starts with; a value the environment already sets for either wins.
 */
export function engineEnv(base: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  if (base.OMP_WAIT_POLICY !== undefined || base.GOMP_SPINCOUNT !== undefined) return { ...base };
  return { ...base, GOMP_SPINCOUNT: '10000' };
}
