// filterPairs: drops pairs the paper would not train on (answers that talk about their score,
// empty answers, truncated answers, identical chosen and rejected), counting each reason.
import { join } from 'node:path';
import { writeFileAtomic } from '../lib/atomic.ts';
import { hashJson, sha256File } from '../lib/hash.ts';
import { readJsonl, toJsonl } from '../lib/jsonl.ts';
import { loadValidManifest, writeManifest } from '../lib/manifest.ts';
import type { FilterConfig, FilterPairsInput, FilterPairsResult } from '../contracts/activities.ts';
import { badInput } from './errors.ts';
import { yieldToTimers } from './progress.ts';
import type { SampleRecord } from './records.ts';

const FILTER_REASONS = ['empty', 'truncated', 'identical', 'scoreTalk'] as const;
type FilterReason = (typeof FILTER_REASONS)[number];

function compilePatterns(patterns: string[], flags = 'i'): RegExp[] {
  return patterns.map((p, i) => {
    try {
      return new RegExp(p, flags);
    } catch (err) {
      throw badInput(
        `filter.scoreTalkPatterns[${i}] ${JSON.stringify(p)} is not a valid regular ` +
          `expression: ${(err as Error).message}`,
      );
    }
  });
}

// Patterns are matched case-insensitively by default (filter.patternFlags "i").
// The first reason a pair is dropped for, or null when it is kept.
function dropReason(
  rec: SampleRecord,
  filter: FilterConfig,
  patterns: RegExp[],
): FilterReason | null {
  const c = rec.chosen,
    r = rec.rejected;
  if (filter.dropEmpty && (c.text.trim() === '' || r.text.trim() === '')) return 'empty';
  if (filter.dropTruncated && (c.finish_reason === 'length' || r.finish_reason === 'length'))
    return 'truncated';
  if (filter.dropIdentical && c.text.trim() === r.text.trim()) return 'identical';
  if (patterns.some((re) => re.test(c.text) || re.test(r.text))) return 'scoreTalk';
  return null;
}

export async function filterPairs(input: FilterPairsInput): Promise<FilterPairsResult> {
  const pairsFile = join(input.roundDir, 'pairs.jsonl');
  const manifestPath = join(input.roundDir, 'pairs.manifest.json');
  const configHash = hashJson({ filter: input.filter });
  const inputs = { samples: await sha256File(input.samplesFile) };
  const done = await loadValidManifest(manifestPath, { step: 'filter', configHash, inputs });
  if (done)
    return {
      pairsFile,
      kept: done.counts.kept,
      filtered: done.counts.filtered,
      filteredBy: done.data!.filteredBy as Record<string, number>,
    };

  const patterns = compilePatterns(input.filter.scoreTalkPatterns, input.filter.patternFlags);
  const samples = await readJsonl<SampleRecord>(input.samplesFile);
  const filteredBy: Record<string, number> = Object.fromEntries(FILTER_REASONS.map((r) => [r, 0]));
  const kept: SampleRecord[] = [];
  for (const [i, rec] of samples.entries()) {
    if (i % 1024 === 1023) await yieldToTimers(); // the keep-alive heartbeat runs between records
    const reason = dropReason(rec, input.filter, patterns);
    if (reason) filteredBy[reason]++;
    else kept.push(rec);
  }
  await writeFileAtomic(pairsFile, toJsonl(kept));
  const filtered = samples.length - kept.length;
  await writeManifest(manifestPath, {
    step: 'filter',
    configHash,
    inputs,
    outputs: { pairs: pairsFile },
    counts: { samples: samples.length, kept: kept.length, filtered },
    data: { filteredBy },
  });
  return { pairsFile, kept: kept.length, filtered, filteredBy };
}
