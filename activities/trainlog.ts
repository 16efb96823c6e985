// The trainer's per-step metrics where practitioners look: the engine's own JSON lines teed to
// OUT/metrics.jsonl and to a TensorBoard event file with the Hugging Face Trainer's tags
// (`train/loss`, `train/rewards/margins`, ...). A resumed attempt keeps the lines up to the
// checkpoint it resumes from, so neither file shows a step twice.
import { appendFile, readFile } from 'node:fs/promises';
import { writeFileAtomic } from '../lib/atomic.ts';
import { ScalarLog, type ScalarStep } from '../lib/tensorboard.ts';

// The engine's step line as TensorBoard scalars: every number except the counters.
function stepScalars(e: Record<string, unknown>): ScalarStep {
  const scalars: Record<string, number> = {};
  for (const [k, v] of Object.entries(e)) {
    if (typeof v === 'number' && k !== 'step' && k !== 'total_steps') scalars[`train/${k}`] = v;
  }
  return { step: Number(e.step), scalars };
}

export class TrainLog {
  private tb: ScalarLog | null = null;
  private chain: Promise<void> = Promise.resolve();
  private failure: Error | null = null;

  constructor(
    private readonly jsonlFile: string,
    private readonly tensorboardDir: string,
  ) {}

  // Called with every engine event line, in order; the writes queue behind each other.
  onEvent(line: string, e: Record<string, unknown>): void {
    if (e.event === 'start')
      this.queue(() => this.start(e.resumed_from === null ? 0 : Number(e.resumed_from)));
    else if (e.event === 'step') this.queue(() => this.step(line, e));
  }

  // Waits for the queued writes; a failed write fails the attempt (Temporal retries it).
  async flush(): Promise<void> {
    await this.chain;
    if (this.failure) throw this.failure;
  }

  private queue(write: () => Promise<void>): void {
    this.chain = this.chain.then(write).catch((err: unknown) => {
      this.failure ??= err instanceof Error ? err : new Error(String(err));
    });
  }

  private async start(resumedFrom: number): Promise<void> {
    const old = await readFile(this.jsonlFile, 'utf8').catch(() => '');
    const kept = old
      .split('\n')
      .filter((l) => l.trim() !== '')
      .map((l) => ({ l, e: JSON.parse(l) as Record<string, unknown> }))
      .filter(({ e }) => Number(e.step) <= resumedFrom);
    await writeFileAtomic(this.jsonlFile, kept.map(({ l }) => `${l}\n`).join(''));
    this.tb = await ScalarLog.open(
      this.tensorboardDir,
      kept.map(({ e }) => stepScalars(e)),
    );
  }

  private async step(line: string, e: Record<string, unknown>): Promise<void> {
    await appendFile(this.jsonlFile, `${line}\n`);
    await this.tb?.add(stepScalars(e));
  }
}
