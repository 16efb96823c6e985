// opsr eval --model DIR --config FILE: the config's judge-based evaluations (evals.sets, judged
// by its judges) of one model, in this process and without Temporal: the same code the run's
// evaluation activities use, with the same verdict cache, so a repeated evaluation is free.
import { basename, join, resolve } from 'node:path';
import { loadRunConfig } from '../activities/load-config.ts';
import { judgedSummary, runJudgedEval } from '../activities/evaluate-judged.ts';
import { SamplerPool } from '../activities/sampler-pool.ts';
import { writeJsonAtomic } from '../lib/atomic.ts';
import type { JudgedEvalResult, JudgedSummaryRow } from '../contracts/activities.ts';
import { EXIT, UsageError, guard, parseFlags } from './common.ts';

const USAGE = `Usage: opsr eval --model DIR --config FILE [--label NAME] [--out DIR]

Runs every set of the config's "evals" on the model in DIR (served as the config's sampling
section says: embedded, external or managed-vllm) with the config's "judges", and prints win
rate, LC win rate (and which LC model gave it), order bias and grades. Results go to
OUT/eval/<label>/<set>.json (default OUT: <storage>/evals/<basename of DIR>, label "model");
judge verdicts are cached under <storage>/judge-cache.`;

export async function main(argv: string[]): Promise<number> {
  return guard(async () => {
    const { values } = parseFlags(
      argv,
      {
        model: { type: 'string' },
        config: { type: 'string' },
        label: { type: 'string' },
        out: { type: 'string' },
      },
      USAGE,
    );
    if (!values.model || !values.config)
      throw new UsageError(`--model DIR and --config FILE are required\n\n${USAGE}`);
    const config = await loadRunConfig(values.config);
    if (!config.evals)
      throw new UsageError(
        `${values.config}: has no "evals" (the sets to evaluate on)\n\n${USAGE}`,
      );
    const model = resolve(values.model);
    const runDir = values.out ?? join(config.storage, 'evals', basename(model));
    const label = values.label ?? 'model';
    const s = config.sampling;
    const endpoint = {
      lifecycle: s.lifecycle,
      baseURL: s.baseURL ?? '',
      model: s.model ?? 'opsr-policy',
      modelDir: model,
    };
    const results: JudgedEvalResult[] = [];
    const samplers = new SamplerPool();
    try {
      for (const set of config.evals.sets) {
        process.stderr.write(
          `opsr eval: ${set.name} (${set.kind}, judge ${set.judge}) on ${model}\n`,
        );
        results.push(
          await runJudgedEval(
            {
              runId: 'eval',
              label,
              runDir,
              cacheDir: join(config.storage, 'judge-cache'),
              endpoint,
              sampling: s,
              set,
              judgeName: set.judge,
              judge: config.judges[set.judge],
              notify: [],
            },
            { samplers },
          ),
        );
      }
    } catch (err) {
      process.stderr.write(`opsr eval: ${(err as Error).message}\n`);
      return EXIT.failed;
    } finally {
      await samplers.close();
    }
    const rows = await judgedSummary(results);
    await writeJsonAtomic(join(runDir, 'eval', label, 'summary.json'), rows);
    process.stdout.write(table(rows, results));
    return EXIT.ok;
  });
}

function table(rows: JudgedSummaryRow[], results: JudgedEvalResult[]): string {
  const f = (x: number | null, d = 3) => (x === null ? '-' : x.toFixed(d));
  const pm = (x: number | null, se: number | null) => (x === null ? '-' : `${f(x)} ± ${f(se)}`);
  const head = [
    'set',
    'kind',
    'win rate ± SE',
    'LC win rate ± SE',
    'LC model',
    'first position wins',
    'order flips',
    'grade',
    'unparsable',
    'judge tokens',
  ];
  const lines = [`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`];
  for (const r of rows) {
    const cells = [
      r.set,
      r.kind,
      pm(r.winRate, r.standardError),
      pm(r.lcWinRate, r.lcStandardError),
      r.lcVariant ?? '-',
      f(r.firstPositionWins),
      f(r.flipRate),
      f(r.mean, 2),
      String(r.unparsable),
      String(r.judgeTokens),
    ];
    lines.push(`| ${cells.join(' | ')} |`);
  }
  return `${lines.join('\n')}\n\nfiles: ${results.map((r) => r.file).join(', ')}\n`;
}
