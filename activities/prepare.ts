// prepareRun: the run directory with a snapshot of the resolved config and the run's prompt list
// (limit and shuffle applied), after checking the base model directory and asking the reward
// model for one score.
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ApplicationFailure } from '@temporalio/common';
import { ConfigError } from '../config/errors.ts';
import { writeFileAtomic } from '../lib/atomic.ts';
import { hashJson } from '../lib/hash.ts';
import { toJsonl } from '../lib/jsonl.ts';
import { checkModelDir, ModelDirError } from '../lib/modeldir.ts';
import type { PrepareRunInput, PrepareRunResult } from '../contracts/activities.ts';
import { runConfigProblems } from './load-config.ts';
import { badInput } from './errors.ts';
import { loadPromptsFor } from './prompts.ts';
import { checkRewardModel } from './rewards.ts';

export async function prepareRun(input: PrepareRunInput): Promise<PrepareRunResult> {
  const config = input.config;
  const runDir = join(config.storage, 'runs', input.runId);
  const configFile = join(runDir, 'config.json');
  const promptsFile = join(runDir, 'prompts.jsonl');
  const configHash = hashJson(config);
  // Single-file or sharded weights of a supported architecture, before anything is sampled.
  await checkModelDir(config.model).catch((err: unknown) => {
    throw err instanceof ModelDirError ? badInput(`model: ${err.message}`) : err;
  });
  // What `opsr validate` refuses, refused with the same lines before anything is spent, however
  // the workflow was started (a client that skipped validate, a schedule, an old config).
  const problems = await runConfigProblems(config, { inputsExist: true });
  if (problems.length) {
    const err = new ConfigError('workflow input', problems);
    throw ApplicationFailure.nonRetryable(err.message, 'ConfigError', ...problems);
  }
  if (config.rewardModel) await checkRewardModel(config.rewardModel);
  const previous = await readFile(configFile, 'utf8').then(
    (t) => JSON.parse(t) as unknown,
    () => null,
  );
  if (previous !== null && hashJson(previous) !== configHash) {
    throw badInput(
      `run ${input.runId} already exists in ${runDir} with a different config ` +
        `(${configFile}); choose another runId or restore that config`,
    );
  }
  const prompts = await loadPromptsFor('prompts.file', config.prompts);
  await mkdir(runDir, { recursive: true });
  if (previous === null) await writeFileAtomic(configFile, JSON.stringify(config, null, 2) + '\n');
  await writeFileAtomic(
    promptsFile,
    toJsonl(
      prompts.map((p) =>
        p.messages
          ? { index: p.index, messages: p.messages }
          : { index: p.index, prompt: p.prompt },
      ),
    ),
  );
  return {
    runId: input.runId,
    runDir,
    configHash,
    configFile,
    promptsFile,
    promptCount: prompts.length,
    baseModel: config.model,
  };
}
