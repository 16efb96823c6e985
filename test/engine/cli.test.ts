// The engine's command line on real files: init output loads in transformers with the same
// log-probs, HF checkpoints load in the engine, every kind of bad input gives one JSON error line
// with the right exit code (also under the sanitizer build), SFT lowers the loss, DPO uses a
// cached reference pass, and runs interrupted by SIGTERM/SIGINT resume bit-identically.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { cp, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeSftData, writePreferenceData, readTokData } from '../../lib/tokdata.ts';
import { ENGINE, PYTHON, REPO, makeTinyModel } from '../helpers/tiny-gpt2.ts';

const ASAN = join(REPO, 'engine', 'build', 'opsr-engine-asan');
const root = await mkdtemp(join(tmpdir(), 'opsr-engine-cli-'));
const children = new Set<ReturnType<typeof spawn>>();
after(async () => {
  for (const c of children) c.kill('SIGKILL');
  await rm(root, { recursive: true, force: true });
});

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
  events: Record<string, any>[];
}

// Runs the engine; onLine sees each stdout line as it arrives (to send signals mid-run); with
// limitMs, a run still going after that long is killed and rejects naming what (a hang).
function engine(
  args: string[],
  opts: {
    bin?: string;
    limitMs?: number;
    what?: string;
    onLine?: (e: Record<string, any>, kill: (s: NodeJS.Signals) => void) => void;
  } = {},
): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(opts.bin ?? ENGINE, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    children.add(child);
    const timer =
      opts.limitMs === undefined
        ? undefined
        : setTimeout(() => {
            child.kill('SIGKILL');
            reject(
              new Error(
                `${opts.what ?? args.join(' ')} (${opts.bin ?? ENGINE}): still running ` +
                  `after ${opts.limitMs} ms`,
              ),
            );
          }, opts.limitMs);
    let stdout = '',
      stderr = '',
      pending = '';
    const events: Record<string, any>[] = [];
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
      pending += d.toString();
      let nl;
      while ((nl = pending.indexOf('\n')) >= 0) {
        const line = pending.slice(0, nl);
        pending = pending.slice(nl + 1);
        const e = JSON.parse(line);
        events.push(e);
        opts.onLine?.(e, (s) => child.kill(s));
      }
    });
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      children.delete(child);
      resolve({ code, stdout, stderr, events });
    });
  });
}

function errorOf(r: Run): { code: string; message: string } {
  const last = r.stderr.trim().split('\n').pop()!;
  const parsed = JSON.parse(last);
  assert.ok(parsed.error, `last stderr line is an error object: ${last}`);
  return parsed.error;
}

const CONFIG = {
  vocab_size: 50,
  n_positions: 24,
  n_layer: 2,
  n_head: 2,
  n_embd: 16,
  n_inner: null,
  layer_norm_epsilon: 1e-5,
  activation_function: 'gelu_new',
};
const model = join(root, 'init');

// Deterministic tiny data: responses depend on the prompt so there is something to learn.
const sftRecords = Array.from({ length: 12 }, (_, i) => ({
  prompt: [1 + (i % 4), 5 + (i % 3)],
  response: [10 + (i % 4), 20 + (i % 3), 30, 49],
}));
const prefRecords = Array.from({ length: 8 }, (_, i) => ({
  prompt: [1 + (i % 4), 6],
  chosen: [10 + (i % 4), 20, 49],
  rejected: [40 + (i % 3), 41, 42, 43, 49],
}));
const sftData = join(root, 'sft.bin');
const prefData = join(root, 'pref.bin');

before(async () => {
  execFileSync(
    'make',
    ['-s', '-C', join(REPO, 'engine'), 'build/opsr-engine', 'build/opsr-engine-asan'],
    { stdio: ['ignore', 'ignore', 'inherit'] },
  );
  await writeFile(join(root, 'config.json'), JSON.stringify(CONFIG));
  const r = await engine([
    'init',
    '--config',
    join(root, 'config.json'),
    '--out',
    model,
    '--seed',
    '7',
  ]);
  assert.equal(r.code, 0, r.stderr);
  await writeSftData(sftData, sftRecords);
  await writePreferenceData(prefData, prefRecords);
});

// Per-record response log-prob sums by transformers' GPT2LMHeadModel.
const HF_LOGPS = `
import json, sys, torch
from transformers import GPT2LMHeadModel
m = GPT2LMHeadModel.from_pretrained(sys.argv[1], dtype=torch.float32).eval()
out = []
for p, r in json.loads(sys.argv[2]):
    with torch.no_grad():
        lp = torch.log_softmax(m(torch.tensor([p + r])).logits[0].double(), -1)
    out.append(sum(lp[len(p) - 1 + i, t].item() for i, t in enumerate(r)))
print(json.dumps({"logps": out, "arch": m.config.architectures, "type": m.config.model_type}))
`;
function hfLogps(dir: string, pairs: [number[], number[]][]) {
  return JSON.parse(
    execFileSync(PYTHON, ['-c', HF_LOGPS, dir, JSON.stringify(pairs)], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    }),
  );
}
function assertClose(a: number, b: number, rel: number, what: string) {
  assert.ok(Math.abs(a - b) <= rel * Math.max(1, Math.abs(b)), `${what}: ${a} vs ${b}`);
}

test('tokdata round trip and validation', async () => {
  assert.deepEqual(await readTokData(prefData), { kind: 'preference', records: prefRecords });
  assert.deepEqual(await readTokData(sftData), { kind: 'sft', records: sftRecords });
  await assert.rejects(
    writeSftData(join(root, 'x.bin'), [{ prompt: [1], response: [] }]),
    /record 0: response is empty/,
  );
  await assert.rejects(
    writePreferenceData(join(root, 'x.bin'), [{ prompt: [1], chosen: [2], rejected: [-1] }]),
    /record 0: rejected\[0\] = -1/,
  );
});

test("init writes an HF GPT-2 dir transformers loads with the engine's log-probs", async () => {
  const cfg = JSON.parse(await readFile(join(model, 'config.json'), 'utf8'));
  assert.deepEqual(cfg.architectures, ['GPT2LMHeadModel']);
  assert.equal(cfg.model_type, 'gpt2');
  assert.equal(cfg.n_embd, 16);
  const r = await engine(['logprobs', '--model', model, '--data', sftData, '--threads', '1']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.events.length, sftRecords.length);
  const hf = hfLogps(
    model,
    sftRecords.map((x) => [x.prompt, x.response]),
  );
  assert.deepEqual(hf.arch, ['GPT2LMHeadModel']);
  r.events.forEach((e, i) => {
    assert.equal(e.index, i);
    assert.equal(e.tokens, sftRecords[i].response.length);
    assertClose(e.logp_sum, hf.logps[i], 1e-4, `record ${i}`);
    assertClose(e.logp_mean, hf.logps[i] / e.tokens, 1e-4, `record ${i} mean`);
  });
  // Different seeds give different weights; the same seed the same bytes.
  const again = join(root, 'init-again');
  await engine(['init', '--config', join(root, 'config.json'), '--out', again, '--seed', '7']);
  assert.deepEqual(
    await readFile(join(again, 'model.safetensors')),
    await readFile(join(model, 'model.safetensors')),
  );
});

test('a transformers-made checkpoint (and its F16 copy) loads in the engine', async () => {
  const hfDir = join(root, 'hf');
  await makeTinyModel(hfDir, { nPositions: 32 });
  const vocab = JSON.parse(await readFile(join(hfDir, 'config.json'), 'utf8')).vocab_size;
  const recs = [
    { prompt: [1, 2, 3], response: [4, 5, vocab - 1] },
    { prompt: [7], response: [8, 9] },
  ];
  const data = join(root, 'hf.bin');
  await writeSftData(data, recs);
  const hf = hfLogps(
    hfDir,
    recs.map((x) => [x.prompt, x.response]),
  );
  const r = await engine(['logprobs', '--model', hfDir, '--data', data]);
  assert.equal(r.code, 0, r.stderr);
  r.events.forEach((e, i) => assertClose(e.logp_sum, hf.logps[i], 1e-4, `record ${i}`));

  const halfDir = join(root, 'hf16');
  execFileSync(
    PYTHON,
    [
      '-c',
      `import sys, torch
from transformers import GPT2LMHeadModel
GPT2LMHeadModel.from_pretrained(sys.argv[1]).half().save_pretrained(sys.argv[2])`,
      hfDir,
      halfDir,
    ],
    { stdio: 'ignore' },
  );
  const hf16 = hfLogps(
    halfDir,
    recs.map((x) => [x.prompt, x.response]),
  ); // loaded back as float32
  const r16 = await engine([
    'logprobs',
    '--model',
    halfDir,
    '--data',
    data,
    '--out',
    join(root, 'lp16.jsonl'),
  ]);
  assert.equal(r16.code, 0, r16.stderr);
  const lines = (await readFile(join(root, 'lp16.jsonl'), 'utf8'))
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
  lines.forEach((e, i) => assertClose(e.logp_sum, hf16.logps[i], 1e-4, `f16 record ${i}`));

  // A trained model comes out as an HF dir with the tokenizer files, and transformers agrees.
  const out = join(root, 'hf-train');
  const t = await engine([
    'train',
    '--model',
    hfDir,
    '--data',
    data,
    '--out',
    out,
    '--loss',
    'sft',
    '--lr',
    '1e-2',
    '--max-steps',
    '3',
  ]);
  assert.equal(t.code, 0, t.stderr);
  const files = await readdir(join(out, 'final'));
  for (const f of await readdir(hfDir)) assert.ok(files.includes(f), `final/ has ${f}`);
  const trained = hfLogps(
    join(out, 'final'),
    recs.map((x) => [x.prompt, x.response]),
  );
  const rt = await engine(['logprobs', '--model', join(out, 'final'), '--data', data]);
  rt.events.forEach((e, i) => {
    assertClose(e.logp_sum, trained.logps[i], 1e-4, `trained record ${i}`);
    assert.ok(e.logp_sum > r.events[i].logp_sum, `training raised record ${i}'s log-prob`);
  });
  // Trained from F16 weights, the saved model keeps F16 (the input's dtype) and says so.
  const out16 = join(root, 'hf16-train');
  assert.equal(
    (
      await engine([
        'train',
        '--model',
        halfDir,
        '--data',
        data,
        '--out',
        out16,
        '--loss',
        'sft',
        '--max-steps',
        '1',
      ])
    ).code,
    0,
  );
  const dtypeOf = async (dir: string) => {
    const c = JSON.parse(await readFile(join(dir, 'config.json'), 'utf8'));
    return c.dtype ?? c.torch_dtype;
  };
  assert.equal(await dtypeOf(halfDir), 'float16');
  assert.equal(await dtypeOf(join(out16, 'final')), 'float16');
});

// ---- bad input -------------------------------------------------------------------------------

type Header = Record<string, any>;
async function readSt(path: string): Promise<{ header: Header; data: Buffer }> {
  const buf = await readFile(path);
  const n = Number(buf.readBigUInt64LE(0));
  return { header: JSON.parse(buf.subarray(8, 8 + n).toString()), data: buf.subarray(8 + n) };
}
async function writeSt(path: string, header: Header, data: Buffer) {
  const h = Buffer.from(JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(h.length));
  await writeFile(path, Buffer.concat([len, h, data]));
}
// A copy of the init model with its safetensors header edited.
async function variant(
  name: string,
  edit: (h: Header, data: Buffer) => Buffer | void,
): Promise<string> {
  const dir = join(root, 'bad', name);
  await mkdir(dir, { recursive: true });
  await cp(join(model, 'config.json'), join(dir, 'config.json'));
  const { header, data } = await readSt(join(model, 'model.safetensors'));
  const out = edit(header, data) ?? data;
  await writeSt(join(dir, 'model.safetensors'), header, out);
  return dir;
}
async function badFile(name: string, content: string | Buffer): Promise<string> {
  const p = join(root, 'bad', name);
  await mkdir(join(root, 'bad'), { recursive: true });
  await writeFile(p, content);
  return p;
}
function dataBytes(kind: number, count: number, words: number[]): Buffer {
  const b = Buffer.alloc(24 + 4 * words.length);
  b.write('OPSRDATA', 0, 'ascii');
  b.writeUInt32LE(1, 8);
  b.writeUInt32LE(kind, 12);
  b.writeUInt32LE(count, 16);
  words.forEach((w, i) => b.writeUInt32LE(w, 24 + 4 * i));
  return b;
}

test('bad input: one JSON error line naming file and problem, exit 2, also ASan', async () => {
  const noConfig = join(root, 'bad', 'no-config');
  await mkdir(noConfig, { recursive: true });
  await cp(join(model, 'model.safetensors'), join(noConfig, 'model.safetensors'));
  const corrupt = join(root, 'bad', 'corrupt-config');
  await mkdir(corrupt, { recursive: true });
  await writeFile(join(corrupt, 'config.json'), '{"n_embd": 16,');
  const noField = join(root, 'bad', 'no-field');
  await mkdir(noField, { recursive: true });
  await writeFile(join(noField, 'config.json'), JSON.stringify({ ...CONFIG, n_head: undefined }));
  const trunc = await variant('truncated', (_h, d) => d.subarray(0, d.length - 10));
  const dtype = await variant('dtype', (h) => {
    h['transformer.h.1.ln_2.weight'].dtype = 'I32';
  });
  const shape = await variant('shape', (h) => {
    h['transformer.h.0.attn.c_attn.weight'].shape = [48, 16];
  });
  const unknown = await variant('unknown', (h, d) => {
    // a copy appended: offsets must not overlap
    const [b, e] = h['transformer.ln_f.bias'].data_offsets;
    h['transformer.h.0.attn.extra'] = {
      ...h['transformer.ln_f.bias'],
      data_offsets: [d.length, d.length + e - b],
    };
    return Buffer.concat([d, d.subarray(b, e)]);
  });
  const missing = await variant('missing', (h) => {
    delete h['transformer.ln_f.bias'];
  });
  const magic = await badFile(
    'magic.bin',
    Buffer.concat([Buffer.from('NOTOPSR!'), dataBytes(1, 1, [1, 1, 2, 3]).subarray(8)]),
  );
  const vocabId = await badFile('vocab.bin', dataBytes(1, 2, [1, 1, 2, 3, 2, 1, 4, 5, 99]));
  const tooLong = await badFile('long.bin', dataBytes(1, 1, [10, 15, ...Array(25).fill(3)]));
  const truncData = await badFile('trunc.bin', dataBytes(2, 2, [1, 1, 1, 2, 3, 4]));
  const sftLogps = await badFile(
    'sft-logps.jsonl',
    '{"index":0,"logp_sum":-1.5,"logp_mean":-0.75,"tokens":2}\n',
  );
  const positiveLogps = await badFile(
    'positive-logps.jsonl',
    `${JSON.stringify({
      index: 0,
      chosen_logp_sum: 50,
      chosen_tokens: 1,
      rejected_logp_sum: -1,
      rejected_tokens: 1,
    })}\n`,
  );
  const m = ['--model', model];
  const cases: [string, string[], number, string, RegExp][] = [
    [
      'missing config.json',
      ['logprobs', '--model', noConfig, '--data', sftData],
      2,
      'file_not_readable',
      /no-config\/config\.json/,
    ],
    [
      'corrupt config.json',
      ['logprobs', '--model', corrupt, '--data', sftData],
      2,
      'bad_config',
      /corrupt-config\/config\.json: not valid JSON \(line 1, column 15/,
    ],
    [
      'config without n_head',
      ['init', '--config', join(noField, 'config.json'), '--out', join(root, 'bad', 'o')],
      2,
      'bad_config',
      /field n_head is missing/,
    ],
    [
      'truncated safetensors',
      ['logprobs', '--model', trunc, '--data', sftData],
      2,
      'truncated_safetensors',
      /truncated\/model\.safetensors: file is truncated: tensor \S+ ends past/,
    ],
    [
      'wrong dtype',
      ['logprobs', '--model', dtype, '--data', sftData],
      2,
      'bad_dtype',
      /tensor transformer\.h\.1\.ln_2\.weight has dtype I32; allowed: F32, F16, BF16/,
    ],
    [
      'wrong shape',
      ['logprobs', '--model', shape, '--data', sftData],
      2,
      'bad_shape',
      new RegExp(
        /tensor transformer\.h\.0\.attn\.c_attn\.weight /.source +
          /has shape \[48, 16\]; config\.json requires \[16, 48\]/.source,
      ),
    ],
    [
      'unknown tensor',
      ['logprobs', '--model', unknown, '--data', sftData],
      2,
      'unknown_tensor',
      /unknown tensor transformer\.h\.0\.attn\.extra/,
    ],
    [
      'missing tensor',
      ['logprobs', '--model', missing, '--data', sftData],
      2,
      'missing_tensor',
      /tensor transformer\.ln_f\.bias is missing/,
    ],
    [
      'data with bad magic',
      ['logprobs', ...m, '--data', magic],
      2,
      'bad_data',
      /magic\.bin: not an opsr data file \(bad magic/,
    ],
    [
      'token id >= vocab',
      ['logprobs', ...m, '--data', vocabId],
      2,
      'bad_data',
      /vocab\.bin: record 1: token id 99 at position 2 is out of range \(vocab_size = 50\)/,
    ],
    [
      'sequence longer than the context',
      ['train', ...m, '--data', tooLong, '--out', join(root, 'bad', 'o'), '--loss', 'sft'],
      2,
      'bad_data',
      new RegExp(
        /long\.bin: record 0: prompt_len \+ response_len = 25 /.source +
          /exceeds the model's context n_positions = 24/.source,
      ),
    ],
    [
      'truncated data',
      ['logprobs', ...m, '--data', truncData],
      2,
      'bad_data',
      /trunc\.bin: record 1: file ends inside the record header/,
    ],
    [
      'missing data file',
      ['logprobs', ...m, '--data', join(root, 'nope.bin')],
      2,
      'file_not_readable',
      /nope\.bin/,
    ],
    [
      'conflicting warmup flags',
      [
        'train',
        ...m,
        '--data',
        sftData,
        '--out',
        join(root, 'bad', 'o'),
        '--loss',
        'sft',
        '--warmup-steps',
        '2',
        '--warmup-ratio',
        '0.1',
      ],
      2,
      'usage',
      /--warmup-steps and --warmup-ratio conflict/,
    ],
    [
      '--gamma with dpo',
      [
        'train',
        ...m,
        '--data',
        prefData,
        '--out',
        join(root, 'bad', 'o'),
        '--loss',
        'dpo',
        '--gamma',
        '1',
      ],
      2,
      'usage',
      /--gamma applies only to --loss simpo/,
    ],
    [
      'unknown flag',
      [
        'train',
        ...m,
        '--data',
        sftData,
        '--out',
        join(root, 'bad', 'o'),
        '--loss',
        'sft',
        '--learning-rate',
        '1',
      ],
      2,
      'usage',
      /unknown argument --learning-rate/,
    ],
    [
      'malformed number',
      [
        'train',
        ...m,
        '--data',
        sftData,
        '--out',
        join(root, 'bad', 'o'),
        '--loss',
        'sft',
        '--lr',
        'fast',
      ],
      2,
      'usage',
      /--lr must be a finite number, got "fast"/,
    ],
    [
      'unknown loss',
      ['train', ...m, '--data', sftData, '--out', join(root, 'bad', 'o'), '--loss', 'kto'],
      2,
      'usage',
      /--loss must be one of sft, dpo, simpo, ipo, hinge; got "kto"/,
    ],
    [
      'loss vs data kind',
      ['train', ...m, '--data', sftData, '--out', join(root, 'bad', 'o'), '--loss', 'simpo'],
      2,
      'usage',
      /--loss simpo needs preference data/,
    ],
    [
      'ref-logps for another data set',
      [
        'train',
        ...m,
        '--data',
        prefData,
        '--out',
        join(root, 'bad', 'o'),
        '--loss',
        'dpo',
        '--ref-logps',
        sftLogps,
      ],
      2,
      'bad_ref_logps',
      /sft-logps\.jsonl: line 1: field chosen_logp_sum must be a finite log-prob sum <= 0/,
    ],
    [
      'ref-logps with a positive log-prob',
      [
        'train',
        ...m,
        '--data',
        prefData,
        '--out',
        join(root, 'bad', 'o'),
        '--loss',
        'dpo',
        '--ref-logps',
        positiveLogps,
      ],
      2,
      'bad_ref_logps',
      /positive-logps\.jsonl: line 1: field chosen_logp_sum must be a finite log-prob sum <= 0/,
    ],
    [
      'unwritable --out',
      ['init', '--config', join(root, 'config.json'), '--out', '/proc/opsr-out', '--seed', '1'],
      2,
      'file_not_writable',
      /cannot create directory \/proc\/opsr-out/,
    ],
    [
      'unknown command',
      ['fit'],
      2,
      'usage',
      /unknown command fit; commands: init, train, logprobs/,
    ],
  ];
  for (const bin of [ENGINE, ASAN]) {
    for (const [what, args, code, errCode, message] of cases) {
      const r = await engine(args, { bin, limitMs: 60_000, what });
      assert.equal(r.code, code, `${what} (${bin}): exit ${r.code}, stderr ${r.stderr}`);
      const err = errorOf(r);
      assert.equal(err.code, errCode, `${what}: ${err.message}`);
      assert.match(err.message, message, what);
      assert.equal(
        r.stderr.trim().split('\n').length,
        1,
        `${what}: one stderr line, got ${r.stderr}`,
      );
    }
  }
});

// ---- training ---------------------------------------------------------------------------------

async function meanLogp(dir: string, data: string): Promise<number> {
  const r = await engine(['logprobs', '--model', dir, '--data', data]);
  assert.equal(r.code, 0, r.stderr);
  return r.events.reduce((a, e) => a + e.logp_sum, 0) / r.events.reduce((a, e) => a + e.tokens, 0);
}

test('SFT lowers the loss; checkpoints keep the newest N; final/ is an HF dir', async () => {
  const out = join(root, 'sft');
  const r = await engine([
    'train',
    '--model',
    model,
    '--data',
    sftData,
    '--out',
    out,
    '--loss',
    'sft',
    '--lr',
    '1e-2',
    '--batch-size',
    '3',
    '--grad-accum',
    '2',
    '--epochs',
    '5',
    '--checkpoint-every',
    '3',
    '--keep-checkpoints',
    '2',
    '--threads',
    '1',
  ]);
  assert.equal(r.code, 0, r.stderr);
  const steps = r.events.filter((e) => e.event === 'step');
  assert.deepEqual(r.events[0], {
    event: 'start',
    total_steps: 10,
    records: 12,
    resumed_from: null,
  });
  assert.equal(steps.length, 10);
  for (const k of ['loss', 'grad_norm', 'learning_rate', 'tokens_per_s', 'epoch'])
    assert.equal(typeof steps[0][k], 'number', k);
  assert.equal(steps[0].learning_rate, 1e-2); // cosine, no warmup
  assert.ok(steps[9].learning_rate < 1e-3 && steps[9].learning_rate > 0);
  const first = steps.slice(0, 2).reduce((a, e) => a + e.loss, 0),
    last = steps.slice(-2).reduce((a, e) => a + e.loss, 0);
  assert.ok(last < 0.8 * first, `loss fell: ${first / 2} -> ${last / 2}`);
  assert.ok((await meanLogp(join(out, 'final'), sftData)) > (await meanLogp(model, sftData)) + 0.3);
  assert.deepEqual(
    r.events.filter((e) => e.event === 'checkpoint').map((e) => e.step),
    [3, 6, 9, 10],
  );
  assert.deepEqual((await readdir(join(out, 'checkpoints'))).sort(), [
    'step-00000009',
    'step-00000010',
  ]);
  assert.deepEqual((await readdir(join(out, 'checkpoints', 'step-00000010'))).sort(), [
    'DONE',
    'config.json',
    'model.safetensors',
    'optimizer.bin',
    'trainer_state.json',
  ]);
  assert.deepEqual(r.events.at(-1), { event: 'done', step: 10, path: join(out, 'final') });
  assert.deepEqual(
    await readFile(join(out, 'final', 'model.safetensors')),
    await readFile(join(out, 'checkpoints', 'step-00000010', 'model.safetensors')),
  );
  // Resuming a finished run does no step and rewrites the same final model.
  const again = await engine([
    'train',
    '--model',
    model,
    '--data',
    sftData,
    '--out',
    out,
    '--loss',
    'sft',
    '--lr',
    '1e-2',
    '--batch-size',
    '3',
    '--grad-accum',
    '2',
    '--epochs',
    '5',
    '--checkpoint-every',
    '3',
    '--keep-checkpoints',
    '2',
    '--threads',
    '1',
    '--resume',
  ]);
  assert.equal(again.code, 0, again.stderr);
  assert.equal(again.events[0].resumed_from, 10);
  assert.equal(again.events.filter((e) => e.event === 'step').length, 0);
  // Without --resume an output dir with checkpoints is refused; different flags on resume too.
  const refused = await engine([
    'train',
    '--model',
    model,
    '--data',
    sftData,
    '--out',
    out,
    '--loss',
    'sft',
  ]);
  assert.equal(refused.code, 2);
  assert.match(
    errorOf(refused).message,
    /already holds checkpoints \(newest step 10\); pass --resume/,
  );
  const mismatch = await engine([
    'train',
    '--model',
    model,
    '--data',
    sftData,
    '--out',
    out,
    '--loss',
    'sft',
    '--lr',
    '1e-3',
    '--batch-size',
    '3',
    '--grad-accum',
    '2',
    '--epochs',
    '5',
    '--resume',
  ]);
  assert.equal(mismatch.code, 2);
  assert.match(errorOf(mismatch).message, /written with lr = 0\.01, this run has 0\.001/);
  // Another thread count (sums split differently) or another starting model is refused too.
  const same = [
    '--data',
    sftData,
    '--out',
    out,
    '--loss',
    'sft',
    '--lr',
    '1e-2',
    '--batch-size',
    '3',
    '--grad-accum',
    '2',
    '--epochs',
    '5',
    '--resume',
  ];
  const threads = await engine(['train', '--model', model, ...same, '--threads', '2']);
  assert.equal(threads.code, 2);
  assert.match(errorOf(threads).message, /written with threads = 1, this run has 2/);
  const otherModel = await engine([
    'train',
    '--model',
    join(out, 'final'),
    ...same,
    '--threads',
    '1',
  ]);
  assert.equal(otherModel.code, 2);
  assert.match(
    errorOf(otherModel).message,
    /written with model-hash = [0-9a-f]{16}, this run has [0-9a-f]{16}/,
  );
});

test('a non-finite loss stops with exit 3 naming the step', async () => {
  const r = await engine([
    'train',
    '--model',
    model,
    '--data',
    sftData,
    '--out',
    join(root, 'nan'),
    '--loss',
    'sft',
    '--lr',
    '1e30',
    '--grad-clip',
    '0',
  ]);
  assert.equal(r.code, 3, r.stderr);
  const err = errorOf(r);
  assert.equal(err.code, 'non_finite_loss');
  assert.match(err.message, /at step [2-9]/);
});

test('DPO: reference log-probs once, cached, equal `logprobs`; rewards start at 0', async () => {
  const out = join(root, 'dpo');
  const args = [
    'train',
    '--model',
    model,
    '--data',
    prefData,
    '--out',
    out,
    '--loss',
    'dpo',
    '--lr',
    '1e-3',
    '--batch-size',
    '2',
    '--epochs',
    '2',
  ];
  const r = await engine(args);
  assert.equal(r.code, 0, r.stderr);
  const steps = r.events.filter((e) => e.event === 'step');
  assert.equal(steps.length, 8);
  for (const k of [
    'rewards/chosen',
    'rewards/rejected',
    'rewards/accuracies',
    'rewards/margins',
    'logps/chosen',
    'logps/rejected',
  ]) {
    assert.equal(typeof steps[0][k], 'number', k);
  }
  assert.ok(
    Math.abs(steps[0]['rewards/chosen']) < 1e-4 && Math.abs(steps[0]['rewards/rejected']) < 1e-4,
    'policy = reference at step 1',
  );
  assertClose(steps[0].loss, Math.log(2), 1e-4, 'dpo loss at step 1');
  assert.ok(steps[7]['rewards/margins'] > steps[0]['rewards/margins']);
  const cache = (await readFile(join(out, 'ref_logps.jsonl'), 'utf8'))
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
  const lp = await engine(['logprobs', '--model', model, '--data', prefData]);
  lp.events.forEach((e, i) => {
    assertClose(cache[i].chosen_logp_sum, e.chosen_logp_sum, 1e-5, `chosen ${i}`);
    assertClose(cache[i].rejected_logp_sum, e.rejected_logp_sum, 1e-5, `rejected ${i}`);
  });
  // An explicit --ref-logps file gives the same run.
  const lpFile = join(root, 'ref.jsonl');
  await writeFile(lpFile, lp.stdout);
  const r2 = await engine([
    ...args.slice(0, 6),
    join(root, 'dpo2'),
    ...args.slice(7),
    '--ref-logps',
    lpFile,
  ]);
  assert.equal(r2.code, 0, r2.stderr);
  assertClose(
    r2.events.filter((e) => e.event === 'step')[7].loss,
    steps[7].loss,
    1e-5,
    'same run with --ref-logps',
  );
});

test("each preference loss at step 1 equals its formula on the engine's log-probs", async () => {
  const lp = (await engine(['logprobs', '--model', model, '--data', prefData])).events;
  const logsig = (x: number) => (x >= 0 ? -Math.log1p(Math.exp(-x)) : x - Math.log1p(Math.exp(x)));
  const mean = (f: (e: Record<string, number>) => number) =>
    lp.reduce((a, e) => a + f(e), 0) / lp.length;
  const expected: Record<string, [string[], number]> = {
    // policy = reference at step 1, so h = 0 for the reference-based losses
    dpo: [['--beta', '0.1', '--label-smoothing', '0.2'], -0.8 * logsig(0) - 0.2 * logsig(0)],
    ipo: [['--beta', '0.1'], (0 - 1 / (2 * 0.1)) ** 2],
    hinge: [['--beta', '0.1'], 1],
    simpo: [
      ['--beta', '2', '--gamma', '0.7'],
      mean((e) => -logsig(2 * (e.chosen_logp_mean - e.rejected_logp_mean) - 0.7)),
    ],
  };
  for (const [loss, [flags, want]] of Object.entries(expected)) {
    const r = await engine([
      'train',
      '--model',
      model,
      '--data',
      prefData,
      '--out',
      join(root, `loss-${loss}`),
      '--loss',
      loss,
      ...flags,
      '--batch-size',
      '8',
      '--max-steps',
      '1',
    ]);
    assert.equal(r.code, 0, r.stderr);
    assertClose(r.events[1].loss, want, 1e-5, loss);
  }
});

test("warmup and the linear schedule follow Hugging Face's step semantics", async () => {
  const r = await engine([
    'train',
    '--model',
    model,
    '--data',
    sftData,
    '--out',
    join(root, 'sched'),
    '--loss',
    'sft',
    '--lr',
    '1e-3',
    '--warmup-steps',
    '2',
    '--schedule',
    'linear',
    '--batch-size',
    '2',
  ]);
  assert.equal(r.code, 0, r.stderr);
  const lrs = r.events.filter((e) => e.event === 'step').map((e) => e.learning_rate);
  const want = [0, 0.5, 1, 0.75, 0.5, 0.25].map((x) => x * 1e-3); // 6 steps: warmup 2, then to 0
  lrs.forEach((x, i) => assertClose(x, want[i], 1e-6, `step ${i + 1}`));
});

// The SimPO run the resume tests interrupt: 4 steps per epoch on the preference data.
const simpoRun = (out: string, epochs: number, threads: number) => [
  'train',
  '--model',
  model,
  '--data',
  prefData,
  '--out',
  out,
  '--loss',
  'simpo',
  '--lr',
  '1e-3',
  '--batch-size',
  '2',
  '--epochs',
  String(epochs),
  '--warmup-ratio',
  '0.1',
  '--weight-decay',
  '0.01',
  '--seed',
  '3',
  '--threads',
  String(threads),
];

test('SIGTERM/INT checkpoint, exit 143; resumes bit-identical; half-written ignored', async () => {
  const args = (out: string) => simpoRun(out, 1000, 1);
  // Long enough (4000 steps) that a signal sent at step 100 lands mid-run even on a loaded machine.
  const ref = await engine(args(join(root, 'whole')));
  assert.equal(ref.code, 0, ref.stderr);
  const total = ref.events[0].total_steps;
  assert.equal(total, 4000);

  const out = join(root, 'interrupted');
  const stopAt =
    (signal: NodeJS.Signals, at: number) =>
    (e: Record<string, any>, kill: (s: NodeJS.Signals) => void) => {
      if (e.event === 'step' && e.step === at) kill(signal);
    };
  const a = await engine(args(out), { onLine: stopAt('SIGTERM', 100) });
  assert.equal(a.code, 143, a.stderr);
  assert.equal(errorOf(a).code, 'stopped');
  const ckA = a.events.at(-1)!;
  assert.equal(ckA.event, 'checkpoint');
  assert.ok(ckA.step >= 100 && ckA.step < total, `stopped at ${ckA.step}`);
  // A crash while writing the next checkpoint: its dir without DONE (and garbage weights), plus
  // a temp dir; both must be ignored (and the temp dir removed) on resume.
  const half = join(out, 'checkpoints', `step-${String(ckA.step + 5).padStart(8, '0')}`);
  await cp(ckA.path, half, { recursive: true });
  await rm(join(half, 'DONE'));
  await writeFile(join(half, 'model.safetensors'), 'garbage');
  await mkdir(join(out, 'checkpoints', 'step-00000950.tmp-1'));

  const b = await engine([...args(out), '--resume'], { onLine: stopAt('SIGINT', ckA.step + 50) });
  assert.equal(b.code, 143, b.stderr);
  assert.equal(b.events[0].resumed_from, ckA.step);
  assert.equal(b.events[1].step, ckA.step + 1);
  assert.ok(!existsSync(join(out, 'checkpoints', 'step-00000950.tmp-1')));
  const c = await engine([...args(out), '--resume']);
  assert.equal(c.code, 0, c.stderr);
  assert.equal(c.events[0].resumed_from, b.events.at(-1)!.step);
  assert.deepEqual(
    await readFile(join(out, 'final', 'model.safetensors')),
    await readFile(join(root, 'whole', 'final', 'model.safetensors')),
  );
  // The logged metrics of the resumed steps equal the uninterrupted run's too.
  const last = (r: Run) =>
    JSON.stringify({ ...r.events.filter((e) => e.event === 'step').at(-1), tokens_per_s: 0 });
  assert.equal(last(c), last(ref));
});

test('--threads 2: a run stopped by SIGTERM, resumed ends bit-identical to unstopped', async () => {
  // 2000 steps (a second or more) so the signal sent at step 100 lands long before the end
  const args = (out: string) => simpoRun(out, 500, 2);
  const ref = await engine(args(join(root, 'whole-t2')));
  assert.equal(ref.code, 0, ref.stderr);
  const total = ref.events[0].total_steps;
  assert.equal(total, 2000);

  const out = join(root, 'interrupted-t2');
  const a = await engine(args(out), {
    onLine: (e, kill) => {
      if (e.event === 'step' && e.step === 100) kill('SIGTERM');
    },
  });
  assert.equal(a.code, 143, a.stderr);
  const ck = a.events.at(-1)!;
  assert.equal(ck.event, 'checkpoint');
  assert.ok(ck.step >= 100 && ck.step < total, `stopped at ${ck.step}`);
  const b = await engine([...args(out), '--resume']);
  assert.equal(b.code, 0, b.stderr);
  assert.equal(b.events[0].resumed_from, ck.step);
  assert.deepEqual(
    await readFile(join(out, 'final', 'model.safetensors')),
    await readFile(join(root, 'whole-t2', 'final', 'model.safetensors')),
  );
  const last = (r: Run) =>
    JSON.stringify({ ...r.events.filter((e) => e.event === 'step').at(-1), tokens_per_s: 0 });
  assert.equal(last(b), last(ref));
});
