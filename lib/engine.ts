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
 * Environment for engine processes: OpenMP threads sleep at barriers instead of spinning
 * (OMP_WAIT_POLICY=passive). On a shared or oversubscribed machine spinning threads steal the
 * cores the working ones need (measured here: 5x slower generation, 10x slower training with
 * 2 threads on a busy 2-core machine). libgomp reads it at load, so it must be in the
 * environment the process starts with. A value already set wins.
 */
export function engineEnv(base: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  return { ...base, OMP_WAIT_POLICY: base.OMP_WAIT_POLICY ?? 'passive' };
}
