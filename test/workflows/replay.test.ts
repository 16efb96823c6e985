// Replays recorded workflow histories (test/fixtures/histories, written by
// test/workflows/workflows.test.ts with OPSR_RECORD_HISTORIES=1) against today's workflow code: a
// change that would make running workflows nondeterministic fails here. Intentional changes need
// workflow versioning (patched()) or re-recorded histories.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import proto from '@temporalio/proto';
const { temporal } = proto;
import { Worker } from '@temporalio/worker';
import { installWorkerLogging, workflowBundle } from '../../workers/index.ts';

const DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'fixtures', 'histories');

test('recorded histories replay without nondeterminism', async () => {
  installWorkerLogging();
  const files = (await readdir(DIR)).filter((f) => f.endsWith('.binpb')).sort();
  const types = new Set<string>();
  const histories = await Promise.all(
    files.map(async (f) => {
      const history = temporal.api.history.v1.History.decode(await readFile(path.join(DIR, f)));
      const started = history.events?.[0]?.workflowExecutionStartedEventAttributes;
      types.add(started?.workflowType?.name ?? '?');
      return { workflowId: f.replace(/\.binpb$/, ''), history };
    }),
  );
  // Every workflow type is covered, with completed, stopped and failed runs.
  assert.deepEqual([...types].sort(), ['ablationStudy', 'preferenceRound', 'preferenceRun']);
  assert.ok(files.length >= 8, files.join(', '));

  const replayed: string[] = [];
  for await (const r of Worker.runReplayHistories(
    { workflowBundle: await workflowBundle() },
    histories,
  )) {
    assert.equal(r.error, undefined, `${r.workflowId}: ${r.error}`);
    replayed.push(r.workflowId);
  }
  assert.deepEqual(replayed.sort(), histories.map((h) => h.workflowId).sort());
});
