// Prompt sets: JSONL records with "prompt" (a string) or "messages" (a chat ending in a user
// turn), optionally shuffled by seed and cut to a limit. Index = position after shuffle and limit.
import { readJsonl } from '../lib/jsonl.ts';
import { readUserRecords, userRecordsProblem } from './records.ts';
import type { ChatMessage } from '../lib/tokenizer.ts';

// One line of the run's prompts.jsonl: a plain prompt or a chat.
export interface PromptItem {
  index: number;
  prompt?: string;
  messages?: ChatMessage[];
}

function checkPrompt(rec: unknown): string | null {
  if (!rec || typeof rec !== 'object' || Array.isArray(rec))
    return (
      'record must be a JSON object with "prompt" (string) or "messages" (list of {role, ' +
      'content})'
    );
  const r = rec as Record<string, unknown>;
  if (typeof r.prompt === 'string')
    return r.prompt.length > 0 ? null : '"prompt" must be a non-empty string';
  if (Array.isArray(r.messages)) {
    if (r.messages.length === 0) return '"messages" must not be empty';
    for (let i = 0; i < r.messages.length; i++) {
      const m = r.messages[i] as Record<string, unknown>;
      if (!m || typeof m.role !== 'string' || typeof m.content !== 'string')
        return `"messages[${i}]" must be {role: string, content: string}`;
    }
    if (!r.messages.some((m) => (m as ChatMessage).role === 'user'))
      return '"messages" must contain a "user" turn (the prefix goes in front of the last one)';
    return null;
  }
  return 'record needs "prompt" (string) or "messages" (list of {role, content})';
}

// Deterministic permutation (mulberry32 + Fisher-Yates) so a shuffle seed always gives the same
// order.
function seededShuffle<T>(items: T[], seed: number): T[] {
  let a = seed >>> 0;
  const rand = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const out = items.slice();
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

type PromptSpec = { file: string; limit?: number; shuffleSeed?: number };
type PromptRecord = { prompt?: string; messages?: ChatMessage[] };

export async function loadPrompts(spec: PromptSpec): Promise<PromptItem[]> {
  return promptItems(await readJsonl<PromptRecord>(spec.file, checkPrompt), spec);
}

function promptItems(all: PromptRecord[], spec: PromptSpec): PromptItem[] {
  let recs = all;
  if (spec.shuffleSeed !== undefined) recs = seededShuffle(recs, spec.shuffleSeed);
  if (spec.limit !== undefined) recs = recs.slice(0, spec.limit);
  return recs.map((r, index) =>
    typeof r.prompt === 'string'
      ? { index, prompt: r.prompt }
      : { index, messages: r.messages!.map((m) => ({ role: m.role, content: m.content })) },
  );
}

// loadPrompts for a config field: a missing file, a bad line or no prompts is bad input (not
// retried).
export async function loadPromptsFor(field: string, spec: PromptSpec): Promise<PromptItem[]> {
  return promptItems(await readUserRecords(field, spec.file, checkPrompt, 'prompts'), spec);
}

// The same read for the checks before a run starts: the problem, or null.
export const promptsProblem = (field: string, file: string) =>
  userRecordsProblem(field, file, checkPrompt);
