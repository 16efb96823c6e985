import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  ConfigError,
  DEFAULT_CHOSEN_TEMPLATE,
  PRESETS_DIR,
  parseAblationConfig,
  parseRunConfig,
  withSeed,
} from '../../config/index.ts';
import { loadAblationConfig, loadRunConfig } from '../../activities/load-config.ts';

const MIN = { model: 'model', prompts: { file: 'prompts.jsonl' } };

function problems(input: unknown): string[] {
  try {
    parseRunConfig(input, { baseDir: '/cfg' });
  } catch (e) {
    assert.ok(e instanceof ConfigError, `expected ConfigError, got ${String(e)}`);
    return e.issues;
  }
  assert.fail(`expected ${JSON.stringify(input)} to be rejected`);
}

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'opsr-config-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('presets', () => {
  test('every preset in config/presets validates', async () => {
    const files = (await readdir(PRESETS_DIR)).filter((f) => f.endsWith('.json'));
    for (const f of [
      'mistral-7b-base-paper.json',
      'mistral-7b-instruct-paper.json',
      'ablation-fixed-vs-progressive.json',
    ]) {
      assert.ok(files.includes(f), `${f} missing`);
    }
    for (const f of files) {
      const file = join(PRESETS_DIR, f);
      if (f.startsWith('ablation-')) {
        const { config } = await loadAblationConfig(file, { cwd: dir });
        assert.ok(config.arms.length >= 2, f);
      } else {
        const c = await loadRunConfig(file, { cwd: dir });
        assert.ok(c.model.startsWith('/'), `${f}: model resolved to an absolute path`);
        assert.equal(c.prefixes.rejectedScores.length, c.rounds, f);
      }
    }
  });

  test('the paper presets carry SimPO settings and the per-round learning rate', async () => {
    const base = await loadRunConfig(join(PRESETS_DIR, 'mistral-7b-base-paper.json'));
    assert.equal(base.training.loss, 'simpo');
    assert.equal(base.training.beta, 2.0);
    assert.ok(Math.abs(base.training.gamma! - 1.6) < 1e-12);
    assert.deepEqual(base.training.learningRate, [3e-7, 1e-7, 1e-8]);
    assert.equal(base.training.batchSize * base.training.gradAccum, 128);
    assert.deepEqual([base.training.maxLength, base.training.maxPromptLength], [1024, 512]);
    assert.deepEqual(base.prefixes.rejectedScores, [3, 5, 7]);
    assert.equal(base.sampling.lifecycle, 'managed-vllm');
    const inst = await loadRunConfig(join(PRESETS_DIR, 'mistral-7b-instruct-paper.json'));
    assert.equal(inst.training.beta, 2.5);
    assert.ok(Math.abs(inst.training.gamma! - 0.25) < 1e-12);
    assert.deepEqual(inst.training.learningRate, [5e-7, 1e-7, 1e-8]);
    assert.deepEqual([inst.training.maxLength, inst.training.maxPromptLength], [2048, 1800]);
    assert.equal(inst.training.batchSize * inst.training.gradAccum, 128);
  });

  test('the ablation preset: fixed [3,3,3] vs progressive [3,5,7] on the base preset', async () => {
    const { config, input } = await loadAblationConfig(
      join(PRESETS_DIR, 'ablation-fixed-vs-progressive.json'),
    );
    assert.deepEqual(
      config.arms.map((a) => [a.name, a.config.prefixes.rejectedScores]),
      [
        ['fixed', [3, 3, 3]],
        ['progressive', [3, 5, 7]],
      ],
    );
    assert.equal(config.arms[0].config.model, join(PRESETS_DIR, 'models/zephyr-7b-sft-full'));
    // The workflow input (base inlined, absolute paths) parses to the same arms.
    assert.deepEqual(parseAblationConfig(JSON.parse(JSON.stringify(input))), config);
    assert.deepEqual(config.seeds, [0, 1, 2]);
  });

  test('ablation seeds: distinct; one seed drives sampling, training, init and the run id', () => {
    const base = { ...MIN, runId: 'abl', init: { sft: { data: 'sft.jsonl', seed: 9 } } };
    assert.throws(
      () => parseAblationConfig({ base, arms: [{ name: 'a' }], seeds: [0, 1, 0] }),
      (e: Error) => e.message.includes('seeds[2]: is used twice (got 0; allowed distinct seeds)'),
    );
    assert.throws(
      () => parseAblationConfig({ base, arms: [{ name: 'a' }], seeds: [-1] }),
      /seeds\[0\]/,
    );
    const arm = parseAblationConfig(
      { base, arms: [{ name: 'a' }], seeds: [4] },
      { baseDir: '/cfg' },
    ).arms[0].config;
    const seeded = withSeed(arm, 4);
    assert.deepEqual(
      [seeded.runId, seeded.sampling.seed, seeded.training.seed, seeded.init!.sft!.seed],
      ['abl-seed-4', 4, 4, 4],
    );
    assert.deepEqual(withSeed(arm, 4), withSeed(arm, 4));
    assert.equal(arm.sampling.seed, 0, 'the arm itself is unchanged');
  });
});

describe('resolution', () => {
  test('defaults, paper templates, progressive schedule, absolute paths', () => {
    const c = parseRunConfig(MIN, { baseDir: '/cfg/dir', cwd: '/work' });
    assert.equal(c.model, '/cfg/dir/model');
    assert.equal(c.prompts.file, '/cfg/dir/prompts.jsonl');
    assert.equal(c.storage, '/work/.opsr');
    assert.equal(c.rounds, 3);
    assert.equal(c.prefixes.chosenTemplate, DEFAULT_CHOSEN_TEMPLATE);
    assert.match(
      c.prefixes.rejectedTemplate,
      new RegExp(
        /^Please produce a good response that /.source +
          /merits a perfect score of \{score\} out of 10\. \{prompt\}$/.source,
      ),
    );
    assert.deepEqual(c.prefixes.rejectedScores, [3, 5, 7]);
    assert.equal(c.training.loss, 'simpo');
    assert.equal(c.training.beta, 2.0);
    assert.equal(c.training.gamma, 1.0); // simpo default ratio 0.5
    assert.deepEqual(c.training.learningRate, [3e-7, 3e-7, 3e-7]);
    assert.equal(c.sampling.lifecycle, 'embedded');
    assert.equal(c.temporal.address, '127.0.0.1:7233');
  });

  test('schedules: progressive for M=4, fixed, explicit; learning rate per round; dpo beta', () => {
    assert.deepEqual(parseRunConfig({ ...MIN, rounds: 4 }).prefixes.rejectedScores, [3, 5, 7, 9]);
    assert.deepEqual(
      parseRunConfig({ ...MIN, rounds: 2, prefixes: { rejectedScores: 'fixed', fixedScore: 4 } })
        .prefixes.rejectedScores,
      [4, 4],
    );
    assert.deepEqual(
      parseRunConfig({ ...MIN, prefixes: { rejectedScores: [3, 5, 9] } }).prefixes.rejectedScores,
      [3, 5, 9],
    );
    const d = parseRunConfig({
      ...MIN,
      rounds: 2,
      training: { loss: 'dpo', learningRate: [1e-6, 1e-7] },
    });
    assert.deepEqual(d.training.learningRate, [1e-6, 1e-7]);
    assert.equal(d.training.beta, 0.1);
    assert.equal('gamma' in d.training, false);
    assert.equal(
      parseRunConfig({ ...MIN, training: { beta: 2.5, gammaBetaRatio: 0.1 } }).training.gamma,
      0.25,
    );
  });

  test('a resolved config parses again to itself (the workflow re-validates it)', () => {
    for (const extra of [
      {},
      { training: { loss: 'dpo' } },
      { prefixes: { rejectedScores: 'fixed' } },
      { init: { offline: { data: 'p.jsonl', gammaBetaRatio: 0.8 } } },
    ]) {
      const c = parseRunConfig({ ...MIN, ...extra }, { baseDir: '/a', cwd: '/b' });
      assert.deepEqual(parseRunConfig(JSON.parse(JSON.stringify(c))), c);
    }
  });

  test('loadRunConfig: paths relative to file; JSON errors name file, line, column', async () => {
    const good = join(dir, 'run.json');
    await writeFile(good, JSON.stringify({ ...MIN, storage: 'store' }));
    const c = await loadRunConfig(good);
    assert.equal(c.model, join(dir, 'model'));
    assert.equal(c.storage, join(dir, 'store'));
    const bad = join(dir, 'bad.json');
    await writeFile(bad, '{\n  "model": "m",\n  "rounds": 3,,\n}\n');
    await assert.rejects(loadRunConfig(bad), (e: Error) => {
      assert.ok(e instanceof ConfigError);
      assert.match(
        e.message,
        new RegExp(`${bad.replaceAll('.', '\\.')}: .*\\n  line 3, column 15: invalid JSON`),
      );
      return true;
    });
    const scorer = join(dir, 'scorer.json');
    await writeFile(
      scorer,
      JSON.stringify({ ...MIN, rewardModel: { type: 'builtin', name: 'gsm8k' } }),
    );
    await assert.rejects(
      loadRunConfig(scorer),
      /rewardModel\.name: is not a builtin scorer \(got "gsm8k"; allowed one of "digits"/,
    );
    await assert.rejects(
      loadRunConfig(join(dir, 'missing.json')),
      /missing\.json: .*cannot read the file \(ENOENT\)/s,
    );
  });
});

// [what, input, field path, bad value as printed, text of "allowed"]
const BAD: [string, unknown, string, string, string][] = [
  ['missing model', { prompts: { file: 'p' } }, 'model', 'nothing', 'a path'],
  ['model not a string', { ...MIN, model: 3 }, 'model', '3', 'a path'],
  ['rounds zero', { ...MIN, rounds: 0 }, 'rounds', '0', '>= 1'],
  ['rounds fractional', { ...MIN, rounds: 2.5 }, 'rounds', '2.5', 'an integer'],
  ['unknown top-level field', { ...MIN, roundz: 3 }, 'roundz', '3', 'rounds'],
  [
    'typo in sampling',
    { ...MIN, sampling: { temprature: 1 } },
    'sampling.temprature',
    '1',
    'temperature',
  ],
  [
    'rejectedScores unknown word',
    { ...MIN, prefixes: { rejectedScores: 'prog' } },
    'prefixes.rejectedScores',
    '"prog"',
    '"progressive"',
  ],
  [
    'rejectedScores wrong length',
    { ...MIN, prefixes: { rejectedScores: [3, 5] } },
    'prefixes.rejectedScores',
    '[3,5]',
    'exactly 3 scores',
  ],
  [
    'rejected score above 10',
    { ...MIN, prefixes: { rejectedScores: [3, 5, 11] } },
    'prefixes.rejectedScores[2]',
    '11',
    'from 0 to 10',
  ],
  [
    'rejected equal to chosen',
    { ...MIN, prefixes: { chosenScore: 7, rejectedScores: [3, 5, 7] } },
    'prefixes.rejectedScores[2]',
    '7',
    'rejected score < chosenScore (7)',
  ],
  [
    'negative rejected score',
    { ...MIN, prefixes: { rejectedScores: [-1, 5, 7] } },
    'prefixes.rejectedScores[0]',
    '-1',
    '>= 0',
  ],
  [
    'progressive reaches chosen',
    { ...MIN, rounds: 5 },
    'prefixes.rejectedScores',
    '"progressive"',
    'at most 4 rounds',
  ],
  [
    'fixed score not below chosen',
    { ...MIN, prefixes: { rejectedScores: 'fixed', fixedScore: 10 } },
    'prefixes.fixedScore',
    '10',
    'rejected score < chosenScore (10)',
  ],
  [
    'template without {prompt}',
    { ...MIN, prefixes: { chosenTemplate: 'merits {score}' } },
    'prefixes.chosenTemplate',
    '"merits {score}"',
    'both {score} and {prompt}',
  ],
  [
    'learning rate list wrong length',
    { ...MIN, training: { learningRate: [1e-7, 1e-8] } },
    'training.learningRate',
    '[1e-7,1e-8]',
    'exactly 3',
  ],
  [
    'learning rate negative',
    { ...MIN, training: { learningRate: -1 } },
    'training.learningRate',
    '-1',
    'a positive number',
  ],
  [
    'gamma and inconsistent ratio',
    { ...MIN, training: { gamma: 1, gammaBetaRatio: 0.8 } },
    'training.gamma',
    '1',
    'at most one of gamma and gammaBetaRatio',
  ],
  [
    'gamma with dpo',
    { ...MIN, training: { loss: 'dpo', gamma: 0.5 } },
    'training.gamma',
    '0.5',
    'loss to "simpo"',
  ],
  [
    'unknown loss',
    { ...MIN, training: { loss: 'kto' } },
    'training.loss',
    '"kto"',
    '"simpo", "dpo", "ipo", "hinge"',
  ],
  [
    'unknown schedule',
    { ...MIN, training: { schedule: 'step' } },
    'training.schedule',
    '"step"',
    '"cosine", "linear", "constant"',
  ],
  [
    'prompt length leaves no room',
    { ...MIN, training: { maxLength: 512, maxPromptLength: 512 } },
    'training.maxPromptLength',
    '512',
    'below training.maxLength (512)',
  ],
  [
    'regex does not compile',
    { ...MIN, filter: { scoreTalkPatterns: ['ok', '(unclosed'] } },
    'filter.scoreTalkPatterns[1]',
    '"(unclosed"',
    'regular expression',
  ],
  [
    'external without baseURL',
    { ...MIN, sampling: { lifecycle: 'external', model: 'm' } },
    'sampling.baseURL',
    'nothing',
    'OpenAI-compatible URL',
  ],
  [
    'external without served model',
    { ...MIN, sampling: { lifecycle: 'external', baseURL: 'http://127.0.0.1:8000/v1' } },
    'sampling.model',
    'nothing',
    'served model name',
  ],
  [
    'unknown lifecycle',
    { ...MIN, sampling: { lifecycle: 'docker' } },
    'sampling.lifecycle',
    '"docker"',
    '"embedded", "external", "managed-vllm"',
  ],
  [
    'unknown embedded dtype',
    { ...MIN, sampling: { embedded: { dtype: 'fp16' } } },
    'sampling.embedded.dtype',
    '"fp16"',
    '"fp32", "bf16"',
  ],
  [
    'managed-vllm with empty executable',
    { ...MIN, sampling: { lifecycle: 'managed-vllm', vllm: { executable: '' } } },
    'sampling.vllm.executable',
    '""',
    'vllm executable',
  ],
  [
    'managed-vllm args set the port opsr waits on',
    {
      ...MIN,
      sampling: {
        lifecycle: 'managed-vllm',
        vllm: { args: ['--dtype', 'bfloat16', '--port=9000'] },
      },
    },
    'sampling.vllm.args[2]',
    '"--port=9000"',
    'sampling.vllm.port instead',
  ],
  [
    'managed-vllm args name the served model',
    {
      ...MIN,
      sampling: { lifecycle: 'managed-vllm', vllm: { args: ['--served-model-name', 'x'] } },
    },
    'sampling.vllm.args[0]',
    '"--served-model-name"',
    'sampling.model instead',
  ],
  [
    'managed-vllm env name with a space',
    { ...MIN, sampling: { lifecycle: 'managed-vllm', vllm: { env: { 'VLLM X': '1' } } } },
    'sampling.vllm.env.VLLM X',
    '"VLLM X"',
    'letters, digits and _',
  ],
  [
    'baseURL without lifecycle external',
    { ...MIN, sampling: { baseURL: 'http://127.0.0.1:8000/v1', model: 'm' } },
    'sampling.baseURL',
    '"http://127.0.0.1:8000/v1"',
    'lifecycle to "external"',
  ],
  [
    'baseURL not http',
    { ...MIN, sampling: { lifecycle: 'external', model: 'm', baseURL: 'localhost:8000' } },
    'sampling.baseURL',
    '"localhost:8000"',
    'http:// or https://',
  ],
  [
    'extra overrides a typed field',
    { ...MIN, sampling: { extra: { temperature: 2 } } },
    'sampling.extra.temperature',
    '2',
    'sampling.temperature instead',
  ],
  ['topP above 1', { ...MIN, sampling: { topP: 1.5 } }, 'sampling.topP', '1.5', '<= 1'],
  [
    'temporal address without port',
    { ...MIN, temporal: { address: 'localhost' } },
    'temporal.address',
    '"localhost"',
    'host:port',
  ],
  ['runId with a slash', { ...MIN, runId: 'a/b' }, 'runId', '"a/b"', 'A-Z a-z 0-9 . _ -'],
  [
    'reward model type unknown',
    { ...MIN, rewardModel: { type: 'gpt4' } },
    'rewardModel.type',
    '"gpt4"',
    '"vllm-classify"',
  ],
  [
    'evaluation without reward model',
    { ...MIN, evaluation: { prompts: { file: 'e.jsonl' } } },
    'rewardModel',
    'nothing',
    'a reward model',
  ],
  [
    'prefix score out of range',
    {
      ...MIN,
      rewardModel: { type: 'builtin', name: 'digits' },
      evaluation: { prompts: { file: 'e' }, prefixScores: [0, 11] },
    },
    'evaluation.prefixScores[1]',
    '11',
    'from 0 to 10',
  ],
  [
    'label smoothing with simpo',
    { ...MIN, training: { labelSmoothing: 0.1 } },
    'training.labelSmoothing',
    '0.1',
    'loss "dpo"',
  ],
  [
    'init offline without data',
    { ...MIN, init: { offline: { loss: 'simpo' } } },
    'init.offline.data',
    'nothing',
    'a path',
  ],
  [
    'digits task lengths reversed',
    { ...MIN, task: { digits: { minLength: 7, maxLength: 5 } } },
    'task.digits.minLength',
    '7',
    'from 1 to task.digits.maxLength (5)',
  ],
  [
    'digits task: 11 distinct digits',
    { ...MIN, task: { digits: { maxLength: 11 } } },
    'task.digits.maxLength',
    '11',
    'at most 10 without repeats, or "repeats": true',
  ],
  [
    'digits task: longer than the model holds',
    { ...MIN, task: { digits: { maxLength: 13, repeats: true } } },
    'task.digits.maxLength',
    '13',
    '<= 12',
  ],
  [
    'digits task: sampling cuts the longest answers',
    { ...MIN, task: { digits: { maxLength: 9, repeats: true } }, sampling: { maxTokens: 8 } },
    'sampling.maxTokens',
    '8',
    'at least 10 (one token per digit and the end of text)',
  ],
  [
    'judge: rubricLogprobs is a flag',
    {
      ...MIN,
      judges: {
        j: {
          type: 'openai',
          baseURL: 'http://127.0.0.1:8001/v1',
          model: 'm',
          rubricLogprobs: 'on',
        },
      },
    },
    'judges.j.rubricLogprobs',
    '"on"',
    'true or false',
  ],
  [
    'digits task: unknown option',
    { ...MIN, task: { digits: { lenght: 9 } } },
    'task.digits.lenght',
    '9',
    'minLength',
  ],
];

describe('bad fields', () => {
  for (const [what, input, path, got, allowed] of BAD) {
    test(what, () => {
      const lines = problems(input);
      const line = lines.find((l) => l.startsWith(`${path}: `));
      assert.ok(line, `no problem reported for ${path}; got:\n${lines.join('\n')}`);
      assert.ok(line.includes(`(got ${got};`), `value ${got} not named in: ${line}`);
      const allowedText = line.slice(line.indexOf('; allowed ') + 10);
      assert.ok(allowedText.includes(allowed), `"${allowed}" not in the allowed part of: ${line}`);
    });
  }

  test('every problem is reported at once', () => {
    const lines = problems({
      ...MIN,
      rounds: 0,
      sampling: { topP: 2 },
      training: { loss: 'kto' },
      filter: { scoreTalkPatterns: ['('] },
    });
    for (const p of ['rounds', 'sampling.topP', 'training.loss', 'filter.scoreTalkPatterns[0]']) {
      assert.ok(
        lines.some((l) => l.startsWith(`${p}: `)),
        `${p} missing in ${lines.join(' | ')}`,
      );
    }
  });

  test('an API key never appears in a message', () => {
    const secret = 'sk-live-0123456789abcdef';
    const lines = [
      ...problems({ ...MIN, sampling: { apiKeyEnv: secret } }),
      ...problems({ ...MIN, temporal: { apiKey: secret } }),
    ];
    assert.ok(
      lines.some((l) => l.startsWith('sampling.apiKeyEnv: ') && l.includes('env var name')),
      lines.join('\n'),
    );
    assert.ok(
      lines.some((l) => l.startsWith('temporal.apiKey: ') && l.includes('apiKeyEnv')),
      lines.join('\n'),
    );
    for (const l of lines) assert.ok(!l.includes(secret), `key leaked: ${l}`);
  });

  test('ablation: duplicate arm names and a bad arm are named', () => {
    assert.throws(
      () =>
        parseAblationConfig({
          base: MIN,
          arms: [{ name: 'a', rejectedScores: [3, 3] }, { name: 'a' }],
        }),
      (e: Error) => {
        assert.ok(e instanceof ConfigError);
        assert.ok(
          e.issues.some((l) => l.startsWith('arms[1].name: is used twice (got "a";')),
          e.message,
        );
        assert.ok(
          e.issues.some((l) =>
            l.startsWith(
              'arms[0] (a): prefixes.rejectedScores: has 2 scores for 3 rounds (got [3,3];',
            ),
          ),
          e.message,
        );
        return true;
      },
    );
    assert.throws(
      () => parseAblationConfig({ base: MIN, arms: [] }),
      /arms: is too small \(got \[\]; allowed .*at least 1 item/,
    );
  });

  test('ablation: arms get their own run ids and overrides', () => {
    const a = parseAblationConfig(
      {
        studyId: 'night-1',
        base: MIN,
        arms: [
          { name: 'fixed', rejectedScores: 'fixed' },
          { name: 'dpo', overrides: { training: { loss: 'dpo' } } },
        ],
      },
      { baseDir: '/c' },
    );
    assert.deepEqual(
      a.arms.map((x) => [
        x.config.runId,
        x.config.prefixes.rejectedScores,
        x.config.training.loss,
        x.config.model,
      ]),
      [
        ['night-1-fixed', [3, 3, 3], 'simpo', '/c/model'],
        ['night-1-dpo', [3, 5, 7], 'dpo', '/c/model'],
      ],
    );
  });
});
