// The line shape of samples.jsonl and pairs.jsonl (the kept samples).
import type { ChatMessage } from '../lib/tokenizer.ts';

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
