// The round manifest (what a round produced, with content hashes) and the run report (report/).
import { readdir, stat } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { writeFileAtomic } from '../lib/atomic.ts';
import { writeRunReportFiles } from '../report/run.ts';
import { hashJson, sha256, sha256File } from '../lib/hash.ts';
import type {
  WriteRoundManifestInput,
  WriteRoundManifestResult,
  WriteRunReportInput,
  WriteRunReportResult,
} from '../contracts/activities.ts';

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

export async function writeRoundManifest(
  input: WriteRoundManifestInput,
): Promise<WriteRoundManifestResult> {
  const artifacts: Record<string, { path: string; sha256: string; bytes: number }> = {};
  for (const [name, p] of Object.entries(input.artifacts)) artifacts[name] = await describe(p);
  const body =
    JSON.stringify(
      {
        runId: input.runId,
        round: input.round,
        configHash: input.configHash,
        referenceModelDir: input.referenceModelDir,
        rejectedScore: input.rejectedScore,
        artifacts,
        counts: input.counts,
        metrics: input.metrics,
        ...(input.cost ? { cost: input.cost } : {}),
      },
      null,
      2,
    ) + '\n';
  const manifest = join(input.roundDir, 'manifest.json');
  await writeFileAtomic(manifest, body);
  return { manifest, sha256: sha256(body) };
}

export async function writeRunReport(input: WriteRunReportInput): Promise<WriteRunReportResult> {
  return writeRunReportFiles(input.runDir, input.result);
}
