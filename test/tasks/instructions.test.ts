// tasks/instructions.ts: a few hundred varied prompts in a fixed order with a hash-disjoint
// held-out split; the files the demo writes; the SmolLM2 preset; demo --rounds/--prompts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  INSTRUCTIONS,
  instructionPrompts,
  isHeldOutInstruction,
} from '../../tasks/instructions.ts';
import { writeInstructionData } from '../../tasks/files.ts';
import { loadPromptsFor } from '../../activities/prompts.ts';
import { presetPath } from '../../config/index.ts';
import { loadRunConfig } from '../../activities/load-config.ts';
import { shortenRun } from '../../cli/demo.ts';

test('a few hundred distinct prompts over five categories, split 1 in 8 by hash', () => {
  assert.ok(INSTRUCTIONS.length >= 250, `${INSTRUCTIONS.length} prompts`);
  const distinct = new Set(INSTRUCTIONS.map((i) => i.prompt));
  assert.equal(distinct.size, INSTRUCTIONS.length, 'no duplicates');
  for (const c of ['writing', 'advice', 'coding', 'maths', 'facts']) {
    assert.ok(INSTRUCTIONS.filter((i) => i.category === c).length >= 30, c);
  }
  const train = instructionPrompts('train');
  const heldout = instructionPrompts('heldout');
  assert.equal(train.length + heldout.length, INSTRUCTIONS.length);
  const trainSet = new Set(train.map((i) => i.prompt));
  assert.ok(
    heldout.every((i) => !trainSet.has(i.prompt)),
    'disjoint',
  );
  assert.ok(heldout.length >= 20 && heldout.length <= 60, `${heldout.length} held out`);
  // The split is a property of the text alone: sha256's first byte divisible by 8.
  for (const i of INSTRUCTIONS) {
    const held = createHash('sha256').update(i.prompt).digest()[0] % 8 === 0;
    assert.equal(isHeldOutInstruction(i.prompt), held);
  }
  assert.equal(train[0].prompt, 'Write a short poem about the sea at night.');
});

test('writeInstructionData writes both splits as prompt files the run loader reads', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'opsr-instr-'));
  try {
    const files = await writeInstructionData(dir);
    const first = await readFile(files.train, 'utf8');
    await writeInstructionData(dir);
    assert.equal(await readFile(files.train, 'utf8'), first, 'deterministic');
    const loaded = await loadPromptsFor('prompts.file', { file: files.train });
    assert.deepEqual(
      loaded.map((p) => p.prompt),
      instructionPrompts('train').map((i) => i.prompt),
    );
    const held = await loadPromptsFor('evaluation.prompts.file', { file: files.heldout });
    assert.equal(held.length, instructionPrompts('heldout').length);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('SmolLM2 preset: embedded chat sampler, SimPO instruct settings, 3/5/7, filter', async () => {
  const c = await loadRunConfig(presetPath('smollm2-135m-instruct'));
  assert.match(c.model, /\.opsr\/models\/smollm2-135m-instruct$/);
  assert.match(c.prompts.file, /instructions-train\.jsonl$/);
  assert.equal(c.sampling.lifecycle, 'embedded');
  assert.equal(c.sampling.api, 'chat');
  assert.deepEqual(c.prefixes.rejectedScores, [3, 5, 7]);
  assert.equal(c.training.loss, 'simpo');
  assert.equal(c.training.beta, 2.5);
  assert.equal(c.training.gammaBetaRatio, 0.1);
  assert.deepEqual(c.training.learningRate, [1e-6, 2e-7, 2e-8]);
  assert.ok(c.filter.scoreTalkPatterns.length > 0);
  const short = shortenRun(c, 1, 8);
  assert.equal(short.rounds, 1);
  assert.deepEqual(short.prefixes.rejectedScores, [3]);
  assert.deepEqual(short.training.learningRate, [1e-6]);
  assert.equal(short.prompts.limit, 8);
  assert.throws(() => shortenRun(c, 4), /--rounds 4: the config has 3; allowed 1-3/);
});
