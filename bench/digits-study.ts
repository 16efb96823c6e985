// The README's evidence: fixed [3,3,3] against progressive [3,5,7] rejected scores on a digits
// testbed, through the real ablationStudy workflow on a dev server with an in-process worker.
// The study is an ablation preset (default config/presets/ablation-digits-hard.json: the harder
// task variant, five seeds); its base's data and tiny model are made first, as the demo does.
// Prints Table 2 and the paired differences, and copies the study's figures to docs/figures/.
// A re-run with the same study id reuses finished arm-seed runs, so seeds can be added later.
// Usage: node --import tsx bench/digits-study.ts [--config PRESET|FILE] [--seeds 0,1,2]
import { copyFile, mkdir, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { WorkflowExecutionAlreadyStartedError } from '@temporalio/client';
import { presetPath } from '../config/index.ts';
import { loadAblationConfig } from '../activities/load-config.ts';
import { prepareBaseModel, prepareDemoData } from '../cli/demo.ts';
import {
  SEARCH_ATTRIBUTES,
  TASK_QUEUES,
  WORKFLOW_TYPES,
  type AblationResult,
} from '../contracts/workflows.ts';
import { freePort, startDevServer, workflowResult } from '../lib/temporal.ts';
import { connect, table } from '../cli/common.ts';
import { diffTable, metricTable } from '../report/study.ts';
import { createWorkers, installWorkerLogging } from '../workers/index.ts';

const { values } = parseArgs({
  options: {
    config: { type: 'string', default: 'ablation-digits-hard' },
    seeds: { type: 'string' },
  },
});
installWorkerLogging();
const { config, input: preset } = await loadAblationConfig(presetPath(values.config));
const seeds = values.seeds?.split(',').map(Number) ?? config.seeds ?? [0];
const base = config.arms[0].config; // the arms differ in rejected scores, not in data or model
await prepareDemoData(base);
await prepareBaseModel(base);
const studyId = config.studyId ?? 'digits-study';
const server = await startDevServer({
  port: await freePort(),
  searchAttributes: Object.values(SEARCH_ATTRIBUTES),
  dbFile: join(base.storage, 'temporal', 'study.sqlite'),
  logFile: join(base.storage, 'temporal', 'study-server.log'),
});
const workers = await createWorkers({ address: server.address });
const running = workers.run();
const conn = await connect({ address: server.address, namespace: 'default', tls: false });
const t0 = Date.now();
try {
  const input = { ...preset, studyId, seeds };
  // An interrupted study is still open in the SQLite file: wait for it where it stopped.
  const handle = await conn.client.workflow
    .start(WORKFLOW_TYPES.ablation, {
      taskQueue: TASK_QUEUES.control,
      workflowId: studyId,
      args: [input],
    })
    .catch((err: unknown) => {
      if (!(err instanceof WorkflowExecutionAlreadyStartedError)) throw err;
      process.stdout.write(`${studyId} was interrupted; picking it up\n`);
      return conn.client.workflow.getHandle(studyId);
    });
  const r = await workflowResult<AblationResult>(handle);
  for (const m of ['policyReward', 'chosenReward', 'rejectedReward', 'pairsKept'] as const) {
    const tb = metricTable(r.summary!, m)!;
    process.stdout.write(
      `\n${m} (mean ± sd over seeds ${seeds.join(', ')}):\n${table(tb.head, tb.rows)}\n`,
    );
  }
  const d = diffTable(r.summary!, ['policyReward', 'chosenReward', 'rejectedReward'])!;
  process.stdout.write(`\npaired differences (mean [95% CI]):\n${table(d.head, d.rows)}\n`);
  const figs = join(base.storage, 'studies', studyId, 'figures');
  await mkdir('docs/figures', { recursive: true });
  for (const f of await readdir(figs))
    await copyFile(join(figs, f), join('docs/figures', `${studyId}-${f}`));
  process.stdout.write(`\nreport: ${r.report!.html}\n${Math.round((Date.now() - t0) / 1000)} s\n`);
} finally {
  await conn.close();
  workers.shutdown();
  await running;
  await server.stop();
}
