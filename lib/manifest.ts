// Step manifests: what a finished step produced (content hashes, counts) and what it was
// computed from (config hash, input hashes). A manifest that is present and still matches
// means the step is done and its outputs are reused instead of recomputed.
import { readFile, stat } from 'node:fs/promises';
import { dirname, isAbsolute, join, relative } from 'node:path';
import { writeJsonAtomic } from './atomic.ts';
import { sha256File } from './hash.ts';

interface ManifestFile {
  path: string; // relative to the manifest's directory
  sha256: string;
  bytes: number;
}

interface Manifest {
  version: 1;
  step: string;
  configHash: string;
  inputs: Record<string, string>; // name -> content hash of what the step read
  outputs: Record<string, ManifestFile>; // name -> file it wrote
  counts: Record<string, number>;
  data?: Record<string, unknown>; // step results worth returning on reuse (metrics, ...)
}

interface ManifestSpec {
  step: string;
  configHash: string;
  inputs?: Record<string, string>;
  outputs: Record<string, string>; // name -> absolute path or path relative to the manifest
  counts?: Record<string, number>;
  data?: Record<string, unknown>;
}

async function describeFile(file: string, baseDir: string): Promise<ManifestFile> {
  const abs = isAbsolute(file) ? file : join(baseDir, file);
  const [st, hash] = await Promise.all([stat(abs), sha256File(abs)]);
  return { path: relative(baseDir, abs), sha256: hash, bytes: st.size };
}

export async function writeManifest(manifestPath: string, spec: ManifestSpec): Promise<Manifest> {
  const base = dirname(manifestPath);
  const outputs: Record<string, ManifestFile> = {};
  for (const [name, file] of Object.entries(spec.outputs))
    outputs[name] = await describeFile(file, base);
  const manifest: Manifest = {
    version: 1,
    step: spec.step,
    configHash: spec.configHash,
    inputs: spec.inputs ?? {},
    outputs,
    counts: spec.counts ?? {},
    ...(spec.data ? { data: spec.data } : {}),
  };
  await writeJsonAtomic(manifestPath, manifest);
  return manifest;
}

// Returns the manifest when it exists, was written by the same step with the same config and
// inputs, and every output still has its recorded size and hash; otherwise null (redo the step).
export async function loadValidManifest(
  manifestPath: string,
  expect: { step: string; configHash: string; inputs?: Record<string, string> },
): Promise<Manifest | null> {
  let m: Manifest;
  try {
    m = JSON.parse(await readFile(manifestPath, 'utf8')) as Manifest;
  } catch {
    return null;
  }
  if (m.version !== 1 || m.step !== expect.step || m.configHash !== expect.configHash) return null;
  const want = expect.inputs ?? {};
  const keys = new Set([...Object.keys(want), ...Object.keys(m.inputs ?? {})]);
  for (const k of keys) if (m.inputs?.[k] !== want[k]) return null;
  const base = dirname(manifestPath);
  for (const f of Object.values(m.outputs ?? {})) {
    try {
      const abs = join(base, f.path);
      if ((await stat(abs)).size !== f.bytes || (await sha256File(abs)) !== f.sha256) return null;
    } catch {
      return null;
    }
  }
  return m;
}
