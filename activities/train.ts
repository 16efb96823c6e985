// trainPolicy (one round's preference optimization) and initPolicy (paper 3.2: SFT on seed data,
// then offline preference optimization), both through the engine. The init stage is cached by
// content hash (base model files + seed data + settings) under <storage>/cache/, so a second run
// with the same inputs reuses it.
import { mkdir, readFile, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { writeJsonAtomic } from '../lib/atomic.ts';
import { hashJson, modelHash, sha256File } from '../lib/hash.ts';
import { weightFileNames } from '../lib/modeldir.ts';
import { loadValidManifest, writeManifest } from '../lib/manifest.ts';
import { writeTokData } from '../lib/tokdata.ts';
import { loadTokenizer, type ChatMessage } from '../lib/tokenizer.ts';
import type {
  InitConfig,
  InitPolicyInput,
  InitPolicyResult,
  InitStageResult,
  TrainingConfig,
  TrainPolicyInput,
  TrainPolicyResult,
} from '../contracts/activities.ts';
import { fitToLimits, promptIds, responseIds } from './dataset.ts';
import { runEngineTrain, type EngineRun } from './engine-train.ts';
import { badInput } from './errors.ts';
import { readUserRecords } from './records.ts';
import { TrainLog } from './trainlog.ts';
import { progressNotifier, withKeepAlive } from './progress.ts';

type PreferenceSettings = Pick<TrainingConfig, 'loss' | 'beta' | 'gamma' | 'labelSmoothing'>;
type OptimizerSettings = Pick<
  TrainingConfig,
  | 'batchSize'
  | 'gradAccum'
  | 'epochs'
  | 'maxSteps'
  | 'warmupRatio'
  | 'schedule'
  | 'weightDecay'
  | 'gradClip'
  | 'seed'
  | 'checkpointEvery'
>;

// Engine flags for the optimizer part of a stage (shared by rounds, SFT and offline).
function optimizerFlags(t: OptimizerSettings, lr: number, threads: number | undefined): string[] {
  return [
    '--lr',
    String(lr),
    '--weight-decay',
    String(t.weightDecay),
    '--warmup-ratio',
    String(t.warmupRatio),
    '--schedule',
    t.schedule,
    '--grad-clip',
    String(t.gradClip),
    '--batch-size',
    String(t.batchSize),
    '--grad-accum',
    String(t.gradAccum),
    '--epochs',
    String(t.epochs),
    '--seed',
    String(t.seed),
    '--checkpoint-every',
    String(t.checkpointEvery),
    ...(t.maxSteps !== undefined ? ['--max-steps', String(t.maxSteps)] : []),
    ...(threads !== undefined ? ['--threads', String(threads)] : []),
  ];
}

function lossFlags(p: PreferenceSettings): string[] {
  return [
    '--loss',
    p.loss,
    '--beta',
    String(p.beta),
    ...(p.loss === 'simpo' && p.gamma !== undefined ? ['--gamma', String(p.gamma)] : []),
    ...(p.loss === 'dpo' && p.labelSmoothing
      ? ['--label-smoothing', String(p.labelSmoothing)]
      : []),
  ];
}

interface StageSpec {
  outDir: string; // engine --out; its manifest.json marks the stage done
  modelDir: string; // starting weights (and the reference for dpo-like losses)
  dataFile: string;
  flags: string[]; // loss and optimizer flags
  enginePath?: string;
  inputs: Record<string, string>;
  // at start and each step
  onProgress?: (e: { step: number; totalSteps: number; metrics: Record<string, number> }) => void;
  tensorboardDir?: string; // per-step metrics as TensorBoard scalars (and OUT/metrics.jsonl)
}

// Runs (or reuses) one engine training stage. Checkpoints from a different stage spec are
// discarded first: resuming them would mix two runs.
async function trainStage(spec: StageSpec): Promise<EngineRun & { reused: boolean }> {
  const manifestPath = join(spec.outDir, 'manifest.json');
  const configHash = hashJson({ flags: spec.flags });
  const done = await loadValidManifest(manifestPath, {
    step: 'train',
    configHash,
    inputs: spec.inputs,
  });
  if (done)
    return {
      ...(done.data as unknown as EngineRun),
      finalDir: join(spec.outDir, 'final'),
      reused: true,
    };
  const specFile = join(spec.outDir, 'spec.json');
  const want = hashJson({ configHash, inputs: spec.inputs });
  const have = await readFile(specFile, 'utf8').then(
    (t) => (JSON.parse(t) as { hash?: string }).hash,
    () => null,
  );
  if (have !== want) {
    await rm(spec.outDir, { recursive: true, force: true });
    await mkdir(spec.outDir, { recursive: true });
    await writeJsonAtomic(specFile, { hash: want });
  }
  const log = spec.tensorboardDir
    ? new TrainLog(join(spec.outDir, 'metrics.jsonl'), spec.tensorboardDir)
    : null;
  const run = await runEngineTrain({
    enginePath: spec.enginePath,
    outDir: spec.outDir,
    onProgress: spec.onProgress,
    modelDir: spec.modelDir,
    onEvent: log ? (line, e) => log.onEvent(line, e) : undefined,
    args: ['--data', spec.dataFile, ...spec.flags],
  }).finally(() => log?.flush());
  await writeManifest(manifestPath, {
    step: 'train',
    configHash,
    inputs: spec.inputs,
    // Single-file or sharded weights, as the engine wrote them.
    outputs: {
      config: join(run.finalDir, 'config.json'),
      ...Object.fromEntries(
        (await weightFileNames(run.finalDir)).map((f) => [f, join(run.finalDir, f)]),
      ),
    },
    counts: { steps: run.steps },
    data: { ...run },
  });
  return { ...run, reused: false };
}

export async function trainPolicy(input: TrainPolicyInput): Promise<TrainPolicyResult> {
  const t = input.training;
  const outDir = join(input.roundDir, 'train');
  const notify = progressNotifier(input.notify);
  const run = await trainStage({
    outDir,
    modelDir: input.referenceModelDir,
    dataFile: input.dataFile,
    enginePath: t.engine.path,
    flags: [...lossFlags(t), ...optimizerFlags(t, input.learningRate, t.engine.threads)],
    inputs: {
      data: await sha256File(input.dataFile),
      reference: await modelHash(input.referenceModelDir),
    },
    onProgress: (e) =>
      notify({ kind: 'training', round: input.round, ...e }, e.step === e.totalSteps),
    tensorboardDir: join(dirname(input.roundDir), 'tensorboard', `round-${input.round}`),
  });
  return {
    modelDir: run.finalDir,
    outDir,
    steps: run.steps,
    resumedFrom: run.resumedFrom,
    metrics: run.metrics,
  };
}

// ---- init stage ---------------------------------------------------------------------------------

type Conversation = ChatMessage[];

export function checkSft(rec: unknown): string | null {
  const r = rec as Record<string, unknown>;
  if (!r || typeof r !== 'object')
    return 'record must be an object with "prompt" and "completion" strings, or "messages"';
  if (typeof r.prompt === 'string' && typeof r.completion === 'string')
    return r.completion.length ? null : '"completion" must not be empty';
  if (Array.isArray(r.messages)) {
    const m = r.messages as Conversation;
    if (m.length < 2 || m[m.length - 1]?.role !== 'assistant')
      return (
        '"messages" must end with an "assistant" turn (the completion) after at least ' +
        'one prompt turn'
      );
    return m.every((x) => x && typeof x.role === 'string' && typeof x.content === 'string')
      ? null
      : '"messages" items must be {role: string, content: string}';
  }
  return (
    'record needs "prompt" + "completion" strings, or "messages" (chat ending in an ' +
    'assistant turn)'
  );
}

const isText = (v: unknown) =>
  typeof v === 'string' ||
  (Array.isArray(v) &&
    v.every((m) => m && typeof m.role === 'string' && typeof m.content === 'string'));
export function checkPair(rec: unknown): string | null {
  const r = rec as Record<string, unknown>;
  if (!r || typeof r !== 'object') return 'record must be an object {prompt, chosen, rejected}';
  for (const k of ['prompt', 'chosen', 'rejected']) {
    if (!isText(r[k]))
      return (
        `"${k}" must be a string or a list of {role, content} messages (TRL preference ` + `format)`
      );
  }
  return null;
}
// A conversational answer is its assistant turns' text.
const answerText = (v: string | Conversation) =>
  typeof v === 'string'
    ? v
    : v
        .filter((m) => m.role === 'assistant')
        .map((m) => m.content)
        .join('');

async function sftData(
  file: string,
  modelDir: string,
  out: string,
  lim: { maxLength: number; maxPromptLength: number },
): Promise<number> {
  const tok = await loadTokenizer(modelDir);
  const recs = await readUserRecords<{
    prompt?: string;
    completion?: string;
    messages?: Conversation;
  }>('init.sft.data', file, checkSft);
  const records = recs
    .map((r, i) => {
      const prompt = r.messages ? r.messages.slice(0, -1) : r.prompt!;
      const completion = r.messages ? r.messages[r.messages.length - 1].content : r.completion!;
      const fit = fitToLimits(
        promptIds(tok, prompt, `init.sft.data ${file}: record ${i + 1}`),
        [responseIds(tok, completion, 'stop')],
        lim,
      );
      return { prompt: fit.prompt, response: fit.responses[0] };
    })
    .filter((r) => r.response.length > 0);
  if (records.length === 0)
    throw badInput(
      `init.sft.data ${file}: no record keeps a response token within maxLength ${lim.maxLength}`,
    );
  await writeTokData(out, { kind: 'sft', records });
  return records.length;
}

async function pairData(
  file: string,
  modelDir: string,
  out: string,
  lim: { maxLength: number; maxPromptLength: number },
): Promise<number> {
  const tok = await loadTokenizer(modelDir);
  const recs = await readUserRecords<{
    prompt: string | Conversation;
    chosen: string | Conversation;
    rejected: string | Conversation;
  }>('init.offline.data', file, checkPair);
  const records = recs
    .map((r, i) => {
      const fit = fitToLimits(
        promptIds(tok, r.prompt, `init.offline.data ${file}: record ${i + 1}`),
        [
          responseIds(tok, answerText(r.chosen), 'stop'),
          responseIds(tok, answerText(r.rejected), 'stop'),
        ],
        lim,
      );
      return { prompt: fit.prompt, chosen: fit.responses[0], rejected: fit.responses[1] };
    })
    .filter((r) => r.chosen.length > 0 && r.rejected.length > 0);
  if (records.length === 0)
    throw badInput(
      `init.offline.data ${file}: no pair keeps both answers within maxLength ${lim.maxLength}`,
    );
  await writeTokData(out, { kind: 'preference', records });
  return records.length;
}

async function initStage(
  kind: 'sft' | 'offline',
  stage: NonNullable<InitConfig['sft']> | NonNullable<InitConfig['offline']>,
  modelDir: string,
  input: InitPolicyInput,
): Promise<InitStageResult> {
  const t = input.training;
  const lim = {
    maxLength: stage.maxLength ?? t.maxLength,
    maxPromptLength:
      ('maxPromptLength' in stage ? stage.maxPromptLength : undefined) ?? t.maxPromptLength,
  };
  const flags =
    kind === 'sft'
      ? ['--loss', 'sft', ...optimizerFlags(stage, stage.learningRate, t.engine.threads)]
      : [
          ...lossFlags(stage as PreferenceSettings),
          ...optimizerFlags(stage, stage.learningRate, t.engine.threads),
        ];
  const data = await sha256File(stage.data).catch((e: Error) => {
    throw badInput(`init.${kind}.data: cannot read ${stage.data} (${e.message})`);
  });
  const inputs = { model: await modelHash(modelDir), data };
  const key = hashJson({ kind, flags, lim, inputs });
  const dir = join(dirname(dirname(input.runDir)), 'cache', `init-${kind}-${key.slice(0, 16)}`);
  const dataFile = join(dir, 'data.bin');
  await mkdir(dir, { recursive: true });
  const notify = progressNotifier(input.notify);
  // The directory is named by the content hash, so a data file already there came from these
  // inputs.
  const countFile = join(dir, 'data.json');
  let records = await readFile(countFile, 'utf8').then(
    (t) => (JSON.parse(t) as { records: number }).records,
    () => -1,
  );
  if (records < 0) {
    records = await withKeepAlive(
      () => ({ step: 0, checkpoint: null }),
      () =>
        kind === 'sft'
          ? sftData(stage.data, modelDir, dataFile, lim)
          : pairData(stage.data, modelDir, dataFile, lim),
    );
    await writeJsonAtomic(countFile, { records });
  }
  const run = await trainStage({
    outDir: join(dir, 'train'),
    modelDir,
    dataFile,
    flags,
    inputs,
    enginePath: t.engine.path,
    onProgress: (e) => notify({ kind: 'training', round: 0, ...e }, e.step === e.totalSteps),
  });
  return { modelDir: run.finalDir, records, metrics: run.metrics, cached: run.reused };
}

export async function initPolicy(input: InitPolicyInput): Promise<InitPolicyResult> {
  let modelDir = input.baseModel;
  const sft = input.init.sft ? await initStage('sft', input.init.sft, modelDir, input) : null;
  if (sft) modelDir = sft.modelDir;
  const offline = input.init.offline
    ? await initStage('offline', input.init.offline, modelDir, input)
    : null;
  if (offline) modelDir = offline.modelDir;
  return { modelDir, sft, offline };
}
