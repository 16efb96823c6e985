// Ablation studies: a finished arm-seed run found on disk is reused instead of run again, and the
// study's report and history line are written on the control queue (report/study.ts).
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseRunConfig } from '../config/schema.ts';
import { hashJson } from '../lib/hash.ts';
import { writeStudyReportFiles } from '../report/study.ts';
import type { RunResult } from '../contracts/workflows.ts';
import type {
  FindFinishedRunInput,
  WriteStudyReportInput,
  WriteStudyReportResult,
} from '../contracts/activities.ts';

// The run's report.json when it finished all its rounds with this very config (prepareRun's hash).
export async function findFinishedRun(input: FindFinishedRunInput): Promise<RunResult | null> {
  const config = parseRunConfig(input.config, { source: 'findFinishedRun config' });
  const file = join(config.storage, 'runs', input.runId, 'report.json');
  const text = await readFile(file, 'utf8').catch(() => null);
  if (text === null) return null;
  const r = JSON.parse(text) as RunResult;
  const complete = !r.stopped && r.rounds.length === config.rounds;
  return complete && r.runId === input.runId && r.configHash === hashJson(config) ? r : null;
}

export async function writeStudyReport(
  input: WriteStudyReportInput,
): Promise<WriteStudyReportResult> {
  return writeStudyReportFiles(input.storage, input.result, input.finishedAt);
}
