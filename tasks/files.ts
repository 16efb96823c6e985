// Writes the demo task's data and tokenizer files, and the instruction prompts, each atomically.
import { join } from 'node:path';
import { mkdir } from 'node:fs/promises';
import { writeFileAtomic } from '../lib/atomic.ts';
import { writeJsonlAtomic } from '../lib/jsonl.ts';
import { instructionPrompts } from './instructions.ts';
import { promptRecords, sftRecords, type DigitsDataSpec } from './seed.ts';
import { tokenizerFiles } from './tokenizer.ts';

interface DigitsDataFiles {
  sft: string;
  prompts: string;
  heldout: string;
}

export async function writeDigitsData(dir: string, spec: DigitsDataSpec): Promise<DigitsDataFiles> {
  await mkdir(dir, { recursive: true });
  const files = {
    sft: join(dir, 'sft.jsonl'),
    prompts: join(dir, 'prompts.jsonl'),
    heldout: join(dir, 'heldout.jsonl'),
  };
  await writeJsonlAtomic(files.sft, sftRecords(spec));
  await writeJsonlAtomic(files.prompts, promptRecords('train', spec.trainPrompts, spec));
  await writeJsonlAtomic(files.heldout, promptRecords('heldout', spec.heldoutPrompts, spec));
  return files;
}

// The instruction prompts' two splits as prompt files ({"prompt", "category"} per line).
export const INSTRUCTION_FILES = {
  train: 'instructions-train.jsonl',
  heldout: 'instructions-heldout.jsonl',
} as const;

export async function writeInstructionData(
  dir: string,
): Promise<{ train: string; heldout: string }> {
  await mkdir(dir, { recursive: true });
  const files = {
    train: join(dir, INSTRUCTION_FILES.train),
    heldout: join(dir, INSTRUCTION_FILES.heldout),
  };
  await writeJsonlAtomic(files.train, instructionPrompts('train'));
  await writeJsonlAtomic(files.heldout, instructionPrompts('heldout'));
  return files;
}

// Puts the tokenizer files into a model directory (created if missing).
export async function writeTokenizer(dir: string, maxLength: number): Promise<void> {
  await mkdir(dir, { recursive: true });
  for (const [name, body] of Object.entries(tokenizerFiles(maxLength))) {
    await writeFileAtomic(join(dir, name), JSON.stringify(body, null, 2) + '\n');
  }
}
