// A managed vLLM server that is alive but broken (/health passes, requests answer HTTP 500, as the
// CPU build after its engine died) is caught: at start by the 1-token probe, during sampling by
// samplePairs. The attempt fails and stops the server, the next attempt starts a fresh one, and
// when that one fails too the failure is final and names the server's own message.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MockActivityEnvironment } from '@temporalio/testing';
import { parseRunConfig, type RunConfig } from '../../config/index.ts';
import { prepareRun } from '../../activities/prepare.ts';
import { createActivities, SamplerPool } from '../../activities/index.ts';
import type { SamplingConfig } from '../../contracts/activities.ts';
import { readJsonl } from '../../lib/jsonl.ts';
import { REPO, initTinyGpt2 } from '../helpers/tiny-gpt2.ts';
import { alive, freePort } from '../helpers/vllm.ts';

const samplers = new SamplerPool();
const { samplePairs } = createActivities({ samplers });

const root = await mkdtemp(join(tmpdir(), 'opsr-vllm-broken-'));
const modelDir = join(root, 'model');
const fakeVllm = join(root, 'vllm');
const MESSAGE = 'RuntimeError: CPU Generator does not use offset';
let config: RunConfig;
let promptsFile: string;

before(async () => {
  await initTinyGpt2(modelDir, { nEmbd: 16, nLayer: 1, seed: 1 });
  const fake = join(REPO, 'test', 'helpers', 'fake-vllm.ts');
  await writeFile(fakeVllm, `#!/bin/sh\nexec "${process.execPath}" --import tsx "${fake}" "$@"\n`);
  await chmod(fakeVllm, 0o755);
  const prompts = join(root, 'prompts.jsonl');
  await writeFile(prompts, '{"prompt": "a"}\n{"prompt": "b"}\n');
  config = parseRunConfig({
    model: modelDir,
    storage: join(root, 'store'),
    prompts: { file: prompts },
    training: { maxLength: 256, maxPromptLength: 128 },
    sampling: { maxTokens: 2 }, // tiny context
  });
  promptsFile = (await prepareRun({ runId: 'broken', config })).promptsFile;
});
after(async () => {
  await samplers.close();
  await rm(root, { recursive: true, force: true });
});

// A managed server launched by the stand-in, broken after `good` completions; env reaches it
// through sampling.vllm.env.
async function brokenSampling(good: number, log: string): Promise<SamplingConfig> {
  return {
    ...config.sampling,
    lifecycle: 'managed-vllm',
    maxTokens: 2,
    vllm: {
      ...config.sampling.vllm,
      executable: fakeVllm,
      port: await freePort(),
      startupTimeoutS: 60,
      env: { FAKE_VLLM_BROKEN: MESSAGE, FAKE_VLLM_GOOD: String(good), FAKE_VLLM_LOG: log },
    },
  };
}

type Failure = Error & { type?: string; nonRetryable?: boolean };
const retryable = (re: RegExp) => (e: Failure) => {
  assert.match(e.message, re);
  assert.equal(e.nonRetryable ?? false, false, 'the first failure is retried');
  return true;
};
const final = (e: Failure) => {
  assert.equal(e.type, 'SamplerBroken');
  assert.equal(e.nonRetryable, true);
  assert.match(e.message, /failed again after a restart: .*CPU Generator does not use offset/);
  return true;
};

test('health passes, generation fails: caught at start, restarted once, then final', async () => {
  const log = join(root, 'start.log');
  const sampling = await brokenSampling(0, log);
  await assert.rejects(
    samplers.ensure({ runId: 'r', modelDir, sampling }),
    retryable(
      new RegExp(
        /1-token completion answered HTTP 500: .*CPU Generator does not use offset.*/.source +
          / \(it carried a per-request seed: .* needs sampling.perRequestSeeds false\).*next/
            .source,
      ),
    ),
  );
  await assert.rejects(samplers.ensure({ runId: 'r', modelDir, sampling }), final);
  const launches = await readJsonl<{ pid: number }>(log);
  assert.equal(launches.length, 2, 'one restart, no retry loop');
  for (const l of launches) assert.equal(alive(l.pid), false, 'each broken server was stopped');
});

test('server breaking while sampling fails the attempt; a failing restart ends it', async () => {
  const log = join(root, 'sample.log');
  const sampling = await brokenSampling(1, log); // the probe passes, sampling gets 500s
  const endpoint = await samplers.ensure({ runId: 'r', modelDir, sampling });
  const input = {
    runId: 'broken',
    round: 1,
    roundDir: join(root, 'round-1'),
    promptsFile,
    endpoint,
    sampling,
    prefixes: config.prefixes,
    chosenScore: 10,
    rejectedScore: 3,
    notify: [],
  };
  await assert.rejects(
    new MockActivityEnvironment().run(samplePairs, input),
    retryable(/server failed \(500 .*CPU Generator does not use offset\); stopped/),
  );
  await assert.rejects(new MockActivityEnvironment().run(samplePairs, input), final);
  const launches = await readJsonl<{ pid: number }>(log);
  assert.equal(launches.length, 2);
  for (const l of launches) assert.equal(alive(l.pid), false);
});
