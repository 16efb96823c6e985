// User text is inserted literally wherever opsr substitutes it: prompts with $$, $&, $` and $'
// (LaTeX, shell, regex text) reach the sampling request body, the pairs file and the dataset
// unchanged. A string replacement would read them as patterns ($$x^2$$ -> $x^2$).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MockActivityEnvironment } from '@temporalio/testing';
import { applyTemplate, parseRunConfig } from '../../config/index.ts';
import { prepareRun } from '../../activities/prepare.ts';
import { prefixed } from '../../activities/sample-pairs.ts';
import { createActivities, SamplerPool } from '../../activities/index.ts';
import { filterPairs } from '../../activities/filter.ts';
import { buildDataset } from '../../activities/dataset.ts';
import { readJsonl } from '../../lib/jsonl.ts';
import { readTokData } from '../../lib/tokdata.ts';
import { loadTokenizer } from '../../lib/tokenizer.ts';
import type { SamplePairsInput, SamplePairsResult } from '../../contracts/activities.ts';
import type { SampleRecord } from '../../activities/records.ts';
import { writeTinyTokenizer } from '../helpers/tiny-tokenizer.ts';

// Sampling from an external endpoint: the pool starts no server.
const { samplePairs } = createActivities({ samplers: new SamplerPool() });

const ENGINE = join(import.meta.dirname, '..', '..', 'engine', 'build', 'opsr-engine');
const root = await mkdtemp(join(tmpdir(), 'opsr-literal-'));
after(() => rm(root, { recursive: true, force: true }));

const PROMPTS = [
  'Solve $$x^2 = 4$$ for x.',
  "Quote $& and $` and $' and $1 verbatim.",
  'Price: $$$ {score} {prompt}',
];
const MESSAGES = [
  { role: 'system', content: 'Use $$ for display math.' },
  { role: 'user', content: "Expand $'a$' and $$b$$" },
];

test('applyTemplate and prefixed insert the prompt and the score literally, in one pass', () => {
  const t = 'Score {score}. {prompt}';
  for (const p of PROMPTS) assert.equal(applyTemplate(t, 7, p), `Score 7. ${p}`);
  assert.equal(applyTemplate('{prompt}|{prompt}', 3, '$$'), '$$|$$');
  const msgs = prefixed({ index: 0, messages: MESSAGES }, t, 10) as { content: string }[];
  assert.equal(msgs[0].content, MESSAGES[0].content); // the system turn is untouched
  assert.equal(msgs[1].content, `Score 10. ${MESSAGES[1].content}`);
});

test('prompts with $ patterns reach request body, pairs file and dataset unchanged', async () => {
  // An OpenAI-compatible server that records each request and answers with the user's turn.
  const bodies: { prompt: string }[] = [];
  const server = createServer((req, res) => {
    let raw = '';
    req.on('data', (d) => (raw += d));
    req.on('end', () => {
      res.setHeader('content-type', 'application/json');
      if (req.url === '/v1/models')
        return res.end(JSON.stringify({ object: 'list', data: [{ id: 'm' }] }));
      const body = JSON.parse(raw) as { prompt: string; seed: number };
      bodies.push(body);
      const user = body.prompt.match(/<\|user\|>([\s\S]*)\n<\|assistant\|>$/)![1];
      res.end(
        JSON.stringify({
          id: 'x',
          object: 'text_completion',
          created: 0,
          model: 'm',
          choices: [
            {
              index: 0,
              text: `${body.seed % 2 ? 'A' : 'B'} ${user}`,
              finish_reason: 'stop',
              logprobs: null,
            },
          ],
          usage: { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 },
        }),
      );
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  try {
    const modelDir = join(root, 'model');
    const vocab = await writeTinyTokenizer(modelDir);
    const gpt2 = join(root, 'gpt2.json');
    await writeFile(
      gpt2,
      JSON.stringify({ n_embd: 16, n_layer: 1, n_head: 2, n_positions: 256, vocab_size: vocab }),
    );
    execFileSync(ENGINE, ['init', '--config', gpt2, '--out', modelDir, '--seed', '1'], {
      stdio: 'pipe',
    });
    const promptsFile = join(root, 'prompts.jsonl');
    await writeFile(
      promptsFile,
      [...PROMPTS.map((prompt) => ({ prompt })), { messages: MESSAGES }]
        .map((r) => JSON.stringify(r))
        .join('\n') + '\n',
    );
    const baseURL = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`;
    const config = parseRunConfig({
      model: modelDir,
      storage: join(root, 'store'),
      prompts: { file: promptsFile },
      sampling: { lifecycle: 'external', baseURL, model: 'm', shardSize: 2 },
      filter: { scoreTalkPatterns: [], dropIdentical: false },
      training: { maxLength: 256, maxPromptLength: 128 }, // within the model's context
    });
    const prep = await prepareRun({ runId: 'literal', config });
    const roundDir = join(prep.runDir, 'round-1');
    const env = new MockActivityEnvironment();
    const input: SamplePairsInput = {
      runId: 'literal',
      round: 1,
      roundDir,
      promptsFile: prep.promptsFile,
      endpoint: { lifecycle: 'external', baseURL, model: 'm', modelDir },
      sampling: config.sampling,
      prefixes: config.prefixes,
      chosenScore: 10,
      rejectedScore: 3,
      notify: [],
    };
    const samples = (await env.run(samplePairs, input)) as SamplePairsResult;
    const users = [...PROMPTS, MESSAGES[1].content];
    // Each user text appears verbatim after its prefix, chosen and rejected.
    for (const u of users) {
      for (const [tpl, s] of [
        [config.prefixes.chosenTemplate, 10],
        [config.prefixes.rejectedTemplate, 3],
      ] as const) {
        const want = applyTemplate(tpl, s, '') + u;
        assert.ok(
          bodies.some((b) => b.prompt.includes(`<|user|>${want}\n`)),
          `request body lacks ${JSON.stringify(want)}`,
        );
      }
    }
    const pairs = await filterPairs({
      runId: 'literal',
      round: 1,
      roundDir,
      samplesFile: samples.samplesFile,
      filter: config.filter,
    });
    assert.equal(pairs.kept, 4);
    const kept = await readJsonl<SampleRecord>(pairs.pairsFile);
    assert.deepEqual(
      kept.map((r) => r.prompt ?? r.messages),
      [...PROMPTS, MESSAGES],
    );
    for (const [i, r] of kept.entries()) assert.ok(r.chosen.text.endsWith(users[i]), r.chosen.text);

    const ds = await buildDataset({
      runId: 'literal',
      round: 1,
      roundDir,
      pairsFile: pairs.pairsFile,
      modelDir,
      training: config.training,
    });
    assert.equal(ds.records, 4);
    const trl = (await readFile(ds.trlFile, 'utf8'))
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { prompt: unknown; chosen: unknown });
    assert.deepEqual(
      trl.map((r) => r.prompt),
      [...PROMPTS, MESSAGES],
    );
    const tok = await loadTokenizer(modelDir);
    const bin = await readTokData(ds.dataFile);
    assert.equal(bin.kind, 'preference');
    for (const [i, rec] of bin.records.entries()) {
      assert.ok(tok.decode(rec.prompt).includes(users[i]), `dataset.bin prompt ${i}`);
      assert.ok(tok.decode(rec.chosen).includes(users[i]), `dataset.bin chosen ${i}`);
    }
  } finally {
    server.close();
  }
});
