// The round manifest (what a round produced, with content hashes) and the run report.
import { readdir, readFile, stat } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { writeFileAtomic } from '../lib/atomic.ts';
import { hashJson, sha256, sha256File } from '../lib/hash.ts';
import type { WriteRoundManifestInput, WriteRoundManifestResult, WriteRunReportInput, WriteRunReportResult } from '../contracts/activities.ts';

// A file's hash and size; a directory's hash covers its files' relative names and hashes.
async function describe(path: string): Promise<{ path: string; sha256: string; bytes: number }> {
  const st = await stat(path);
  if (!st.isDirectory()) return { path, sha256: await sha256File(path), bytes: st.size };
  const files: Record<string, string> = {};
  let bytes = 0;
  for (const e of await readdir(path, { recursive: true, withFileTypes: true })) {
    if (!e.isFile()) continue;
    const f = join(e.parentPath, e.name);
    files[relative(path, f)] = await sha256File(f);
    bytes += (await stat(f)).size;
  }
  return { path, sha256: hashJson(files), bytes };
}

export async function writeRoundManifest(input: WriteRoundManifestInput): Promise<WriteRoundManifestResult> {
  const artifacts: Record<string, { path: string; sha256: string; bytes: number }> = {};
  for (const [name, p] of Object.entries(input.artifacts)) artifacts[name] = await describe(p);
  const body = JSON.stringify({
    runId: input.runId, round: input.round, configHash: input.configHash, referenceModelDir: input.referenceModelDir,
    rejectedScore: input.rejectedScore, artifacts, counts: input.counts, metrics: input.metrics,
  }, null, 2) + '\n';
  const manifest = join(input.roundDir, 'manifest.json');
  await writeFileAtomic(manifest, body);
  return { manifest, sha256: sha256(body) };
}

const fmt = (x: number | null | undefined, digits = 3) => (x === null || x === undefined || !Number.isFinite(x) ? '-' : x.toFixed(digits));

export async function writeRunReport(input: WriteRunReportInput): Promise<WriteRunReportResult> {
  const r = input.result;
  const json = join(input.runDir, 'report.json');
  const markdown = join(input.runDir, 'report.md');
  await writeFileAtomic(json, JSON.stringify(r, null, 2) + '\n');
  const lines = [
    `# opsr run ${r.runId}`,
    '',
    `Config hash: \`${r.configHash}\`. Final model: \`${r.finalModel}\`.${r.stopped ? ' Stopped early by request.' : ''}`,
    '',
    `Base policy reward (held-out, unprefixed): ${fmt(r.baseReward)}`,
    '',
    '| round | rejected score | pairs kept | pairs filtered | chosen reward | rejected reward | policy reward | loss | rewards/accuracies |',
    '|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
    ...r.rounds.map((x) => `| ${x.round} | ${x.rejectedScore} | ${x.pairsKept} | ${x.pairsFiltered} | ${fmt(x.chosenReward)} | ${fmt(x.rejectedReward)} | ${fmt(x.policyReward)} | ${fmt(x.train.loss, 4)} | ${fmt(x.train['rewards/accuracies'], 2)} |`),
  ];
  // The config snapshot prepareRun wrote: a sampler without per-request seeds is not reproducible.
  const config = await readFile(join(input.runDir, 'config.json'), 'utf8')
    .then((t) => JSON.parse(t), () => null);
  if (config?.sampling?.perRequestSeeds === false) {
    lines.push('', 'Determinism: not guaranteed. The sampler does not honour per-request seeds '
      + '(sampling.perRequestSeeds is false), so a rerun samples different answers.');
  }
  if (r.prefixCurve) {
    lines.push('', 'Prefix curve (round-1 reference, mean reward per prefix score):', '', '| prefix score | mean reward |', '|---:|---:|');
    lines.push(...r.prefixCurve.map((p) => `| ${p.score} | ${fmt(p.meanReward)} |`));
  }
  await writeFileAtomic(markdown, lines.join('\n') + '\n');
  return { json, markdown };
}
