// Path fields of a run config, resolved against the config file's directory. Pure POSIX path
// arithmetic (no node:path): this module runs in the workflow sandbox too.
// Path fields of a run config (dotted), resolved against the config file's directory.
// A '*' stands for every key of an object or every item of a list.
export const PATH_FIELDS = [
  'storage',
  'model',
  'prompts.file',
  'training.engine.path',
  'init.sft.data',
  'init.offline.data',
  'evaluation.prompts.file',
  'sampling.vllm.executable',
  'judges.*.prompts.*',
  'pairs.rubricPrompt',
  'evals.sets.*.file',
  'evals.sets.*.reference.model',
] as const;

function isAbsolute(p: string) {
  return p.startsWith('/') || /^[A-Za-z]:[\\/]/.test(p);
}

// POSIX join + normalize without node:path (this module runs in the workflow sandbox).
export function resolvePath(baseDir: string, p: string): string {
  const joined = isAbsolute(p) ? p : `${baseDir.replace(/\/+$/, '')}/${p}`;
  const out: string[] = [];
  for (const part of joined.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') out.pop();
    else out.push(part);
  }
  return `/${out.join('/')}`;
}

// Resolves the path fields present in a (possibly partial) config object; returns a copy.
// A bare command name for sampling.vllm.executable (no slash) stays a PATH lookup.
export function resolveConfigPaths<T>(obj: T, baseDir: string): T {
  if (!obj || typeof obj !== 'object' || Array.isArray(obj)) return obj;
  const copy = JSON.parse(JSON.stringify(obj)) as Record<string, unknown>;
  for (const f of PATH_FIELDS) {
    const keys = f.split('.');
    // The objects or lists holding the field, following '*' into every member.
    let holders: unknown[] = [copy];
    for (const k of keys.slice(0, -1)) {
      holders = holders.flatMap((h) => {
        if (!h || typeof h !== 'object') return [];
        const o = h as Record<string, unknown>;
        return k === '*' ? Object.values(o) : [o[k]];
      });
    }
    const last = keys[keys.length - 1];
    for (const h of holders) {
      if (!h || typeof h !== 'object' || Array.isArray(h)) continue;
      const o = h as Record<string, unknown>;
      for (const name of last === '*' ? Object.keys(o) : [last]) {
        const v = o[name];
        if (typeof v !== 'string' || v === '') continue;
        if (f === 'sampling.vllm.executable' && !v.includes('/')) continue;
        o[name] = resolvePath(baseDir, v);
      }
    }
  }
  return copy as T;
}
