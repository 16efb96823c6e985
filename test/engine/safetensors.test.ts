// Engine checkpoint I/O against transformers: the engine saves F32, BF16 and F16 weights, as one
// file or sharded with an index, that transformers loads bit-identically (BF16/F16 rounded to
// nearest-even like torch) with the same logits; it loads transformers' sharded BF16 checkpoints;
// broken checkpoint directories give one error line naming the file and tensor, exit 2.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { cp, mkdir, mkdtemp, readFile, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ENGINE, PYTHON, REPO } from '../helpers/tiny-gpt2.ts';
import {
  runEngine,
  engineError,
  readSafetensors,
  writeSafetensors,
} from '../helpers/engine-files.ts';

const ASAN = join(REPO, 'engine', 'build', 'opsr-engine-asan');
const INTEROP = join(REPO, 'test', 'engine', 'safetensors_interop.py');
const root = await mkdtemp(join(tmpdir(), 'opsr-st-'));
const src = join(root, 'src');
const bf16Sharded = join(root, 'src-bf16-sharded');
const data = join(root, 'data.bin');
after(() => rm(root, { recursive: true, force: true }));

before(() => {
  execFileSync(
    'make',
    ['-s', '-C', join(REPO, 'engine'), 'build/opsr-engine', 'build/opsr-engine-asan'],
    { stdio: ['ignore', 'ignore', 'inherit'] },
  );
  execFileSync(PYTHON, [INTEROP, 'make', root], { stdio: ['ignore', 'ignore', 'pipe'] });
});

// lr 0: the saved weights are the loaded ones, so only loading and saving are under test.
async function resave(model: string, out: string, flags: string[]): Promise<string> {
  const r = await runEngine(ENGINE, [
    'train',
    '--model',
    model,
    '--data',
    data,
    '--out',
    join(root, out),
    '--loss',
    'sft',
    '--lr',
    '0',
    '--max-steps',
    '1',
    '--threads',
    '1',
    ...flags,
  ]);
  assert.equal(r.code, 0, r.stderr);
  return join(root, out, 'final');
}

interface Compared {
  exact: boolean;
  dtype: string;
  logit_diff: number;
  tensors: number;
}
function compare(specs: Record<string, string>): Record<string, Compared> {
  const args = Object.entries(specs).map(([dir, kind]) => `${dir}=${kind}`);
  return JSON.parse(
    execFileSync(PYTHON, [INTEROP, 'compare', root, ...args], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    }),
  );
}

test('engine-saved F32/BF16/F16, single or sharded: transformers loads bit-identical', async () => {
  const runs: [string, string[], string, number][] = [
    ['f32', ['--save-dtype', 'f32'], 'f32', 1],
    ['f32-sharded', ['--save-dtype', 'f32', '--max-shard-size', '20KB'], 'f32', 8],
    ['bf16', ['--save-dtype', 'bf16'], 'bf16', 1],
    ['bf16-sharded', ['--save-dtype', 'BF16', '--max-shard-size', '20000'], 'bf16', 4],
    ['f16', ['--save-dtype', 'f16'], 'f16', 1],
    // The default dtype is the input's: BF16 shards in, BF16 out.
    ['from-bf16', [], 'bf16', 1],
    ['from-bf16-f32', ['--save-dtype', 'f32'], 'from-bf16', 1],
  ];
  const specs: Record<string, string> = {};
  for (const [name, flags, kind, shards] of runs) {
    const dir = await resave(name.startsWith('from') ? bf16Sharded : src, name, flags);
    const files = (await readdir(dir)).filter((f) => f.endsWith('.safetensors')).sort();
    assert.equal(files.length, shards, `${name}: ${files.join(' ')}`);
    if (shards > 1) {
      assert.deepEqual(
        files,
        files.map((_, i) => `model-${String(i + 1).padStart(5, '0')}-of-0000${shards}.safetensors`),
      );
      const index = JSON.parse(await readFile(join(dir, 'model.safetensors.index.json'), 'utf8'));
      assert.deepEqual([...new Set(Object.values(index.weight_map))].sort(), files);
      for (const f of files) {
        // at most the limit, unless one tensor alone exceeds it
        const { header, data: bytes } = await readSafetensors(join(dir, f));
        assert.ok(
          bytes.length <= 20_000 || Object.keys(header).length === 2,
          `${name}/${f}: ${bytes.length} bytes`,
        );
      }
    } else assert.deepEqual(files, ['model.safetensors']);
    const config = JSON.parse(await readFile(join(dir, 'config.json'), 'utf8'));
    const torchName = { f32: 'float32', bf16: 'bfloat16', f16: 'float16', 'from-bf16': 'float32' }[
      kind
    ];
    assert.equal(config.dtype ?? config.torch_dtype, torchName, name);
    assert.ok(
      !(await readdir(dir)).some((f) => f.includes('.tmp-')),
      `${name}: no temp files left`,
    );
    specs[`${name}/final`] = kind;
  }
  const res = compare(specs);
  for (const [dir, kind] of Object.entries(specs)) {
    assert.equal(res[dir].tensors, 28, dir);
    assert.ok(res[dir].exact, `${dir}: every tensor bit-identical to torch's ${kind}`);
    assert.equal(res[dir].logit_diff, 0, `${dir}: same logits`);
  }
  assert.equal(res['bf16/final'].dtype, 'torch.bfloat16');
  assert.equal(res['f16/final'].dtype, 'torch.float16');
});

// A copy of the transformers BF16 shards with one file edited.
async function shardVariant(name: string, edit: (dir: string) => Promise<void>): Promise<string> {
  const dir = join(root, 'bad', name);
  await mkdir(join(root, 'bad'), { recursive: true });
  await cp(bf16Sharded, dir, { recursive: true });
  await edit(dir);
  return dir;
}
const SHARD1 = 'model-00001-of-00004.safetensors';
const SHARD2 = 'model-00002-of-00004.safetensors';
const INDEX = 'model.safetensors.index.json';
async function editIndex(dir: string, edit: (wm: Record<string, string>) => void) {
  const index = JSON.parse(await readFile(join(dir, INDEX), 'utf8'));
  edit(index.weight_map);
  await writeFile(join(dir, INDEX), JSON.stringify(index));
}
async function editShard(
  dir: string,
  file: string,
  edit: (h: Record<string, any>, d: Buffer) => Buffer | void,
) {
  const { header, data: bytes } = await readSafetensors(join(dir, file));
  await writeSafetensors(join(dir, file), header, edit(header, bytes) ?? bytes);
}

test('broken checkpoint directories: one error line naming file and tensor, exit 2', async () => {
  const { header: h1 } = await readSafetensors(join(bf16Sharded, SHARD1));
  const t1 = Object.keys(h1)
    .filter((k) => k !== '__metadata__')
    .sort()[0];
  const cases: [string, string, string, RegExp][] = [
    [
      'quantized',
      await shardVariant('quantized', async (d) => {
        const c = JSON.parse(await readFile(join(d, 'config.json'), 'utf8'));
        await writeFile(
          join(d, 'config.json'),
          JSON.stringify({ ...c, quantization_config: { quant_method: 'bitsandbytes' } }),
        );
      }),
      'unsupported_model',
      /quantized\/config\.json: quantization_config \(quant_method bitsandbytes\) is set/,
    ],
    [
      'shard listed but absent',
      await shardVariant('absent', (d) => rm(join(d, SHARD2))),
      'file_not_readable',
      new RegExp(
        `absent/${INDEX}: weight_map puts tensor \\S+ in ${SHARD2}: cannot open \\S+${SHARD2}`,
      ),
    ],
    [
      'shard missing from the index',
      await shardVariant('unlisted', (d) =>
        editIndex(d, (wm) => {
          for (const k of Object.keys(wm)) if (wm[k] === SHARD2) delete wm[k];
        }),
      ),
      'missing_shard',
      new RegExp(`unlisted/${INDEX}: shard 2 of 4 is not listed in weight_map`),
    ],
    [
      'tensor in another shard than the index says',
      await shardVariant('moved', (d) =>
        editIndex(d, (wm) => {
          wm[t1] = SHARD2;
        }),
      ),
      'bad_safetensors',
      new RegExp(
        `weight_map puts tensor ${t1.replaceAll('.', '\\.')} in ${SHARD2}, but it is ` +
          `in \\S+/${SHARD1}`,
      ),
    ],
    [
      'duplicate tensor across shards',
      await shardVariant('duplicate', async (d) => {
        const { header, data: bytes } = await readSafetensors(join(d, SHARD1));
        await editShard(d, SHARD2, (h, d2) => {
          const [b, e] = header[t1].data_offsets;
          h[t1] = { ...header[t1], data_offsets: [d2.length, d2.length + e - b] };
          return Buffer.concat([d2, bytes.subarray(b, e)]);
        });
      }),
      'duplicate_tensor',
      new RegExp(`tensor ${t1.replaceAll('.', '\\.')} is in both \\S+${SHARD1} and \\S+${SHARD2}`),
    ],
    [
      'wrong shape in a shard',
      await shardVariant('shape', (d) =>
        editShard(d, SHARD1, (h) => {
          h[t1].shape = [...h[t1].shape].reverse().concat(h[t1].shape.length === 1 ? [1] : []);
        }),
      ),
      'bad_shape',
      new RegExp(
        `shape/${SHARD1}: tensor ${t1.replaceAll('.', '\\.')} has shape \\[[\\d, ` +
          `]+\\]; config\\.json requires`,
      ),
    ],
    [
      'wrong dtype in a shard',
      await shardVariant('dtype', (d) =>
        editShard(d, SHARD1, (h) => {
          h[t1].dtype = 'I16';
        }),
      ),
      'bad_dtype',
      new RegExp(
        `dtype/${SHARD1}: tensor ${t1.replaceAll('.', '\\.')} has dtype I16; allowed: ` +
          `F32, F16, BF16`,
      ),
    ],
    [
      'no weights at all',
      await shardVariant('empty', async (d) => {
        for (const f of await readdir(d)) if (f.includes('safetensors')) await rm(join(d, f));
      }),
      'missing_weights',
      /empty: neither model\.safetensors nor model\.safetensors\.index\.json exists/,
    ],
  ];
  for (const bin of [ENGINE, ASAN]) {
    for (const [what, dir, code, message] of cases) {
      const r = await runEngine(bin, [
        'train',
        '--model',
        dir,
        '--data',
        data,
        '--out',
        join(root, 'o'),
        '--loss',
        'sft',
      ]);
      assert.equal(r.code, 2, `${what} (${bin}): exit ${r.code}, ${r.stderr}`);
      const err = engineError(r.stderr);
      assert.equal(err.code, code, `${what}: ${err.message}`);
      assert.match(err.message, message, what);
    }
  }
  for (const [flag, value, message] of [
    ['--save-dtype', 'fp8', /--save-dtype must be f32, bf16 or f16; got "fp8"/],
    ['--max-shard-size', '5XB', /--max-shard-size must be a positive size .* got "5XB"/],
    ['--max-shard-size', '0', /--max-shard-size must be a positive size/],
  ] as const) {
    const r = await runEngine(ENGINE, [
      'train',
      '--model',
      src,
      '--data',
      data,
      '--out',
      join(root, 'o'),
      '--loss',
      'sft',
      flag,
      value,
    ]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(engineError(r.stderr).message, message);
  }
});

test('a resumed run over sharded F32 checkpoints matches an uninterrupted one', async () => {
  const base = [
    '--data',
    data,
    '--loss',
    'sft',
    '--lr',
    '1e-2',
    '--threads',
    '1',
    '--max-shard-size',
    '30KB',
    '--save-dtype',
    'bf16',
    '--checkpoint-every',
    '1',
    '--keep-checkpoints',
    '5',
  ];
  const full = await runEngine(ENGINE, [
    'train',
    '--model',
    bf16Sharded,
    '--out',
    join(root, 'full'),
    '--max-steps',
    '3',
    ...base,
  ]);
  assert.equal(full.code, 0, full.stderr);
  // Drop the last checkpoint and the final model, then resume from step 2's shards.
  const ck = join(root, 'full', 'checkpoints');
  assert.ok((await readdir(join(ck, 'step-00000002'))).includes(INDEX));
  await cp(join(root, 'full'), join(root, 'part'), { recursive: true });
  await rm(join(root, 'part', 'checkpoints', 'step-00000003'), { recursive: true });
  await rename(join(root, 'part', 'final'), join(root, 'part', 'final-old'));
  const resumed = await runEngine(ENGINE, [
    'train',
    '--model',
    bf16Sharded,
    '--out',
    join(root, 'part'),
    '--max-steps',
    '3',
    '--resume',
    ...base,
  ]);
  assert.equal(resumed.code, 0, resumed.stderr);
  for (const f of (await readdir(join(root, 'full', 'final'))).filter((x) =>
    x.includes('safetensors'),
  ))
    assert.deepEqual(
      await readFile(join(root, 'part', 'final', f)),
      await readFile(join(root, 'full', 'final', f)),
      f,
    );
});
