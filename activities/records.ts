// The line shape of samples.jsonl and pairs.jsonl (the kept samples), and how the user's own
// record files (prompts, seed data, evaluation sets) are read.
import { ApplicationFailure } from '@temporalio/common';
import { JsonlError, readJsonl, type RecordCheck } from '../lib/jsonl.ts';
import type { ChatMessage } from '../lib/tokenizer.ts';
import { badInput } from './errors.ts';

export interface Answer {
  text: string;
  finish_reason: string;
  tokens: number;
  seed: number;
}

// One line of samples.jsonl (and, after filtering, of pairs.jsonl).
export interface SampleRecord {
  index: number;
  round: number;
  prompt?: string;
  messages?: ChatMessage[];
  chosen: Answer;
  rejected: Answer;
  chosenScore: number;
  rejectedScore: number;
  seed: number; // sampling.seed the per-request seeds derive from
}

// A user's JSONL file for a config field, every record checked. A file that cannot be read, a
// line that is not JSON or fails the check (named by file and line), or no records at all is
// the same on every attempt: bad input, never retried.
export async function readUserRecords<T>(
  field: string,
  file: string,
  check: RecordCheck,
  what = 'records',
): Promise<T[]> {
  let recs: T[];
  try {
    recs = await readJsonl<T>(file, check);
  } catch (err) {
    if (err instanceof JsonlError) throw badInput(`${field}: ${err.message}`);
    if (typeof (err as NodeJS.ErrnoException).code === 'string')
      throw badInput(`${field}: cannot read ${file} (${(err as Error).message})`);
    throw err;
  }
  if (recs.length === 0) throw badInput(`${field}: ${file} holds no ${what}`);
  return recs;
}

// The same read for the checks before a run starts: the problem, or null.
export const userRecordsProblem = (field: string, file: string, check: RecordCheck) =>
  readUserRecords(field, file, check).then(
    () => null,
    (err: unknown) => {
      if (err instanceof ApplicationFailure) return err.message;
      throw err;
    },
  );
