// Writes the demo task's data and tokenizer files, each atomically.
import { join } from 'node:path';
import { mkdir } from 'node:fs/promises';
import { writeFileAtomic } from '../lib/atomic.ts';
import { writeJsonlAtomic } from '../lib/jsonl.ts';
import { promptRecords, sftRecords, type DigitsDataSpec } from './seed.ts';
import { tokenizerFiles } from './tokenizer.ts';

export interface DigitsDataFiles {
  sft: string;
  prompts: string;
  heldout: string;
}

export async function writeDigitsData(dir: string, spec: DigitsDataSpec): Promise<DigitsDataFiles> {
  await mkdir(dir, { recursive: true });
  const files = { sft: join(dir, 'sft.jsonl'), prompts: join(dir, 'prompts.jsonl'), heldout: join(dir, 'heldout.jsonl') };
  await writeJsonlAtomic(files.sft, sftRecords(spec));
  await writeJsonlAtomic(files.prompts, promptRecords('train', spec.trainPrompts, spec));
  await writeJsonlAtomic(files.heldout, promptRecords('heldout', spec.heldoutPrompts, spec));
  return files;
}

// Puts the tokenizer files into a model directory (created if missing).
export async function writeTokenizer(dir: string, maxLength: number): Promise<void> {
  await mkdir(dir, { recursive: true });
  for (const [name, body] of Object.entries(tokenizerFiles(maxLength))) {
    await writeFileAtomic(join(dir, name), JSON.stringify(body, null, 2) + '\n');
  }
}
