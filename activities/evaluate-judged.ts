// Judge-based evaluations of one policy on one evaluation set (config evals.sets[]):
//   pairwise  the policy's answers against reference answers (the set file's "output", or a
//             reference model answering now), judged in a seeded random order and once more in
//             the other order (order bias); win rate, its standard error and the single-model
//             LC win rate (lib/winrate.ts). summarizeJudgedEvals refits LC jointly over every
//             policy of the run, with per-instruction difficulty.
//   grading   MT-Bench style: the policy answers each turn of each question (temperature by
//             category), the judge rates every turn 1-10 ([[n]]), against a reference answer
//             where the set has one; unparsable ratings are counted and left out.
// Writes <runDir>/eval/<label>/<set>.json (+ .jsonl rows); reuses a valid manifest.
import { join } from 'node:path';
import { cancellationSignal } from '@temporalio/activity';
import { writeFileAtomic, writeJsonAtomic } from '../lib/atomic.ts';
import { hashJson, modelHash, sha256File } from '../lib/hash.ts';
import { readJsonl, toJsonl } from '../lib/jsonl.ts';
import { loadValidManifest, writeManifest } from '../lib/manifest.ts';
import { allowListeners, mapLimit } from '../lib/pool.ts';
import type { ChatMessage } from '../lib/tokenizer.ts';
import {
  type Annotation,
  codePoints,
  jointDifficulty,
  LC_MIN_INSTRUCTIONS,
  lengthControlledWinRate,
  winRate,
} from '../lib/winrate.ts';
import type {
  EvalSetConfig,
  EvaluateJudgedInput,
  GradingEvalResult,
  JudgedEvalResult,
  JudgedSummaryRow,
  OrderBias,
  PairwiseEvalResult,
  SamplingConfig,
  SummarizeJudgedInput,
} from '../contracts/activities.ts';
import { badInput } from './errors.ts';
import { type Judge, makeJudge } from './judge.ts';
import { withKeepAlive } from './progress.ts';
import { readUserRecords, userRecordsProblem } from './records.ts';
import { deriveSeed, generator, requestFailure } from './sample-pairs.ts';
import type { SamplerPool } from './sampler-pool.ts';

type PairwiseSet = Extract<EvalSetConfig, { kind: 'pairwise' }>;
type GradingSet = Extract<EvalSetConfig, { kind: 'grading' }>;

// MT-Bench's answer temperatures by category; other categories use sampling.temperature.
const MT_BENCH_TEMPERATURES: Record<string, number> = {
  writing: 0.7,
  roleplay: 0.7,
  extraction: 0,
  math: 0,
  coding: 0,
  reasoning: 0,
  stem: 0.1,
  humanities: 0.1,
};

interface EvalHooks {
  samplers: SamplerPool; // the worker's local servers (createActivities' deps)
  signal?: AbortSignal;
  keepAlive?: <T>(details: () => unknown, work: () => Promise<T>) => Promise<T>;
}

// A judge outside the leaderboard's: LC numbers are not comparable to AlpacaEval's board.
export const LC_NOTE = {
  minimal: 'LC (length + model term; one model, no instruction difficulty)',
  difficulty:
    'LC (length + instruction difficulty fitted over all evaluated policies + model term)',
  study:
    "LC (length + instruction difficulty fitted over the base and every round's policy of " +
    'every arm and seed + model term)',
};

// The activity: Temporal's cancellation and heartbeats around runJudgedEval.
export async function evaluateJudged(
  samplers: SamplerPool,
  input: EvaluateJudgedInput,
): Promise<JudgedEvalResult> {
  return runJudgedEval(input, { samplers, signal: cancellationSignal(), keepAlive: withKeepAlive });
}

export async function runJudgedEval(
  input: EvaluateJudgedInput,
  hooks: EvalHooks,
): Promise<JudgedEvalResult> {
  const dir = join(input.runDir, 'eval', input.label);
  const manifestPath = join(dir, `${input.set.name}.manifest.json`);
  const configHash = hashJson({
    set: { ...input.set, file: undefined },
    judge: input.judge,
    judgeName: input.judgeName,
    sampling: {
      api: input.sampling.api,
      temperature: input.sampling.temperature,
      topP: input.sampling.topP,
      seed: input.sampling.seed,
      maxTokens: input.sampling.maxTokens,
      extra: input.sampling.extra,
    },
  });
  const inputs: Record<string, string> = {
    model: await modelHash(input.endpoint.modelDir),
    set: await sha256File(input.set.file).catch(() => {
      throw badInput(`evals.sets (${input.set.name}).file: cannot read ${input.set.file}`);
    }),
  };
  const ref = input.set.kind === 'pairwise' ? input.set.reference : 'file';
  if (ref === 'base') {
    throw badInput(
      `evals.sets (${input.set.name}).reference "base" means a run's policy before round 1; ` +
        'outside a run, give {"model": DIR}',
    );
  }
  if (typeof ref === 'object') inputs.reference = await modelHash(ref.model);
  const done = await loadValidManifest(manifestPath, {
    step: `eval-${input.set.name}`,
    configHash,
    inputs,
  });
  if (done) return done.data!.result as JudgedEvalResult;

  const judge = await makeJudge(input.judgeName, input.judge, {
    cacheDir: input.cacheDir,
    signal: hooks.signal,
  });
  const keepAlive = hooks.keepAlive ?? (<T>(_: () => unknown, work: () => Promise<T>) => work());
  const result =
    input.set.kind === 'pairwise'
      ? await pairwise(hooks.samplers, input, input.set, judge, dir, hooks.signal, keepAlive)
      : await grading(hooks.samplers, input, input.set, judge, dir, hooks.signal, keepAlive);
  const outputs: Record<string, string> = { result: result.file };
  if (result.kind === 'pairwise') outputs.annotations = result.annotationsFile;
  await writeManifest(manifestPath, {
    step: `eval-${input.set.name}`,
    configHash,
    inputs,
    outputs,
    data: { result },
  });
  return result;
}

type KeepAlive = NonNullable<EvalHooks['keepAlive']>;
type Gen = { answered: number; requests: number; tokens: number };

// Answers to a list of chat inputs from the model at modelDir, through the run's sampler.
async function answer(
  samplers: SamplerPool,
  sampling: SamplingConfig,
  modelDir: string,
  jobs: { input: ChatMessage[] | string; seed: number; temperature?: number }[],
  maxTokens: number,
  what: string,
  stats: Gen,
  signal?: AbortSignal,
): Promise<string[]> {
  allowListeners(signal, sampling.concurrency);
  return samplers.with(sampling, modelDir, async (endpoint) => {
    const gens = new Map<number, Awaited<ReturnType<typeof generator>>>();
    const genFor = async (t: number) =>
      gens.get(t) ??
      gens.set(t, await generator({ ...sampling, temperature: t }, endpoint, signal)).get(t)!;
    return mapLimit(jobs, sampling.concurrency, async (j, i) => {
      const gen = await genFor(j.temperature ?? sampling.temperature);
      const a = await gen(j.input, j.seed, { maxTokens }).catch((err) => {
        throw requestFailure(err, `${what} ${i}`);
      });
      stats.answered++;
      stats.requests++;
      stats.tokens += a.tokens;
      return a.text;
    });
  });
}

interface PairItem {
  instruction: string;
  output?: string;
}

// An evaluation set's records, each a JSON object that passes check.
async function readSet<T>(
  set: EvalSetConfig,
  check: (r: Record<string, unknown>) => string | null,
): Promise<T[]> {
  const recs = await readUserRecords<T>(`evals.sets (${set.name}).file`, set.file, objects(check));
  return set.limit === undefined ? recs : recs.slice(0, set.limit);
}
const objects = (check: (r: Record<string, unknown>) => string | null) => (r: unknown) =>
  !r || typeof r !== 'object' || Array.isArray(r)
    ? 'record must be a JSON object'
    : check(r as Record<string, unknown>);

// What a record of each kind of set must hold. An opsr prompt file ({"prompt"}) serves as
// pairwise instructions too, e.g. a testbed's held-out split.
const pairRecordProblem = (set: PairwiseSet) => (r: Record<string, unknown>) => {
  const text = r.instruction ?? r.prompt;
  if (typeof text !== 'string' || text === '')
    return '"instruction" (or "prompt") must be a non-empty string';
  if (set.reference === 'file' && typeof r.output !== 'string')
    return '"output" (the reference answer) must be a string with reference "file"';
  return null;
};
function questionProblem(r: Record<string, unknown>): string | null {
  if (typeof r.category !== 'string' || r.category === '')
    return '"category" must be a non-empty string';
  if (
    !Array.isArray(r.turns) ||
    r.turns.length === 0 ||
    !r.turns.every((t) => typeof t === 'string' && t !== '')
  ) {
    return '"turns" must be a non-empty list of non-empty strings (the user turns)';
  }
  if (
    r.reference !== undefined &&
    (!Array.isArray(r.reference) || !r.reference.every((t) => typeof t === 'string'))
  ) {
    return '"reference" must be a list of strings (one reference answer per turn)';
  }
  return null;
}

// The set's file read as the evaluation reads it, for the checks before a run starts: a set
// evaluated only after the last round would otherwise fail after all the training.
export const evalSetProblem = (set: EvalSetConfig) =>
  userRecordsProblem(
    `evals.sets (${set.name}).file`,
    set.file,
    objects(set.kind === 'pairwise' ? pairRecordProblem(set) : questionProblem),
  );

async function pairwise(
  samplers: SamplerPool,
  input: EvaluateJudgedInput,
  set: PairwiseSet,
  judge: Judge,
  dir: string,
  signal: AbortSignal | undefined,
  keepAlive: KeepAlive,
): Promise<PairwiseEvalResult> {
  const items = (await readSet<PairItem & { prompt?: string }>(set, pairRecordProblem(set))).map(
    (r) => ({ instruction: r.instruction ?? r.prompt!, output: r.output }),
  );
  const s = input.sampling;
  const maxTokens = set.maxTokens ?? s.maxTokens;
  const gen: Gen = { answered: 0, requests: 0, tokens: 0 };
  let judged = 0;
  const details = () => ({ set: set.name, answered: gen.answered, judged, total: items.length });
  const t0 = Date.now();
  const { answers, references } = await keepAlive(details, async () => {
    const jobs = (side: string) =>
      items.map((it, i) => ({
        input: it.instruction,
        seed: deriveSeed(s.seed, 0, i, `eval/${set.name}/${side}`),
      }));
    const answers = await answer(
      samplers,
      s,
      input.endpoint.modelDir,
      jobs('policy'),
      maxTokens,
      `${set.name}: answering instruction`,
      gen,
      signal,
    );
    const ref = set.reference;
    const references =
      typeof ref !== 'object'
        ? items.map((it) => it.output!)
        : await answer(
            samplers,
            s,
            ref.model,
            jobs('reference'),
            maxTokens,
            `${set.name}: reference answering instruction`,
            gen,
            signal,
          );
    return { answers, references };
  });
  const tAnswered = Date.now();

  // Seeded order per instruction; the other order is judged too, for the order bias.
  const verdicts = await keepAlive(details, () =>
    mapLimit(items, judge.concurrency, async (it, i) => {
      const policyFirst = (deriveSeed(s.seed, 0, i, `eval/${set.name}/order`) & 1) === 1;
      const [a, b] = policyFirst ? [answers[i], references[i]] : [references[i], answers[i]];
      const main = await judge.pairwise(it.instruction, a, b);
      const swapped = await judge.pairwise(it.instruction, b, a);
      judged++;
      // P(policy wins) from each verdict: the policy is second in `main` unless policyFirst.
      const toPolicy = (p: number | null, policySecond: boolean) =>
        p === null ? null : policySecond ? p : 1 - p;
      return {
        index: i,
        policyFirst,
        main,
        swapped,
        preference: toPolicy(main.pSecond, !policyFirst),
        swappedPreference: toPolicy(swapped.pSecond, policyFirst),
      };
    }),
  );
  const rows = verdicts.map((v, i) => ({
    index: i,
    policyFirst: v.policyFirst,
    preference: v.preference,
    swappedPreference: v.swappedPreference,
    source: v.main.source,
    judgeText: v.main.text,
    modelLength: codePoints(answers[i]),
    referenceLength: codePoints(references[i]),
    answer: answers[i],
    reference: references[i],
  }));
  const good = rows.filter((r) => r.preference !== null);
  const anns: Annotation[] = good.map((r) => ({
    instruction: r.index,
    preference: r.preference!,
    modelLength: r.modelLength,
    referenceLength: r.referenceLength,
  }));
  if (anns.length === 0)
    throw badInput(
      `${set.name}: judge ${judge.name} gave no parsable verdict on ${items.length} pairs`,
    );
  const wr = winRate(anns.map((a) => a.preference));
  const lc =
    anns.length >= LC_MIN_INSTRUCTIONS
      ? { ...lengthControlledWinRate(anns), note: LC_NOTE.minimal }
      : null;
  const both = rows.filter((r) => r.preference !== null && r.swappedPreference !== null);
  const firstWins = verdicts
    .flatMap((v) => [v.main.pSecond, v.swapped.pSecond])
    .filter((p): p is number => p !== null)
    .map((p) => 1 - p);
  const side = (p: number) => Math.sign(p - 0.5);
  const orderBias: OrderBias = {
    firstPositionWins: firstWins.length
      ? firstWins.reduce((x, y) => x + y, 0) / firstWins.length
      : 0.5,
    flipRate: both.length
      ? both.filter((r) => side(r.preference!) !== side(r.swappedPreference!)).length / both.length
      : 0,
    swappedWinRate: both.length
      ? both.reduce((x, r) => x + r.swappedPreference!, 0) / both.length
      : 0.5,
    pairs: both.length,
  };
  const sources: Record<string, number> = {};
  for (const r of rows) sources[r.source] = (sources[r.source] ?? 0) + 1;
  const file = join(dir, `${set.name}.json`);
  const annotationsFile = join(dir, `${set.name}.jsonl`);
  const result: PairwiseEvalResult = {
    kind: 'pairwise',
    name: set.name,
    label: input.label,
    modelDir: input.endpoint.modelDir,
    judge: judge.name,
    count: items.length,
    unparsable: items.length - good.length,
    sources,
    winRate: wr.winRate,
    standardError: wr.standardError,
    lc,
    orderBias,
    cost: {
      answerRequests: gen.requests,
      answerTokens: gen.tokens,
      judge: { ...judge.usage },
      wallS: { answering: (tAnswered - t0) / 1000, judging: (Date.now() - tAnswered) / 1000 },
    },
    file,
    annotationsFile,
  };
  await writeFileAtomic(annotationsFile, toJsonl(rows));
  await writeJsonAtomic(file, result);
  return result;
}

interface Question {
  question_id?: string | number;
  category: string;
  turns: string[];
  reference?: string[];
}

async function grading(
  samplers: SamplerPool,
  input: EvaluateJudgedInput,
  set: GradingSet,
  judge: Judge,
  dir: string,
  signal: AbortSignal | undefined,
  keepAlive: KeepAlive,
): Promise<GradingEvalResult> {
  const questions = await readSet<Question>(set, questionProblem);
  const s = input.sampling;
  const temperatures = { ...MT_BENCH_TEMPERATURES, ...set.temperatures };
  const gen: Gen = { answered: 0, requests: 0, tokens: 0 };
  let rated = 0;
  const details = () => ({
    set: set.name,
    answered: gen.answered,
    rated,
    questions: questions.length,
  });
  const t0 = Date.now();
  // Turn k of every question waits for turn k-1's answer: the conversation so far is its input.
  const convs: ChatMessage[][] = questions.map(() => []);
  await keepAlive(details, async () => {
    const turns = Math.max(...questions.map((q) => q.turns.length));
    for (let k = 0; k < turns; k++) {
      const open = questions.map((q, i) => ({ q, i })).filter(({ q }) => k < q.turns.length);
      const jobs = open.map(({ q, i }) => ({
        input: [...convs[i], { role: 'user', content: q.turns[k] }],
        seed: deriveSeed(s.seed, 0, i, `eval/${set.name}/turn-${k}`),
        temperature: temperatures[q.category] ?? s.temperature,
      }));
      const texts = await answer(
        samplers,
        s,
        input.endpoint.modelDir,
        jobs,
        set.maxTokens ?? s.maxTokens,
        `${set.name}: answering question`,
        gen,
        signal,
      );
      open.forEach(({ i }, j) =>
        convs[i].push(jobs[j].input[jobs[j].input.length - 1], {
          role: 'assistant',
          content: texts[j],
        }),
      );
    }
  });
  const tAnswered = Date.now();
  const turnJobs = questions.flatMap((q, i) => q.turns.map((_, k) => ({ i, k, q })));
  const rows = await keepAlive(details, () =>
    mapLimit(turnJobs, judge.concurrency, async ({ i, k, q }) => {
      const v = await judge.grade(convs[i].slice(0, 2 * k + 2), q.reference?.[k]);
      rated++;
      return {
        question: q.question_id ?? i,
        category: q.category,
        turn: k + 1,
        score: v.score,
        source: v.source,
        judgeText: v.text,
        answer: convs[i][2 * k + 1].content,
      };
    }),
  );
  const mean = (xs: number[]) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : null);
  const perCategory: GradingEvalResult['perCategory'] = {};
  for (const c of [...new Set(rows.map((r) => r.category))].sort()) {
    const rs = rows.filter((r) => r.category === c);
    const scores = rs.flatMap((r) => (r.score === null ? [] : [r.score]));
    perCategory[c] = {
      mean: mean(scores),
      turns: scores.length,
      unparsable: rs.length - scores.length,
    };
  }
  const scores = rows.flatMap((r) => (r.score === null ? [] : [r.score]));
  const file = join(dir, `${set.name}.json`);
  const result: GradingEvalResult = {
    kind: 'grading',
    name: set.name,
    label: input.label,
    modelDir: input.endpoint.modelDir,
    judge: judge.name,
    questions: questions.length,
    turns: scores.length,
    unparsable: rows.length - scores.length,
    mean: mean(scores),
    perCategory,
    cost: {
      answerRequests: gen.requests,
      answerTokens: gen.tokens,
      judge: { ...judge.usage },
      wallS: { answering: (tAnswered - t0) / 1000, judging: (Date.now() - tAnswered) / 1000 },
    },
    file,
  };
  await writeFileAtomic(join(dir, `${set.name}.jsonl`), toJsonl(rows));
  await writeJsonAtomic(file, result);
  return result;
}

// ---- the run's summary: LC refitted jointly over every evaluated policy ----------------------

// Per pairwise set: instruction difficulty from all labels' verdicts together, then each label's
// LC win rate with it (with one label, the single-model fit it already has).
const EMPTY_ROW = {
  winRate: null,
  standardError: null,
  lcWinRate: null,
  lcStandardError: null,
  lcVariant: null,
  firstPositionWins: null,
  flipRate: null,
  mean: null,
};

// A pairwise evaluation's verdicts as LC fit input; unparsable verdicts (no preference) left out.
export async function readAnnotations(file: string): Promise<Annotation[]> {
  const recs = await readJsonl<{
    index: number;
    preference: number | null;
    modelLength: number;
    referenceLength: number;
  }>(file);
  return recs.flatMap((x) =>
    x.preference === null
      ? []
      : [
          {
            instruction: x.index,
            preference: x.preference,
            modelLength: x.modelLength,
            referenceLength: x.referenceLength,
          },
        ],
  );
}

export async function summarizeJudgedEvals(
  input: SummarizeJudgedInput,
): Promise<JudgedSummaryRow[]> {
  const rows = await judgedSummary(input.results);
  await writeJsonAtomic(join(input.runDir, 'eval', 'summary.json'), rows);
  return rows;
}

export async function judgedSummary(results: JudgedEvalResult[]): Promise<JudgedSummaryRow[]> {
  const rows: JudgedSummaryRow[] = [];
  const judgeTokens = (r: JudgedEvalResult) =>
    r.cost.judge.promptTokens + r.cost.judge.completionTokens;
  for (const name of [...new Set(results.map((r) => r.name))]) {
    const group = results.filter((r) => r.name === name);
    const pairs = group.filter((r): r is PairwiseEvalResult => r.kind === 'pairwise');
    const anns = new Map<string, Annotation[]>();
    for (const r of pairs) anns.set(r.label, await readAnnotations(r.annotationsFile));
    const joint = anns.size >= 2 ? jointDifficulty(anns) : undefined;
    for (const r of group) {
      if (r.kind === 'grading') {
        rows.push({
          ...EMPTY_ROW,
          set: name,
          label: r.label,
          kind: 'grading',
          mean: r.mean,
          unparsable: r.unparsable,
          judgeTokens: judgeTokens(r),
        });
        continue;
      }
      const a = anns.get(r.label)!;
      const lc =
        joint && a.length >= LC_MIN_INSTRUCTIONS
          ? { ...lengthControlledWinRate(a, joint), note: LC_NOTE.difficulty }
          : r.lc;
      rows.push({
        set: name,
        label: r.label,
        kind: 'pairwise',
        winRate: r.winRate,
        standardError: r.standardError,
        lcWinRate: lc?.lcWinRate ?? null,
        lcStandardError: lc?.lcStandardError ?? null,
        lcVariant: lc?.note ?? null,
        firstPositionWins: r.orderBias.firstPositionWins,
        flipRate: r.orderBias.flipRate,
        mean: null,
        unparsable: r.unparsable,
        judgeTokens: judgeTokens(r),
      });
    }
  }
  return rows;
}
