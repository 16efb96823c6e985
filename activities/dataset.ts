// buildDataset: the round's kept pairs as TRL JSONL and as the engine's binary preference file.
// Prompts are tokenized through the model's chat template (with the generation prompt) when it
// has one, else raw; responses get EOS when they ended naturally (finish_reason "stop").
// Prompts longer than maxPromptLength lose their oldest tokens; responses are cut so that
// prompt + response <= maxLength.
import { join } from 'node:path';
import { writeFileAtomic } from '../lib/atomic.ts';
import { hashJson, sha256File } from '../lib/hash.ts';
import { readJsonl, toJsonl } from '../lib/jsonl.ts';
import { loadValidManifest, writeManifest } from '../lib/manifest.ts';
import { writeTokData } from '../lib/tokdata.ts';
import { loadTokenizer, type ChatMessage, type LoadedTokenizer } from '../lib/tokenizer.ts';
import type { BuildDatasetInput, BuildDatasetResult } from '../contracts/activities.ts';
import { badInput } from './errors.ts';
import { yieldToTimers } from './progress.ts';
import type { SampleRecord } from './records.ts';

interface Limits {
  maxLength: number;
  maxPromptLength: number;
}

// `where` names the record in errors (file and line or index). Both failures are the data's or the
// model's, the same on every retry: bad input.
export function promptIds(
  tok: LoadedTokenizer,
  prompt: string | ChatMessage[],
  where: string,
): number[] {
  let ids: number[];
  if (tok.hasChatTemplate) {
    const messages = typeof prompt === 'string' ? [{ role: 'user', content: prompt }] : prompt;
    let text: string;
    try {
      text = tok.applyChatTemplate(messages, { addGenerationPrompt: true });
    } catch (err) {
      throw badInput(
        `${where}: the model's chat template refuses this prompt: ${(err as Error).message}`,
      );
    }
    // The template writes its own special tokens (BOS and the like).
    ids = tok.encode(text, { addSpecialTokens: false });
  } else if (typeof prompt !== 'string') {
    throw badInput(
      `${where}: a chat prompt ("messages") needs a model with a chat_template in ` +
        `tokenizer_config.json`,
    );
  } else {
    ids = tok.encode(prompt);
  }
  if (ids.length === 0)
    throw badInput(
      `${where}: the prompt tokenizes to nothing; allowed: text the model's tokenizer keeps`,
    );
  return ids;
}

// As TRL tokenizes a pair: the answer alone, without special tokens, then the EOS the model learns
// to end with (eos_token, else generation_config.json's first eos_token_id).
export function responseIds(tok: LoadedTokenizer, text: string, finishReason: string): number[] {
  const ids = tok.encode(text, { addSpecialTokens: false });
  const eos = tok.eosTokenId ?? tok.stopTokenIds[0];
  if (finishReason === 'stop' && eos !== undefined) ids.push(eos);
  return ids;
}

// Cuts a prompt (from the left) and responses (from the right) to the limits; `truncated`
// says whether anything was cut.
export function fitToLimits(
  prompt: number[],
  responses: number[][],
  lim: Limits,
): { prompt: number[]; responses: number[][]; truncated: boolean } {
  const p =
    prompt.length > lim.maxPromptLength
      ? prompt.slice(prompt.length - lim.maxPromptLength)
      : prompt;
  const room = lim.maxLength - p.length;
  const rs = responses.map((r) => (r.length > room ? r.slice(0, room) : r));
  const truncated =
    p.length !== prompt.length || rs.some((r, i) => r.length !== responses[i].length);
  return { prompt: p, responses: rs, truncated };
}

// TRL preference record: plain strings, or the conversational variant for chat prompts.
function trlRecord(p: SampleRecord): Record<string, unknown> {
  const conv = !!p.messages;
  const answer = (t: string) => (conv ? [{ role: 'assistant', content: t }] : t);
  return {
    prompt: p.messages ?? p.prompt,
    chosen: answer(p.chosen.text),
    rejected: answer(p.rejected.text),
    index: p.index,
    round: p.round,
    chosen_score: p.chosenScore,
    rejected_score: p.rejectedScore,
    seed: p.seed,
    chosen_seed: p.chosen.seed,
    rejected_seed: p.rejected.seed,
    chosen_finish_reason: p.chosen.finish_reason,
    rejected_finish_reason: p.rejected.finish_reason,
  };
}

export async function buildDataset(input: BuildDatasetInput): Promise<BuildDatasetResult> {
  const trlFile = join(input.roundDir, 'dataset.jsonl');
  const dataFile = join(input.roundDir, 'dataset.bin');
  const manifestPath = join(input.roundDir, 'dataset.manifest.json');
  const lim: Limits = {
    maxLength: input.training.maxLength,
    maxPromptLength: input.training.maxPromptLength,
  };
  const configHash = hashJson({ ...lim, modelDir: input.modelDir });
  const inputs = {
    pairs: await sha256File(input.pairsFile),
    tokenizer: await sha256File(join(input.modelDir, 'tokenizer.json')),
    tokenizerConfig: await sha256File(join(input.modelDir, 'tokenizer_config.json')).catch(
      () => 'none',
    ),
  };
  const done = await loadValidManifest(manifestPath, { step: 'dataset', configHash, inputs });
  if (done)
    return { trlFile, dataFile, records: done.counts.records, truncated: done.counts.truncated };

  const tok = await loadTokenizer(input.modelDir);
  const pairs = await readJsonl<SampleRecord>(input.pairsFile);
  const records: { prompt: number[]; chosen: number[]; rejected: number[] }[] = [];
  const trl: Record<string, unknown>[] = [];
  let truncated = 0;
  let dropped = 0;
  for (const [i, p] of pairs.entries()) {
    if (i % 256 === 255) await yieldToTimers(); // the keep-alive heartbeat runs between records
    const fit = fitToLimits(
      promptIds(tok, p.messages ?? p.prompt!, `${input.pairsFile}: prompt index ${p.index}`),
      [
        responseIds(tok, p.chosen.text, p.chosen.finish_reason),
        responseIds(tok, p.rejected.text, p.rejected.finish_reason),
      ],
      lim,
    );
    // The engine trains on response tokens only; a pair with an empty side teaches nothing.
    if (fit.responses.some((r) => r.length === 0)) {
      dropped++;
      continue;
    }
    if (fit.truncated) truncated++;
    records.push({ prompt: fit.prompt, chosen: fit.responses[0], rejected: fit.responses[1] });
    trl.push(trlRecord(p));
  }
  // Nothing to train on: the workflow fails the round with the filter counts (not retried).
  if (records.length === 0) return { trlFile, dataFile, records: 0, truncated };
  await writeFileAtomic(trlFile, toJsonl(trl));
  await writeTokData(dataFile, { kind: 'preference', records });
  await writeManifest(manifestPath, {
    step: 'dataset',
    configHash,
    inputs,
    outputs: { trl: trlFile, data: dataFile },
    counts: { records: records.length, truncated, dropped },
  });
  return { trlFile, dataFile, records: records.length, truncated };
}
