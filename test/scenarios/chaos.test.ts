// The chaos suite's fast variant (scripts/chaos.ts; `npm run chaos` is the long one): the demo's
// run, shortened to one round, twice on a real dev server with real workers, engine and embedded
// sampler; the second time the worker process is SIGKILLed once inside sampling and once inside
// training. Samples, pairs, datasets, rewards, trained weights and evaluation answers must be
// byte-identical to the undisturbed run's.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseRunConfig, presetPath } from '../../config/index.ts';
import { loadRunConfig } from '../../activities/load-config.ts';
import { CHAOS_ACTIVITIES, killsByPhase, runChaos } from '../../scripts/chaos.ts';

const storage = await mkdtemp(path.join(os.tmpdir(), 'opsr-chaos-'));
after(() => rm(storage, { recursive: true, force: true }));

test('worker SIGKILLed in sampling, training: artifacts byte-identical to unkilled', async () => {
  const preset = await loadRunConfig(presetPath('tiny'));
  const moved = (p: string) => path.join(storage, path.relative(preset.storage, p));
  const config = parseRunConfig({
    ...preset,
    storage,
    model: moved(preset.model),
    rounds: 1,
    prefixes: { ...preset.prefixes, rejectedScores: [3] },
    prompts: { file: moved(preset.prompts.file), limit: 24 },
    sampling: { ...preset.sampling, shardSize: 4, concurrency: 4 },
    training: {
      ...preset.training,
      learningRate: [1e-4],
      batchSize: 1,
      epochs: 6,
      checkpointEvery: 4,
    },
    init: { sft: { ...preset.init!.sft!, data: moved(preset.init!.sft!.data), maxSteps: 60 } },
    // Evaluation stays (the demo data writes its held-out file there), on 8 prompts.
    evaluation: {
      ...preset.evaluation!,
      prompts: { file: moved(preset.evaluation!.prompts.file), limit: 8 },
      prefixCurve: false,
    },
    activities: CHAOS_ACTIVITIES,
  });
  const r = await runChaos({
    config,
    workerKills: [{ phase: 'sampling' }, { phase: 'training' }],
    log: (l) => console.log(l),
  });
  console.log(
    `kills by phase: ${JSON.stringify(killsByPhase(r.kills))}; ${r.compared} artifacts compared`,
  );
  assert.deepEqual(
    r.kills.map((k) => k.phase.replace(/^round \d+ /, '')),
    ['sampling', 'training'],
  );
  assert.deepEqual(r.missed, []);
  assert.ok(r.compared >= 8, `${r.compared} artifacts`);
  assert.deepEqual(r.different, []);
});
