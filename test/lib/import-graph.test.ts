// The import graph of every .ts file: no cycles (type-only imports included), and each folder
// imports only folders below it. contracts/ is the leaf that workflows and activities share.
import test from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

// A folder may import itself and folders of a lower rank: workflows/ and activities/ (same rank)
// never import each other; both reach each other only through contracts/.
// A new top folder needs a rank here.
const RANK: Record<string, number> = {
  lib: 0,
  config: 1,
  tasks: 2,
  contracts: 3,
  server: 3,
  report: 4,
  workflows: 5,
  activities: 5,
  workers: 6,
  cli: 7,
  scripts: 8,
  test: 9,
  bench: 10,
};

function tsFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    if (e.name === 'node_modules' || e.name.startsWith('.')) return [];
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return tsFiles(p);
    return e.name.endsWith('.ts') && !e.name.endsWith('.d.ts') ? [p] : [];
  });
}

// file (relative to the root) -> relative files it imports (static, dynamic, type-only, re-export).
function importGraph(): Map<string, string[]> {
  const graph = new Map<string, string[]>();
  for (const abs of tsFiles(ROOT)) {
    const info = ts.preProcessFile(readFileSync(abs, 'utf8'), true, true);
    const deps = info.importedFiles
      .map((f) => f.fileName)
      .filter((s) => s.startsWith('.'))
      .map((s) => path.relative(ROOT, path.resolve(path.dirname(abs), s)));
    graph.set(path.relative(ROOT, abs), deps);
  }
  return graph;
}

// Every cycle's files, one strongly connected component (Tarjan) each; self-imports count.
function cycles(graph: Map<string, string[]>): string[][] {
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const found: string[][] = [];
  const visit = (v: string) => {
    index.set(v, index.size);
    low.set(v, index.get(v)!);
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) {
        low.set(v, Math.min(low.get(v)!, index.get(w)!));
      }
    }
    if (low.get(v) !== index.get(v)) return;
    const scc: string[] = [];
    let w: string;
    do {
      w = stack.pop()!;
      onStack.delete(w);
      scc.push(w);
    } while (w !== v);
    if (scc.length > 1 || (graph.get(v) ?? []).includes(v)) found.push(scc.sort());
  };
  for (const v of graph.keys()) if (!index.has(v)) visit(v);
  return found;
}

const top = (file: string) => file.split(path.sep)[0];

test('cycles() finds a cycle through a type-only edge and a self-import, not a diamond', () => {
  const g = new Map([
    ['a.ts', ['b.ts', 'c.ts']],
    ['b.ts', ['d.ts']],
    ['c.ts', ['d.ts']],
    ['d.ts', []],
    ['x.ts', ['y.ts']],
    ['y.ts', ['z.ts']],
    ['z.ts', ['x.ts']],
    ['s.ts', ['s.ts']],
  ]);
  assert.deepEqual(cycles(g), [['x.ts', 'y.ts', 'z.ts'], ['s.ts']]);
});

test('no import cycles among the .ts files', () => {
  const graph = importGraph();
  assert.ok(graph.size > 80, `walked ${graph.size} files`);
  assert.ok(
    graph.get(path.join('workflows', 'round.ts'))!.includes(path.join('contracts', 'workflows.ts')),
    'the walk resolves relative imports',
  );
  assert.deepEqual(cycles(graph), []);
});

test('folders import only themselves and lower ones; contracts/ no workflows/activities', () => {
  const bad: string[] = [];
  for (const [file, deps] of importGraph()) {
    const from = top(file);
    if (!(from in RANK)) {
      bad.push(`${file}: folder ${from} has no rank in this test`);
      continue;
    }
    for (const dep of deps) {
      const to = top(dep);
      if (to !== from && !(RANK[to] < RANK[from])) bad.push(`${file} imports ${dep}`);
    }
  }
  assert.deepEqual(bad, []);
});
