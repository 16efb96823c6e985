// The Web UI path in a real browser (Debian's chromium driven by puppeteer-core): Start Workflow
// on the dev server's UI with the documented task queue, workflow type and the JSON `opsr
// validate` prints; the run completes and its page shows the details table and the search
// attributes. A second run is stopped from the UI with the stopAfterRound signal. The worker runs
// the workflow-logic test activities (the workflows are the real ones), so a run takes seconds.
// OPSR_SCREENSHOTS=DIR saves each step as a PNG there (scripts/screenshots.sh -> docs/).
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import puppeteer, { type Browser, type Page } from 'puppeteer-core';
import { Client, Connection, WorkflowNotFoundError } from '@temporalio/client';
import {
  SEARCH_ATTRIBUTES,
  TASK_QUEUES,
  WORKFLOW_TYPES,
  type RunResult,
} from '../../contracts/workflows.ts';
import { freePort, startDevServer, type DevServer } from '../../lib/temporal.ts';
import { createWorkers, installWorkerLogging, type OpsrWorkers } from '../../workers/index.ts';
import { opsr } from '../helpers/opsr-cli.ts';
import { testActivities } from '../helpers/workflow-activities.ts';

installWorkerLogging();
// scripts/setup.sh test installs it.
const CHROMIUM = process.env.OPSR_CHROMIUM ?? '/usr/bin/chromium';
const SHOTS = process.env.OPSR_SCREENSHOTS;
const root = await mkdtemp(join(tmpdir(), 'opsr-browser-'));
let server: DevServer;
let workers: OpsrWorkers;
let running: Promise<void>;
let browser: Browser;
let connection: Connection;
let client: Client;

async function shot(page: Page, name: string): Promise<void> {
  if (!SHOTS) return;
  await mkdir(SHOTS, { recursive: true });
  await page.screenshot({ path: join(SHOTS, `${name}.png`) });
}

// A run config file as a user writes it, with relative paths; `opsr validate` resolves it.
async function validatedInput(
  name: string,
  rounds: number,
  rejectedScores = 'progressive',
): Promise<string> {
  const dir = join(root, name);
  await mkdir(join(dir, 'base-model'), { recursive: true });
  await writeFile(join(dir, 'base-model', 'config.json'), '{"model_type": "gpt2"}\n');
  await writeFile(join(dir, 'base-model', 'model.safetensors'), 'base weights\n');
  await writeFile(
    join(dir, 'prompts.jsonl'),
    Array.from({ length: 6 }, (_, i) => `{"prompt": "add ${i} and ${i + 1}"}\n`).join(''),
  );
  await writeFile(
    join(dir, 'run.json'),
    JSON.stringify({
      storage: 'storage',
      model: 'base-model',
      prompts: { file: 'prompts.jsonl' },
      rounds,
      prefixes: { rejectedScores },
      sampling: { shardSize: 2 },
      training: { loss: 'simpo', learningRate: 1e-6 },
      rewardModel: { type: 'builtin', name: 'digits' },
      evaluation: { prompts: { file: 'prompts.jsonl' } },
    }),
  );
  const r = await opsr(['validate', '--config', join(dir, 'run.json')]);
  assert.equal(r.code, 0, r.stderr);
  return r.stdout.trim();
}

before(async () => {
  server = await startDevServer({
    port: await freePort(),
    uiPort: await freePort(),
    searchAttributes: Object.values(SEARCH_ATTRIBUTES),
    logFile: join(root, 'server.log'),
  });
  // Each round takes seconds, as if sampling and training took time.
  workers = await createWorkers({
    address: server.address,
    activities: testActivities({
      log: join(root, 'events.jsonl'),
      shardDelayMs: 500,
      trainStepDelayMs: 500,
    }),
  });
  running = workers.run();
  connection = await Connection.connect({ address: server.address });
  client = new Client({ connection });
  browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    // No network beyond the dev server; the container runs as root, which needs --no-sandbox.
    args: [
      '--no-sandbox',
      '--disable-dev-shm-usage',
      '--no-first-run',
      '--disable-background-networking',
    ],
  });
});

after(async () => {
  await browser?.close();
  await connection?.close();
  workers?.shutdown();
  await running;
  await server?.stop();
  await rm(root, { recursive: true, force: true });
});

async function newPage(): Promise<Page> {
  const page = await browser.newPage();
  // Puppeteer's 30 s defaults for navigation and selectors ran out on a loaded 2-core machine
  // (load average 20-30) while the UI was still rendering; the checks themselves are unchanged.
  page.setDefaultTimeout(120_000);
  await page.setViewport({ width: 1400, height: 1000 });
  return page;
}

const ui = (path: string) => `${server.uiUrl}/namespaces/default${path}`;

// The Start Workflow form: id, task queue, type and the single JSON payload.
async function startFromUi(page: Page, workflowId: string, json: string): Promise<void> {
  await page.goto(ui('/workflows/start-workflow'), { waitUntil: 'networkidle0' });
  await page.type('#workflowId', workflowId);
  await page.type('#taskQueue', TASK_QUEUES.control);
  await page.type('#workflowType', WORKFLOW_TYPES.run);
  const editor = (await page.waitForSelector('.cm-content[aria-label="Data"]'))!;
  await editor.click();
  await page.waitForFunction(() => document.activeElement?.getAttribute('aria-label') === 'Data');
  // One insertText, as a paste: typed key by key the editor would close brackets itself.
  await page.keyboard.sendCharacter(json);
  // The check reads the editor's document from its CodeMirror view (on the content element:
  // cmTile in the UI's version, cmView before): the DOM holds only the lines in view, and on CI
  // its last line had not rendered in 120 s.
  const editorText = () => {
    type Cm = { view?: { state: { doc: { toString(): string } } } };
    const el = document.querySelector('.cm-content[aria-label="Data"]') as
      (Element & { cmTile?: Cm; cmView?: { rootView?: Cm } }) | null;
    return (el?.cmTile ?? el?.cmView?.rootView)?.view?.state.doc.toString() ?? null;
  };
  const deadline = Date.now() + 120_000;
  let seen: string | null = null;
  while ((seen = await page.evaluate(editorText)) !== json) {
    if (Date.now() > deadline)
      throw new Error(`the Data editor holds ${JSON.stringify(seen)}, not the pasted input`);
    await new Promise((r) => setTimeout(r, 250));
  }
  await shot(page, 'start-workflow-form');
  await page.click('[data-testid="start-workflow-button"]');
  // The UI sends its start request after the click returns: wait until the server has the run.
  const until = Date.now() + 120_000;
  for (;;) {
    try {
      await client.workflow.getHandle(workflowId).describe();
      return;
    } catch (err) {
      if (!(err instanceof WorkflowNotFoundError)) throw err;
      if (Date.now() > until) throw new Error(`the Web UI did not start ${workflowId} in 120 s`);
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}

// The UI renders some controls twice (narrow and wide layouts); clicks the one on screen. Menus
// open with a transition: on a loaded machine their options exist a while before they show.
async function clickVisible(page: Page, selector: string, timeoutMs = 120_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  await page.waitForSelector(selector);
  while (Date.now() < until) {
    for (const el of await page.$$(selector)) {
      if (await el.isVisible()) return el.click();
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`no visible ${selector} after ${timeoutMs} ms`);
}

// What the page shows, frames included (the UI renders workflow details in a sandboxed iframe);
// innerText applies CSS text-transform, as a reader sees it.
async function text(page: Page): Promise<string> {
  const parts = await Promise.all(
    page.frames().map((f) => f.evaluate(() => document.body?.innerText ?? '').catch(() => '')),
  );
  return parts.join('\n');
}

async function shows(page: Page, s: string, timeoutMs = 60_000): Promise<string> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const t = await text(page);
    if (t.includes(s)) return t;
    if (Date.now() > until)
      throw new Error(
        `the page does not show "${s}" after ${timeoutMs} ms; it shows:\n${t.slice(0, 2000)}`,
      );
    await new Promise((r) => setTimeout(r, 250));
  }
}

test(
  'Start Workflow in the Web UI with the documented queue, type and validate output; ' +
    'the run page ' +
    'shows details and search attributes',
  async () => {
    const json = await validatedInput('ui-run', 2);
    const page = await newPage();
    await startFromUi(page, 'ui-run', json);
    const result = (await client.workflow.getHandle('ui-run').result()) as RunResult;
    assert.deepEqual(
      result.rounds.map((r) => r.rejectedScore),
      [3, 5],
    );
    await page.goto(ui('/workflows/ui-run'), { waitUntil: 'networkidle0' });
    await shows(page, 'COMPLETED');
    await shot(page, 'run-page');

    // The run's "current details" (workflows/run.ts runDetails) under User Metadata.
    await page.click('::-p-text(User Metadata)');
    const details = await shows(page, 'opsr run ui-run');
    await shot(page, 'run-details');
    assert.match(details, /round 2\D2, phase done, rejected score 5/);
    // The details table, row by row, as the run returned it.
    for (const r of result.rounds) {
      const cells = [
        r.round,
        r.rejectedScore,
        r.pairsKept,
        r.pairsFiltered,
        r.chosenReward!.toFixed(4),
        r.rejectedReward!.toFixed(4),
        r.policyReward!.toFixed(4),
        r.train.loss.toFixed(4),
      ];
      assert.ok(details.split('\n').includes(cells.join('\t')), `details row ${cells.join(' ')}`);
    }
    await page.click('::-p-text(Search Attributes)');
    const attributes = await shows(page, 'OpsrPhase');
    await shot(page, 'run-search-attributes');
    assert.match(attributes, /"OpsrPhase": "done"/);
    assert.match(attributes, /"OpsrRound": 2\b/);
    assert.match(attributes, /"OpsrRejectedScore": 5\b/);
    await page.close();
  },
);

test('stopAfterRound sent from the Web UI ends the run after its current round', async () => {
  // Many rounds, so the run is still going however long the UI takes to load on a busy machine.
  const json = await validatedInput('ui-stop', 30, 'fixed');
  const handle = await client.workflow.start(WORKFLOW_TYPES.run, {
    taskQueue: TASK_QUEUES.control,
    workflowId: 'ui-stop',
    args: [JSON.parse(json)],
  });
  const page = await newPage();
  await page.goto(ui('/workflows/ui-stop'), { waitUntil: 'domcontentloaded' });
  await shows(page, 'RUNNING');
  await clickVisible(page, 'button[aria-controls="workflow-actions"]');
  await clickVisible(page, '[data-testid="signal-button"]');
  // The signal list comes from the workflow's own definitions (the metadata query).
  await clickVisible(page, '[data-testid="signal-select-button"]');
  await clickVisible(page, '[role="option"]::-p-text(stopAfterRound)');
  await shot(page, 'send-signal');
  await clickVisible(
    page,
    'button[data-testid="confirm-modal-button"]:not([disabled])::-p-text(Submit)',
  );
  await page.waitForFunction(
    () => !document.body.innerText.includes('Single JSON payload supported'),
    { timeout: 60_000 },
  );
  const result = (await handle.result()) as RunResult;
  await shows(page, 'COMPLETED');
  await shot(page, 'stopped-run');

  // The signal came from the UI once; the run finished the round it was in, then stopped.
  const events = (await handle.fetchHistory()).events ?? [];
  const signalAt = events.findIndex(
    (e) => e.workflowExecutionSignaledEventAttributes?.signalName === 'stopAfterRound',
  );
  assert.ok(signalAt > 0, 'stopAfterRound is in the history');
  const roundsStarted = events
    .slice(0, signalAt)
    .filter((e) => e.startChildWorkflowExecutionInitiatedEventAttributes).length;
  assert.ok(
    roundsStarted >= 1 && roundsStarted < 30,
    `the signal arrived during round ${roundsStarted} of 30`,
  );
  assert.equal(result.stopped, true);
  assert.deepEqual(
    result.rounds.map((r) => r.round),
    Array.from({ length: roundsStarted }, (_, i) => i + 1),
  );
  await page.close();
});
