// Hostile engine inputs (safetensors headers, JSON, data files, FIFOs and directories where files
// belong) give one JSON error line naming the file, the tensor or record and what is allowed,
// exit 2, with no hang and no sanitizer report (every case also runs under the ASan build).
// Valid but unusual JSON (numbers of any length) still loads; --out cleanup spares user files.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { cp, mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ENGINE, REPO } from '../helpers/tiny-gpt2.ts';
import {
  engineError,
  readSafetensors,
  runEngine,
  writeSafetensors,
} from '../helpers/engine-files.ts';
import { writeSftData } from '../../lib/tokdata.ts';

const ASAN = join(REPO, 'engine', 'build', 'opsr-engine-asan');
const root = await mkdtemp(join(tmpdir(), 'opsr-bad-input-'));
const model = join(root, 'model');
const data = join(root, 'data.bin');
const CONFIG = { vocab_size: 16, n_positions: 16, n_layer: 1, n_head: 2, n_embd: 8 };
after(() => rm(root, { recursive: true, force: true }));

before(async () => {
  execFileSync(
    'make',
    ['-s', '-C', join(REPO, 'engine'), 'build/opsr-engine', 'build/opsr-engine-asan'],
    { stdio: ['ignore', 'ignore', 'inherit'] },
  );
  await writeFile(join(root, 'config.json'), JSON.stringify(CONFIG));
  execFileSync(
    ENGINE,
    ['init', '--config', join(root, 'config.json'), '--out', model, '--seed', '1'],
    { stdio: 'ignore' },
  );
  await writeSftData(data, [{ prompt: [1, 2], response: [3, 4] }]);
});

let n = 0;
// A copy of the model whose model.safetensors header (object or raw bytes) and data are edited.
async function stVariant(
  edit: (h: Record<string, any>, d: Buffer) => Buffer | Record<string, any> | void,
  raw?: (h: Record<string, any>) => Buffer,
): Promise<string> {
  const dir = join(root, `v${n++}`);
  await cp(model, dir, { recursive: true });
  const { header, data: bytes } = await readSafetensors(join(model, 'model.safetensors'));
  const out = edit(header, bytes);
  await writeSafetensors(
    join(dir, 'model.safetensors'),
    raw ? raw(header) : header,
    Buffer.isBuffer(out) ? out : bytes,
  );
  return dir;
}
async function withFile(name: string, content: string | Buffer): Promise<string> {
  const dir = join(root, `f${n++}`);
  await cp(model, dir, { recursive: true });
  await writeFile(join(dir, name), content);
  return dir;
}
function dataFile(words: number[], count: number, kind = 1): Buffer {
  const b = Buffer.alloc(24 + 4 * words.length);
  b.write('OPSRDATA', 0, 'ascii');
  b.writeUInt32LE(1, 8);
  b.writeUInt32LE(kind, 12);
  b.writeUInt32LE(count, 16);
  words.forEach((w, i) => b.writeUInt32LE(w >>> 0, 24 + 4 * i));
  return b;
}
const W = 'transformer.wte.weight';

test('bad safetensors, JSON and data files: one error line each, exit 2, no hang', async () => {
  const fifoDir = join(root, 'fifo');
  await cp(model, fifoDir, { recursive: true });
  await rm(join(fifoDir, 'model.safetensors'));
  execFileSync('mkfifo', [join(fifoDir, 'model.safetensors')]);
  const fifoConfig = join(root, 'fifo-config');
  await cp(model, fifoConfig, { recursive: true });
  await rm(join(fifoConfig, 'config.json'));
  execFileSync('mkfifo', [join(fifoConfig, 'config.json')]);
  const dirWeights = join(root, 'dir-weights');
  await cp(model, dirWeights, { recursive: true });
  await rm(join(dirWeights, 'model.safetensors'));
  await mkdir(join(dirWeights, 'model.safetensors'));
  const fifoData = join(root, 'fifo.bin');
  execFileSync('mkfifo', [fifoData]);
  const deep = await withFile('config.json', `${'['.repeat(200_000)}${']'.repeat(200_000)}`);
  const nulName = await stVariant(
    () => {},
    (h) =>
      Buffer.from(
        JSON.stringify(h).replace('"transformer.wpe.weight"', '"transformer.wpe\\u0000.weight"'),
      ),
  );
  const badData = async (name: string, b: Buffer) => {
    await writeFile(join(root, name), b);
    return join(root, name);
  };

  const train = (dir: string, d = data) => [
    'train',
    '--model',
    dir,
    '--data',
    d,
    '--out',
    join(root, 'o'),
    '--loss',
    'sft',
  ];
  const cases: [string, string[], string, RegExp][] = [
    [
      'shape product overflows',
      train(
        await stVariant((h) => {
          h[W].shape = [4294967296, 4294967296, 16];
        }),
      ),
      'bad_safetensors',
      new RegExp(
        /model\.safetensors: tensor transformer\.wte\.weight: /.source +
          /the product of its shape overflows 64 bits/.source,
      ),
    ],
    [
      'byte size overflows',
      train(
        await stVariant((h) => {
          h[W].shape = [4503599627370496, 1024];
        }),
      ),
      'bad_safetensors',
      /tensor transformer\.wte\.weight: its size in bytes overflows 64 bits/,
    ],
    [
      'NUL inside a name',
      train(nulName),
      'bad_safetensors',
      /header is not valid JSON \(line 1, column \d+: \\u0000 \(NUL\) is not allowed/,
    ],
    [
      'offsets past the file',
      train(
        await stVariant((h) => {
          h[W].data_offsets = [0, 1e15];
        }),
      ),
      'truncated_safetensors',
      /file is truncated: tensor transformer\.wte\.weight ends past the end of the data/,
    ],
    [
      'offsets overlapping',
      train(
        await stVariant((h) => {
          h['transformer.wpe.weight'].data_offsets = h[W].data_offsets;
          h['transformer.wpe.weight'].shape = h[W].shape;
        }),
      ),
      'bad_safetensors',
      /data_offsets \[\d+, \d+\] overlap tensor transformer\.(wte|wpe)\.weight's/,
    ],
    [
      'offsets not matching the shape',
      train(
        await stVariant((h) => {
          h[W].data_offsets[1] -= 4;
        }),
      ),
      'bad_safetensors',
      new RegExp(
        /tensor transformer\.wte\.weight: data_offsets span \d+ bytes, /.source +
          /but shape \[16, 8\] of F32 needs 512/.source,
      ),
    ],
    [
      'begin after end',
      train(
        await stVariant((h) => {
          h[W].data_offsets = [8, 4];
        }),
      ),
      'bad_safetensors',
      /tensor transformer\.wte\.weight: data_offsets begin 8 > end 4/,
    ],
    [
      'dtype of the wrong JSON type',
      train(
        await stVariant((h) => {
          h[W].dtype = 32;
        }),
      ),
      'bad_safetensors',
      /tensor transformer\.wte\.weight: dtype must be a string, got a number/,
    ],
    [
      'unknown dtype',
      train(
        await stVariant((h) => {
          h[W].dtype = 'Q4_K';
        }),
      ),
      'bad_safetensors',
      /tensor transformer\.wte\.weight: unknown dtype "Q4_K" \(safetensors dtypes: F32, BF16/,
    ],
    [
      'shape of the wrong JSON type',
      train(
        await stVariant((h) => {
          h[W].shape = { a: 1 };
        }),
      ),
      'bad_safetensors',
      /tensor transformer\.wte\.weight: shape must be an array, got an object/,
    ],
    [
      'negative dimension',
      train(
        await stVariant((h) => {
          h[W].shape = [-16, -8];
        }),
      ),
      'bad_safetensors',
      /tensor transformer\.wte\.weight: shape\[0\] must be a non-negative integer, got a negative/,
    ],
    [
      'header entry not an object',
      train(
        await stVariant((h) => {
          h[W] = [1, 2];
        }),
      ),
      'bad_safetensors',
      /tensor transformer\.wte\.weight: header entry is an array, expected an object/,
    ],
    [
      'header not an object',
      train(
        await stVariant(
          () => {},
          () => Buffer.from('[1,2,3]  '),
        ),
      ),
      'bad_safetensors',
      /header is an array, expected an object/,
    ],
    [
      'header length past the file',
      train(
        await stVariant(
          () => {},
          () => Buffer.alloc(0),
        ).then(async (d) => {
          const f = join(d, 'model.safetensors');
          await writeFile(f, Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0x7b]));
          return d;
        }),
      ),
      'truncated_safetensors',
      /header length \d+ exceeds the 1 bytes that follow/,
    ],
    [
      'NaN weights',
      train(
        await stVariant((h, d) => {
          d.writeFloatLE(NaN, h[W].data_offsets[0] + 8);
          return d;
        }),
      ),
      'bad_weights',
      /tensor transformer\.wte\.weight holds a NaN or infinite value \(element 2\)/,
    ],
    [
      'a directory as model.safetensors',
      train(dirWeights),
      'file_not_readable',
      /dir-weights\/model\.safetensors: it is a directory/,
    ],
    [
      'a FIFO as model.safetensors',
      train(fifoDir),
      'file_not_readable',
      /fifo\/model\.safetensors: it is a FIFO, not a regular file/,
    ],
    [
      'a FIFO as config.json',
      train(fifoConfig),
      'file_not_readable',
      /fifo-config\/config\.json: it is a FIFO/,
    ],
    [
      'a FIFO as the data file',
      train(model, fifoData),
      'file_not_readable',
      /fifo\.bin: it is a FIFO/,
    ],
    ['a file as --model', train(data), 'file_not_readable', /data\.bin/],
    [
      'deeply nested config.json',
      train(deep),
      'bad_config',
      /config\.json: not valid JSON \(line 1, column 65: nesting deeper than 64 levels/,
    ],
    [
      'malformed number',
      train(await withFile('config.json', '{"vocab_size": 16.}')),
      'bad_config',
      /expected a digit after '\.'/,
    ],
    [
      'leading zero',
      train(await withFile('config.json', '{"vocab_size": 016}')),
      'bad_config',
      /column 17: expected ',' or '}'/,
    ],
    [
      'lone surrogate',
      train(await withFile('config.json', '{"model_type": "\\ud800"}')),
      'bad_config',
      /unpaired high surrogate/,
    ],
    [
      'data: lengths past the file',
      train(model, await badData('long.bin', dataFile([2, 0xffffffff, 1, 2], 1))),
      'bad_data',
      /long\.bin: record 0: lengths need 4294967297 token ids but the file ends first/,
    ],
    [
      'data: a record count the file cannot hold',
      train(model, await badData('count.bin', dataFile([1, 1, 2, 3], 0xffffffff))),
      'bad_data',
      /count\.bin: record_count 4294967295 exceeds what the file's 40 bytes can hold/,
    ],
    [
      'data: token id out of range',
      train(model, await badData('ids.bin', dataFile([1, 1, 2, 3, 1, 1, 2, 0xffffffff], 2))),
      'bad_data',
      /ids\.bin: record 1: token id 4294967295 at position 1 is out of range \(vocab_size = 16\)/,
    ],
    [
      'an empty --out',
      ['train', '--model', model, '--data', data, '--out', '', '--loss', 'sft'],
      'usage',
      /train: --out must not be empty/,
    ],
    [
      'an over-long --model',
      train(`${root}/${'m'.repeat(4100)}`),
      'usage',
      /train: --model is \d+ bytes long \(at most 4000\)/,
    ],
    [
      'a directory as the data file',
      train(model, root),
      'file_not_readable',
      /opsr-bad-input-\w+: it is a directory/,
    ],
    [
      'data: trailing bytes',
      train(model, await badData('trail.bin', dataFile([1, 1, 2, 3, 9], 1))),
      'bad_data',
      /trail\.bin: 4 bytes of trailing data after record 0/,
    ],
  ];
  for (const bin of [ENGINE, ASAN]) {
    for (const [what, args, code, message] of cases) {
      const r = await runEngine(bin, args, 60_000);
      assert.equal(r.signal, null, `${what} (${bin}): killed after 60 s (a hang?)`);
      assert.equal(r.code, 2, `${what} (${bin}): exit ${r.code}, ${r.stderr}`);
      const err = engineError(r.stderr);
      assert.equal(err.code, code, `${what}: ${err.message}`);
      assert.match(err.message, message, what);
    }
  }
});

test('valid JSON numbers of any length load', async () => {
  const long = `0.${'0'.repeat(4)}1${'0'.repeat(400)}`; // 1e-5 in 406 characters
  const cfg =
    `{"vocab_size": 16${'.'}${'0'.repeat(300)}, "n_positions": 16, "n_layer": 1, ` +
    `"n_head": 2, "n_embd": 8e0, ` +
    `"layer_norm_epsilon": ${long}, "initializer_range": 2E-2, "x": -0.0, "y": 1e400}`;
  const dir = await withFile('config.json', cfg);
  const r = await runEngine(ENGINE, ['logprobs', '--model', dir, '--data', data]);
  assert.equal(r.code, 0, r.stderr);
  assert.ok(JSON.parse(r.stdout.trim().split('\n')[0]).logp_sum < 0);
});

test('--out cleanup removes only the temp files the engine makes', async () => {
  const out = join(root, 'out-cleanup');
  await mkdir(join(out, 'checkpoints', 'step-00000001.tmp-99'), { recursive: true });
  await mkdir(join(out, 'final.tmp-12'), { recursive: true });
  await mkdir(join(out, 'my.tmp-files'), { recursive: true });
  await writeFile(join(out, 'notes.tmp-1'), 'mine');
  await writeFile(join(out, 'checkpoints', 'step-0000000x.tmp-1'), 'mine');
  const r = await runEngine(ENGINE, [
    'train',
    '--model',
    model,
    '--data',
    data,
    '--out',
    out,
    '--loss',
    'sft',
    '--max-steps',
    '1',
  ]);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual((await readdir(out)).sort(), [
    'checkpoints',
    'final',
    'my.tmp-files',
    'notes.tmp-1',
  ]);
  assert.deepEqual((await readdir(join(out, 'checkpoints'))).sort(), [
    'step-00000001',
    'step-0000000x.tmp-1',
  ]);
});
