// opsr report ID: rebuilds a run's or a study's report.md, report.html, figures/ (and a run's
// per-round TensorBoard scalars) from its report.json; no Temporal server needed.
import { readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { writeRunReportFiles } from '../report/run.ts';
import { studyDir, writeStudyReportFiles } from '../report/study.ts';
import type { AblationResult, RunResult } from '../contracts/workflows.ts';
import { EXIT, UsageError, guard, parseFlags } from './common.ts';

const USAGE = `Usage: opsr report ID [--storage DIR]

Rebuilds report.md, report.html (figures inline) and figures/*.svg of run ID from
DIR/runs/ID/report.json, or of ablation study ID from DIR/studies/ID/report.json.
DIR defaults to .opsr (the storage root of the presets).`;

export async function main(argv: string[]): Promise<number> {
  return guard(async () => {
    const { values, positionals } = parseFlags(argv, { storage: { type: 'string' } }, USAGE, 1);
    const id = positionals[0];
    if (!id) throw new UsageError(`the run or study ID is required\n\n${USAGE}`);
    const storage = resolve(values.storage ?? '.opsr');
    const runJson = join(storage, 'runs', id, 'report.json');
    const studyJson = join(studyDir(storage, id), 'report.json');
    const run = await readFile(runJson, 'utf8').catch(() => null);
    if (run !== null) {
      const r = await writeRunReportFiles(join(storage, 'runs', id), JSON.parse(run) as RunResult);
      process.stdout.write(
        `run ${id}: ${r.html}\n  ${r.markdown}\n  ${r.figures.length} figures, ` +
          `TensorBoard ${r.tensorboard}\n`,
      );
      return EXIT.ok;
    }
    const study = await readFile(studyJson, 'utf8').catch(() => null);
    if (study !== null) {
      const r = await writeStudyReportFiles(storage, JSON.parse(study) as AblationResult, null);
      process.stdout.write(`study ${id}: ${r.html}\n  ${r.markdown}\n`);
      return EXIT.ok;
    }
    process.stderr.write(
      `opsr: no report for "${id}": neither ${runJson} nor ${studyJson} exists ` +
        `(the run or study has not finished, or --storage is not its storage root)\n`,
    );
    return EXIT.failed;
  });
}
