// lib/modeldir.ts (what opsr accepts as a model directory) and modelHash over sharded
// checkpoints; `opsr validate` and prepareRun refuse a bad directory before a run starts, naming
// the file.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { cp, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkModelDir, ModelDirError, weightFileNames } from '../../lib/modeldir.ts';
import { modelHash } from '../../lib/hash.ts';
import { prepareRun } from '../../activities/prepare.ts';
import { parseRunConfig } from '../../config/index.ts';
import { opsr } from '../helpers/opsr-cli.ts';

let root: string;
before(async () => {
  root = await mkdtemp(join(tmpdir(), 'opsr-modeldir-'));
});
after(async () => rm(root, { recursive: true, force: true }));

const INDEX = 'model.safetensors.index.json';
const WEIGHTS = { 'model.safetensors': 'w' };

async function modelDir(name: string, config: object, files: Record<string, string | object>) {
  const dir = join(root, name);
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'config.json'), JSON.stringify(config));
  for (const [f, body] of Object.entries(files)) {
    await writeFile(join(dir, f), typeof body === 'string' ? body : JSON.stringify(body));
  }
  return dir;
}

const S1 = 'model-00001-of-00002.safetensors';
const S2 = 'model-00002-of-00002.safetensors';
const shardIndex = {
  metadata: { total_size: 12 },
  weight_map: {
    'model.embed_tokens.weight': S1,
    'model.norm.weight': S2,
    'model.layers.0.input_layernorm.weight': S1,
  },
};
const SHARDED = { [INDEX]: shardIndex, [S1]: 'a', [S2]: 'b' };

test('single-file and sharded directories of each supported model_type are accepted', async () => {
  for (const type of ['gpt2', 'llama', 'mistral', 'qwen2']) {
    const single = await modelDir(`single-${type}`, { model_type: type }, WEIGHTS);
    assert.deepEqual(await checkModelDir(single), {
      modelType: type,
      weights: [join(single, 'model.safetensors')],
      sharded: false,
    });
  }
  const sharded = await modelDir('sharded', { model_type: 'llama' }, SHARDED);
  const info = await checkModelDir(sharded);
  assert.equal(info.sharded, true);
  assert.deepEqual(info.weights, [join(sharded, S1), join(sharded, S2)]);
});

test('refusals name the file and what is allowed', async () => {
  const refuses = async (dir: string, re: RegExp) =>
    assert.rejects(
      checkModelDir(dir),
      (e: Error) => e instanceof ModelDirError && re.test(e.message),
    );
  await refuses(
    await modelDir('bert', { model_type: 'bert' }, WEIGHTS),
    /bert\/config\.json: model_type "bert" is not supported; allowed: gpt2, llama, mistral, qwen2/,
  );
  await refuses(
    await modelDir('untyped', {}, WEIGHTS),
    /config\.json: model_type undefined is not supported/,
  );
  const quantized = { model_type: 'llama', quantization_config: { quant_method: 'gguf' } };
  await refuses(
    await modelDir('gguf', quantized, WEIGHTS),
    /gguf\/config\.json: has a quantization_config/,
  );
  await refuses(
    await modelDir('noweights', { model_type: 'llama' }, {}),
    /noweights\/model\.safetensors is missing \(nor is there a model\.safetensors\.index\.json/,
  );
  await refuses(
    await modelDir(
      'noshard',
      { model_type: 'qwen2' },
      {
        [INDEX]: shardIndex,
        [S1]: 'a',
      },
    ),
    /noshard\/model-00002-of-00002\.safetensors is missing \(a shard named by .*\.index\.json\)/,
  );
  await refuses(
    await modelDir(
      'badmap',
      { model_type: 'llama' },
      {
        [INDEX]: { weight_map: { 'model.norm.weight': '../elsewhere.safetensors' } },
      },
    ),
    /index\.json: weight_map\["model\.norm\.weight"\] must name a file in the directory/,
  );
  const emptyMap = { [INDEX]: { weight_map: {} } };
  await refuses(
    await modelDir('emptymap', { model_type: 'llama' }, emptyMap),
    /weight_map must be a non-empty object/,
  );
  await refuses(join(root, 'absent'), /absent is not a directory/);
  await refuses(
    await modelDir('badjson', { model_type: 'llama' }, { [INDEX]: '{oops' }),
    /badjson\/model\.safetensors\.index\.json is not readable JSON/,
  );
});

test('modelHash covers every shard and the index; absent extras do not count', async () => {
  const a = await modelDir('hash-a', { model_type: 'llama' }, SHARDED);
  const b = join(root, 'hash-b');
  await cp(a, b, { recursive: true });
  assert.equal(await modelHash(a), await modelHash(b));
  await writeFile(join(b, S2), 'B');
  assert.notEqual(await modelHash(a), await modelHash(b), 'the second shard is hashed');
  assert.deepEqual(await weightFileNames(a), [S1, S2]);
  const single = await modelDir('hash-single', { model_type: 'gpt2' }, WEIGHTS);
  const before = await modelHash(single);
  await writeFile(join(single, 'generation_config.json'), '{"eos_token_id": 0}');
  assert.notEqual(await modelHash(single), before, 'generation_config.json counts when present');
});

test('opsr validate and prepareRun refuse an unsupported model before a run starts', async () => {
  const bad = await modelDir('val-bert', { model_type: 'bert' }, WEIGHTS);
  const prompts = join(root, 'prompts.jsonl');
  await writeFile(prompts, '{"prompt": "Say hi."}\n');
  const configFile = join(root, 'run.json');
  const run = { model: bad, prompts: { file: prompts }, storage: root };
  await writeFile(configFile, JSON.stringify(run));
  const v = await opsr(['validate', '--config', configFile]);
  assert.equal(v.code, 2);
  assert.match(
    v.stderr,
    /model: .*val-bert\/config\.json: model_type "bert" is not supported; allowed: gpt2/,
  );

  const cfg = parseRunConfig({ ...run, storage: join(root, 'store') });
  type Failure = Error & { type?: string; nonRetryable?: boolean };
  const named = /model: .*val-bert\/config\.json: model_type "bert"/;
  await assert.rejects(
    prepareRun({ runId: 'r', config: cfg }),
    (e: Failure) => e.type === 'BadInput' && e.nonRetryable === true && named.test(e.message),
  );
  // Sharded and good: prepareRun goes on to write the run directory.
  const sharded = await modelDir('val-sharded', { model_type: 'mistral' }, SHARDED);
  const ok = await prepareRun({ runId: 'r2', config: { ...cfg, model: sharded } });
  assert.equal(ok.baseModel, sharded);
  assert.equal(ok.promptCount, 1);
});
