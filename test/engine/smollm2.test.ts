// The real model (issue 8): SmolLM2-135M-Instruct (Llama, 30 layers, GQA 9/3, tied, RoPE theta
// 1e5) as `opsr models fetch smollm2-135m-instruct` writes it. The engine's per-record log-probs
// match transformers within 1e-4 relative and its greedy tokens equal transformers' generate.
// Skipped, saying why, when the directory is absent (test set-up fetches it).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { execFileSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { writeSftData } from '../../lib/tokdata.ts';
import { ENGINE, PYTHON, REPO } from '../helpers/tiny-gpt2.ts';

const MODEL = join(REPO, '.opsr', 'models', 'smollm2-135m-instruct');
const absent = existsSync(join(MODEL, 'config.json'))
  ? false
  : `${MODEL} is absent (run: opsr models fetch smollm2-135m-instruct)`;
if (absent) console.log(`# skipping the SmolLM2 tests: ${absent}`);

// Tokenized records with transformers' response log-prob sums, and its greedy continuation of
// the first prompt (a ChatML question).
const REFERENCE = `
import json, sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
d = sys.argv[1]
tok = AutoTokenizer.from_pretrained(d)
m = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager").eval()
texts = [("<|im_start|>user\\nWhat is the capital of France?<|im_end|>\\n<|im_start|>assistant\\n",
          "The capital of France is Paris.<|im_end|>"),
         ("The quick brown fox", " jumps over the lazy dog."),
         ("def add(a, b):\\n", "    return a + b\\n")]
out = []
for p, r in texts:
    pi, ri = tok(p)["input_ids"], tok(r)["input_ids"]
    with torch.no_grad():
        lp = torch.log_softmax(m(torch.tensor([pi + ri])).logits[0].double(), -1)
    logp = sum(lp[len(pi) - 1 + i, t].item() for i, t in enumerate(ri))
    out.append({"prompt": pi, "response": ri, "logp": logp})
ids = torch.tensor([out[0]["prompt"]])
m.generation_config.eos_token_id = None
m.generation_config.pad_token_id = 0
with torch.no_grad():
    g = m.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False)
new = g[0, ids.shape[1]:]
print(json.dumps({"records": out, "greedy": new.tolist(), "text": tok.decode(new[:8])}))
`;
interface Reference {
  records: { prompt: number[]; response: number[]; logp: number }[];
  greedy: number[];
  text: string;
}

let dir: string;
let ref: Reference;
before(async () => {
  if (absent) return;
  dir = await mkdtemp(join(tmpdir(), 'opsr-smollm2-'));
  ref = JSON.parse(
    execFileSync(PYTHON, ['-c', REFERENCE, MODEL], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    }),
  );
});
after(() => (dir ? rm(dir, { recursive: true, force: true }) : undefined));

test(
  'SmolLM2-135M: engine log-probs equal transformers within 1e-4',
  { skip: absent },
  async () => {
    const data = join(dir, 'sft.bin');
    await writeSftData(
      data,
      ref.records.map((r) => ({ prompt: r.prompt, response: r.response })),
    );
    const r = await execa(ENGINE, ['logprobs', '--model', MODEL, '--data', data, '--threads', '2']);
    const got = r.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    assert.equal(got.length, ref.records.length);
    got.forEach((e, i) => {
      const want = ref.records[i].logp;
      assert.ok(
        Math.abs(e.logp_sum - want) <= 1e-4 * Math.abs(want),
        `record ${i}: ${e.logp_sum} vs ${want}`,
      );
    });
  },
);

test(
  'SmolLM2-135M: greedy tokens equal transformers generate (it answers Paris)',
  { skip: absent },
  async () => {
    assert.match(ref.text, /Paris/);
    const req = {
      op: 'generate',
      id: 1,
      prompt: ref.records[0].prompt,
      max_tokens: ref.greedy.length,
      temperature: 0,
    };
    const r = await execa(ENGINE, ['serve', '--model', MODEL, '--threads', '2'], {
      input: `${JSON.stringify(req)}\n`,
    });
    const tokens = r.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l))
      .filter((e) => e.event === 'token')
      .map((e) => e.token);
    assert.deepEqual(tokens, ref.greedy);
  },
);
