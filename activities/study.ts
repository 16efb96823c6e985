// Ablation studies: a finished arm-seed run found on disk is reused instead of run again, and the
// study's report and history line are written on the control queue (report/study.ts).
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseRunConfig } from '../config/schema.ts';
import { hashJson } from '../lib/hash.ts';
import { LC_NOTE, readAnnotations } from './evaluate-judged.ts';
import {
  type Annotation,
  jointDifficulty,
  LC_MIN_INSTRUCTIONS,
  lengthControlledWinRate,
} from '../lib/winrate.ts';
import { writeStudyReportFiles } from '../report/study.ts';
import { runKey, summarizeStudy, type StudyLc } from '../report/summary.ts';
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

// The summary's LC win rates refitted over every evaluated policy of every arm and seed (the base
// of each run and each round's policy), so instruction difficulty is estimated from them all.
export async function writeStudyReport(
  input: WriteStudyReportInput,
): Promise<WriteStudyReportResult> {
  const runs = input.result.arms.map((a) => ({
    name: a.name,
    seed: a.seed ?? null,
    result: a.result,
  }));
  const summary = summarizeStudy(runs, (await studyLc(runs)) ?? undefined);
  const result = { ...input.result, summary };
  return { ...(await writeStudyReportFiles(input.storage, result, input.finishedAt)), summary };
}

async function studyLc(
  runs: { name: string; seed: number | null; result: RunResult }[],
): Promise<StudyLc | null> {
  const rows = runs.flatMap((r) => (r.result.judged ?? []).map((j) => ({ r, j })));
  const set = rows.find(({ j }) => j.kind === 'pairwise')?.j.set;
  if (set === undefined) return null;
  const anns = new Map<string, Annotation[]>();
  for (const { r, j } of rows) {
    if (j.set !== set) continue;
    const round = j.label === 'base' ? 0 : Number(/^round-(\d+)$/.exec(j.label)?.[1] ?? NaN);
    if (!Number.isInteger(round)) continue;
    const file = join(r.result.runDir, 'eval', j.label, `${set}.jsonl`);
    const a = await readAnnotations(file);
    if (a.length >= LC_MIN_INSTRUCTIONS) anns.set(runKey(r.name, r.seed, round), a);
  }
  if (anns.size === 0) return null;
  const joint = anns.size >= 2 ? jointDifficulty(anns) : undefined;
  const byRun: StudyLc['byRun'] = new Map();
  for (const [key, a] of anns) {
    const lc = lengthControlledWinRate(a, joint);
    byRun.set(key, { lc: lc.lcWinRate, se: lc.lcStandardError });
  }
  return { variant: joint ? LC_NOTE.study : LC_NOTE.minimal, byRun };
}
