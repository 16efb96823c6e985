// The demo task: the builtin scorer's partial credit, seeded disjoint splits, the seed data whose
// answer quality follows the asked-for score, and the tokenizer files (loaded by lib/tokenizer.ts
// and by Python transformers, round-tripping the task's text exactly).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { getBuiltinScorer } from '../../tasks/index.ts';
import {
  answerDigits,
  answerText,
  makeProblems,
  OPERATIONS,
  parsePrompt,
  promptText,
  scoreDigits,
} from '../../tasks/digits.ts';
import { promptRecords, sftRecords, type DigitsDataSpec } from '../../tasks/seed.ts';
import { writeDigitsData, writeTokenizer } from '../../tasks/files.ts';
import { vocabulary } from '../../tasks/tokenizer.ts';
import { loadTokenizer } from '../../lib/tokenizer.ts';
import {
  applyTemplate,
  DEFAULT_CHOSEN_TEMPLATE,
  DEFAULT_REJECTED_TEMPLATE,
} from '../../config/index.ts';

const root = await mkdtemp(join(tmpdir(), 'opsr-demo-task-'));
after(() => rm(root, { recursive: true, force: true }));

const SPEC: DigitsDataSpec = {
  seed: 3,
  sftExamples: 3000,
  unprefixedFraction: 0.3,
  perfectShare: 0.5,
  trainPrompts: 200,
  heldoutPrompts: 100,
  chosenTemplate: DEFAULT_CHOSEN_TEMPLATE,
  rejectedTemplate: DEFAULT_REJECTED_TEMPLATE,
};
const UP = 'Sort the digits from smallest to largest: 3 1 2';
const DOWN = 'Sort the digits from largest to smallest: 7 0 9 4';

test('builtin scorer: position-wise partial credit, prefix ignored, foreign prompt error', () => {
  const score = getBuiltinScorer('digits');
  assert.ok(score);
  assert.equal(getBuiltinScorer('nope'), undefined);
  assert.equal(getBuiltinScorer('toString'), undefined);
  assert.equal(score(UP, '1 2 3'), 1);
  assert.equal(score(UP, ' 1  2 3 '), 1);
  assert.equal(score(UP, '1 2'), 2 / 3);
  assert.equal(score(UP, '3 2 1'), 1 / 3);
  assert.equal(score(UP, '1 2 3 4'), 3 / 4);
  assert.equal(score(UP, ''), 0);
  assert.equal(score(UP, 'one two three'), 0);
  assert.equal(score(DOWN, '9 7 4 0'), 1);
  assert.equal(score(DOWN, '9 7'), 0.5);
  assert.equal(score(applyTemplate(DEFAULT_CHOSEN_TEMPLATE, 10, DOWN), '9 7 4 0'), 1);
  assert.throws(
    () => score('What is 2 + 2?', '4'),
    /digits task: prompt "What is 2 \+ 2\?" is not a digits problem; expected/,
  );
});

test('splits: deterministic by seed, disjoint, distinct digits within the lengths', () => {
  const a = makeProblems('train', 500, 1);
  assert.deepEqual(a, makeProblems('train', 500, 1));
  assert.notDeepEqual(a, makeProblems('train', 500, 2));
  const train = new Set([1, 2, 3].flatMap((s) => makeProblems('train', 2000, s).map(promptText)));
  const held = [1, 2, 3].flatMap((s) => makeProblems('heldout', 300, s).map(promptText));
  assert.equal(
    held.filter((p) => train.has(p)).length,
    0,
    'no held-out problem is a training problem',
  );
  for (const p of a) {
    assert.ok(p.digits.length >= 3 && p.digits.length <= 6);
    assert.equal(new Set(p.digits).size, p.digits.length);
    assert.deepEqual(parsePrompt(promptText(p)), p);
  }
  assert.ok(a.some((p) => p.op === 'ascending') && a.some((p) => p.op === 'descending'));
  assert.throws(
    () =>
      makeProblems('train', 1, 0, {
        minLength: 4,
        maxLength: 11,
        repeats: false,
        ops: ['ascending'],
      }),
    /lengths 4..11 invalid; allowed 1 <= minLength <= maxLength <= 10 \(distinct digits\)/,
  );
});

test('harder variant: 5-9 digits with repeats, seeded, still disjoint splits and scorable', () => {
  const opts = { minLength: 5, maxLength: 9, repeats: true, ops: OPERATIONS };
  const a = makeProblems('train', 400, 2, opts);
  assert.deepEqual(a, makeProblems('train', 400, 2, opts));
  const held = new Set(makeProblems('heldout', 200, 2, opts).map(promptText));
  assert.ok(a.every((p) => !held.has(promptText(p))));
  assert.ok(a.every((p) => p.digits.length >= 5 && p.digits.length <= 9));
  const lengths = new Set(a.map((p) => p.digits.length));
  assert.equal(lengths.size, 5, 'every length from 5 to 9 occurs');
  const repeated = a.filter((p) => new Set(p.digits).size < p.digits.length).length;
  assert.ok(repeated > 300, `most lists of 5-9 random digits repeat one (${repeated} of 400)`);
  const p = { op: 'descending' as const, digits: [3, 9, 3, 0, 9] };
  assert.deepEqual(parsePrompt(promptText(p)), p);
  assert.equal(scoreDigits(promptText(p), '9 9 3 3 0'), 1);
  assert.equal(scoreDigits(promptText(p), '9 3 3 0'), 2 / 5);
  assert.throws(
    () => makeProblems('train', 1, 0, { ...opts, maxLength: 13 }),
    /lengths 5..13 invalid; allowed 1 <= minLength <= maxLength <= 12 \(with repeats\)/,
  );
});

test('seed SFT data: answer quality follows the asked score; unprefixed ones are mediocre', () => {
  const recs = sftRecords(SPEC);
  assert.equal(recs.length, 3000);
  assert.deepEqual(recs, sftRecords(SPEC));
  const byScore = new Map<number | null, number[]>();
  const re = new RegExp(
    /^Please produce a (?:top-notch|good) response that /.source +
      /merits a perfect score of (\d+) out of 10\. (.*)$/.source,
  );
  const templates = new Set<string>();
  for (const r of recs) {
    const [user, answer] = r.messages;
    assert.equal(user.role, 'user');
    assert.equal(answer.role, 'assistant');
    const m = re.exec(user.content);
    const s = m ? Number(m[1]) : null;
    if (m)
      templates.add(
        applyTemplate(
          user.content.includes('top-notch') ? DEFAULT_CHOSEN_TEMPLATE : DEFAULT_REJECTED_TEMPLATE,
          s!,
          m[2],
        ) === user.content
          ? 'ok'
          : 'bad',
      );
    const reward = scoreDigits(m ? m[2] : user.content, answer.content);
    byScore.set(s, [...(byScore.get(s) ?? []), reward]);
  }
  assert.deepEqual([...templates], ['ok']);
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  assert.equal(mean(byScore.get(10)!), 1);
  // About s/10, except that every answer keeps at least one digit (so low scores sit near 1/n).
  for (let s = 0; s <= 10; s++) {
    const m = mean(byScore.get(s)!);
    if (s >= 3)
      assert.ok(
        Math.abs(m - s / 10) < 0.1,
        `score ${s}: mean reward ${m.toFixed(3)} should be near ${s / 10}`,
      );
    if (s >= 2)
      assert.ok(
        m > mean(byScore.get(s - 1)!),
        `score ${s}: mean reward ${m.toFixed(3)} should exceed score ${s - 1}'s`,
      );
  }
  const plain = mean(byScore.get(null)!);
  assert.ok(plain > 0.45 && plain < 0.75, `unprefixed mean reward ${plain}`);
  assert.ok(Math.abs(byScore.get(null)!.length / 3000 - 0.3) < 0.05);
  assert.throws(
    () => sftRecords({ ...SPEC, perfectShare: 2 }),
    /perfectShare = 2; allowed: a number in 0..1/,
  );
  assert.throws(
    () => sftRecords({ ...SPEC, chosenTemplate: 'Be great. {prompt}' }),
    /chosenTemplate "Be great. \{prompt\}" must contain "\{score\}"/,
  );
});

test('data files: prompts and held-out prompts from their splits, written as JSONL', async () => {
  const dir = join(root, 'data');
  const files = await writeDigitsData(dir, SPEC);
  const lines = async (f: string) =>
    (await readFile(f, 'utf8'))
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
  const prompts = await lines(files.prompts);
  const held = await lines(files.heldout);
  assert.equal(prompts.length, 200);
  assert.equal(held.length, 100);
  assert.deepEqual(prompts, promptRecords('train', 200, SPEC));
  const trainSet = new Set(prompts.map((p) => p.prompt));
  assert.equal(held.filter((p) => trainSet.has(p.prompt)).length, 0);
  assert.equal((await lines(files.sft)).length, 3000);
});

test('tokenizer: round trip, chat template via lib/tokenizer.ts, same ids as HF', async () => {
  const dir = join(root, 'tok');
  await writeTokenizer(dir, 64);
  const tok = await loadTokenizer(dir);
  const vocab = vocabulary();
  assert.equal(tok.eosTokenId, vocab.indexOf('<|endoftext|>'));
  assert.ok(tok.hasChatTemplate);
  const texts = [
    UP,
    DOWN,
    '0 1 2 3 4 5 6 7 8 9',
    '9',
    applyTemplate(DEFAULT_CHOSEN_TEMPLATE, 10, DOWN),
    ...[0, 3, 5, 7].map((s) => applyTemplate(DEFAULT_REJECTED_TEMPLATE, s, UP)),
    ...makeProblems('heldout', 20, 9).flatMap((p) => [promptText(p), answerText(answerDigits(p))]),
  ];
  const unk = vocab.indexOf('[UNK]');
  for (const t of texts) {
    const ids = tok.encode(t);
    assert.ok(!ids.includes(unk), `no unknown token in ${t}`);
    assert.equal(tok.decode(ids), t);
  }
  assert.deepEqual(
    tok.encode('9 7 4 0'),
    ['9', '7', '4', '0'].map((d) => vocab.indexOf(d)),
  );
  assert.deepEqual(tok.encode('10.'), [
    vocab.indexOf('1'),
    vocab.indexOf('##0'),
    vocab.indexOf('##.'),
  ]);
  const convo = [
    { role: 'user', content: UP },
    { role: 'assistant', content: '1 2 3' },
  ];
  assert.equal(
    tok.applyChatTemplate(convo.slice(0, 1), { addGenerationPrompt: true }),
    `<|user|> ${UP} <|assistant|>`,
  );
  assert.equal(tok.applyChatTemplate(convo), `<|user|> ${UP} <|assistant|> 1 2 3<|endoftext|>`);

  // transformers (PreTrainedTokenizerFast over the same tokenizer.json) agrees id for id.
  const py = join(process.cwd(), '.venv', 'bin', 'python');
  const out = execFileSync(
    py,
    [
      '-c',
      [
        'import json, sys',
        'from transformers import AutoTokenizer',
        't = AutoTokenizer.from_pretrained(sys.argv[1])',
        'texts = json.loads(sys.argv[2]); convo = json.loads(sys.argv[3])',
        'print(json.dumps({"ids": [t(x, add_special_tokens=False)["input_ids"] for x in texts],',
        '  "decoded": [t.decode(t(x)["input_ids"]) for x in texts], "eos": t.eos_token_id,',
        '  "chat": t.apply_chat_template(convo, tokenize=False), "gen": ' +
          't.apply_chat_template(convo[:1], tokenize=False, ' +
          'add_generation_prompt=True)}))',
      ].join('\n'),
      dir,
      JSON.stringify(texts),
      JSON.stringify(convo),
    ],
    { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] },
  );
  const r = JSON.parse(out.trim().split('\n').pop()!);
  assert.deepEqual(
    r.ids,
    texts.map((t) => tok.encode(t)),
  );
  assert.deepEqual(r.decoded, texts);
  assert.equal(r.eos, tok.eosTokenId);
  assert.equal(r.chat, tok.applyChatTemplate(convo));
  assert.equal(r.gen, tok.applyChatTemplate(convo.slice(0, 1), { addGenerationPrompt: true }));
});

test('demo set-up: tiny preset validates; data paths not side by side refused', async () => {
  const { presetPath } = await import('../../config/index.ts');
  const { loadRunConfig } = await import('../../activities/load-config.ts');
  const { prepareDemoData } = await import('../../cli/demo.ts');
  const preset = await loadRunConfig(presetPath('tiny'));
  assert.equal(preset.rewardModel?.type === 'builtin' && preset.rewardModel.name, 'digits');
  assert.deepEqual(preset.prefixes.rejectedScores, [3, 5, 7]);
  assert.equal(preset.sampling.lifecycle, 'embedded');
  const dir = join(root, 'preset');
  const config = {
    ...preset,
    prompts: { ...preset.prompts, file: join(dir, 'prompts.jsonl') },
    init: {
      ...preset.init!,
      sft: { ...preset.init!.sft!, data: join(dir, 'elsewhere', 'sft.jsonl') },
    },
    evaluation: { ...preset.evaluation!, prompts: { file: join(dir, 'heldout.jsonl'), limit: 10 } },
  };
  await assert.rejects(
    prepareDemoData(config),
    new RegExp(
      `init.sft.data is ${join(dir, 'elsewhere', 'sft.jsonl')}; the demo writes its ` +
        `data to ${join(dir, 'sft.jsonl')}`,
    ),
  );
  await prepareDemoData({
    ...config,
    init: { ...config.init, sft: { ...config.init.sft, data: join(dir, 'sft.jsonl') } },
  });
  const held = (await readFile(join(dir, 'heldout.jsonl'), 'utf8')).trim().split('\n');
  assert.equal(held.length, 10);
  assert.equal(JSON.parse(await readFile(join(dir, 'spec.json'), 'utf8')).heldoutPrompts, 10);
});
