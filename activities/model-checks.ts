// Checks of a run config against its model and prompts (Node only): what the engine and the
// server would refuse only after work is spent. Sequence lengths against the model's context
// (config.json), and the longest prompt, prefixed and rendered as the sampler sends it, plus
// sampling.maxTokens (evaluation.maxTokens) against it too. load-config.ts runConfigProblems
// (opsr validate, opsr run, and prepareRun before anything is sampled) refuses what this finds.
import { promptIds } from './dataset.ts';
import { loadPrompts, type PromptItem } from './prompts.ts';
import { prefixed } from './sample-pairs.ts';
import { readModelDims } from '../lib/model-config.ts';
import { loadTokenizer, type ChatMessage, type LoadedTokenizer } from '../lib/tokenizer.ts';
import type { RunConfig } from '../config/schema.ts';

interface Longest {
  tokens: number;
  index: number;
  problem: string | null;
}

// The longest of each prompt's variants in tokens, as the sampler's request carries them (through
// the chat template when the model has one); a variant the tokenizer cannot take is a problem too.
function longest(
  tok: LoadedTokenizer,
  items: PromptItem[],
  file: string,
  variants: (it: PromptItem) => (string | ChatMessage[])[],
): Longest {
  const best: Longest = { tokens: 0, index: -1, problem: null };
  for (const it of items) {
    for (const v of variants(it)) {
      let n: number;
      try {
        n = promptIds(tok, v, `${file}: prompt index ${it.index}`).length;
      } catch (err) {
        return { ...best, problem: (err as Error).message };
      }
      if (n > best.tokens) Object.assign(best, { tokens: n, index: it.index });
    }
  }
  return best;
}

// Training's and the init stages' maxLength against the context too: the engine refuses a
// sequence longer than its context.
export async function modelProblems(c: RunConfig): Promise<string[]> {
  const dims = await readModelDims(c.model);
  if (!dims) return []; // the model directory check names what is missing
  const ctx = dims.context;
  const where = `the model's context (${ctx} tokens, ${dims.contextField} in ${dims.file})`;
  const out: string[] = [];
  const atMost = (field: string, value: number) => {
    if (value > ctx)
      out.push(`${field}: ${value} exceeds ${where} (got ${value}; allowed at most ${ctx})`);
  };
  atMost('training.maxLength', c.training.maxLength);
  if (c.init?.sft?.maxLength !== undefined) atMost('init.sft.maxLength', c.init.sft.maxLength);
  if (c.init?.offline?.maxLength !== undefined)
    atMost('init.offline.maxLength', c.init.offline.maxLength);

  // Sampling goes through a server for the policy in config.model (embedded, managed vLLM); an
  // external server's model is its own business.
  if (c.sampling.lifecycle === 'external') return out;
  const evalTokens = c.evaluation?.maxTokens ?? c.sampling.maxTokens;
  for (const [field, n] of [
    ['sampling.maxTokens', c.sampling.maxTokens],
    ['evaluation.maxTokens', evalTokens],
  ] as const) {
    if (field === 'evaluation.maxTokens' && !c.evaluation) continue;
    if (n >= ctx)
      out.push(
        `${field}: ${n} leaves no room for a prompt in ${where} (got ${n}; allowed at ` +
          `most ${ctx - 1})`,
      );
  }
  if (out.length) return out;
  let tok: LoadedTokenizer;
  try {
    tok = await loadTokenizer(c.model);
  } catch {
    return out; // sampling names a tokenizer problem with the file
  }
  const p = c.prefixes;
  // Prefixes differ between rounds only in the score's digits: the widest score stands for all.
  const widest = (xs: number[]) =>
    xs.reduce((a, b) => (String(b).length > String(a).length ? b : a));
  const variants = (it: PromptItem) => [
    prefixed(it, p.chosenTemplate, p.chosenScore),
    prefixed(it, p.rejectedTemplate, widest(p.rejectedScores)),
  ];
  // A prompt file that cannot be read is named by the run when it reads it.
  const load = (spec: RunConfig['prompts']) => loadPrompts(spec).catch(() => [] as PromptItem[]);
  const check = (field: string, file: string, maxTokens: number, l: Longest) => {
    if (l.problem) out.push(l.problem);
    else if (l.index >= 0 && l.tokens >= ctx) {
      out.push(
        `${file}: prompt index ${l.index} takes ${l.tokens} tokens with its prefix, ` +
          `which fills ${where}; ` +
          'allowed: prompts that leave room for an answer (or a model with a longer context)',
      );
    } else if (l.index >= 0 && l.tokens + maxTokens > ctx) {
      out.push(
        `${field}: ${maxTokens} new tokens after the longest prompt (index ${l.index} ` +
          `of ${file}: ${l.tokens} tokens ` +
          (`with its prefix) exceed ${where} (got ${maxTokens}; allowed at most ` +
            `${ctx - l.tokens}, or shorter prompts)`),
      );
    }
  };
  check(
    'sampling.maxTokens',
    c.prompts.file,
    c.sampling.maxTokens,
    longest(tok, await load(c.prompts), c.prompts.file, variants),
  );
  if (c.evaluation) {
    const ev = c.evaluation;
    const evalItems = await load(ev.prompts);
    check(
      ev.maxTokens !== undefined ? 'evaluation.maxTokens' : 'sampling.maxTokens',
      ev.prompts.file,
      evalTokens,
      longest(tok, evalItems, ev.prompts.file, (it) => [
        it.messages ?? it.prompt!,
        ...(ev.prefixCurve ? ev.prefixScores.map((s) => prefixed(it, p.chosenTemplate, s)) : []),
      ]),
    );
  }
  return out;
}
