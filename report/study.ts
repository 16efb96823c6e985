// An ablation study's report under <storage>/studies/<studyId>/ (report.json / .md / .html and
// figures/: arms side by side with error bars, the paired differences with their intervals, and
// the nightly trend), and its line in <storage>/ablation-history.jsonl.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic } from '../lib/atomic.ts';
import type {
  AblationResult,
  Interval,
  Stats,
  StudyMetric,
  StudySummary,
} from '../contracts/workflows.ts';
import { fmt, writeReportFiles, type Block, type ReportDoc, type Table } from './document.ts';
import { errorBarChart } from './figures.ts';
import { summarizeStudy } from './summary.ts';

export const historyFile = (storage: string) => join(storage, 'ablation-history.jsonl');
export const studyDir = (storage: string, studyId: string) => join(storage, 'studies', studyId);

// One study in the history: the last round's policy reward per arm and each arm's paired
// difference, and its win rates against the base policy when the study evaluated that round.
interface HistoryEntry {
  studyId: string;
  finishedAt: string;
  seeds: (number | null)[];
  round: number;
  policy: Record<string, Stats>;
  diff: Record<string, Interval & { versus: string }>;
  judged?: {
    set: string;
    lcVariant: string | null;
    winRate: Record<string, Stats>;
    lcWinRate: Record<string, Stats>;
  };
}

const METRIC_TITLES: Record<StudyMetric, string> = {
  policyReward: 'policy reward (held-out, unprefixed; round 0 = base)',
  chosenReward: 'chosen reward',
  rejectedReward: 'rejected reward',
  pairsKept: 'pairs kept',
  pairsFiltered: 'pairs filtered',
  winRate: 'win rate vs the base policy',
  lcWinRate: 'LC win rate vs the base policy',
  tokensPerKeptPair: 'tokens per kept pair (sampling + judging)',
};

// The metrics a study reports, in order, and those whose paired differences it shows.
export const STUDY_TABLES = [
  'policyReward',
  'winRate',
  'lcWinRate',
  'tokensPerKeptPair',
  'chosenReward',
  'rejectedReward',
  'pairsKept',
  'pairsFiltered',
] as const satisfies StudyMetric[];
export const DIFF_METRICS: StudyMetric[] = ['policyReward', 'winRate', 'lcWinRate'];

// Win rates name their evaluation set, LC win rates also the model that controlled for length.
export function metricTitle(s: StudySummary, m: StudyMetric): string {
  const t = METRIC_TITLES[m];
  if (m === 'winRate' && s.judged)
    return `${t} (set ${s.judged.set}; SE: the runs' mean standard error)`;
  if (m === 'lcWinRate' && s.judged) return `${t} (set ${s.judged.set}; ${s.judged.lcVariant})`;
  return t;
}

const pm = (s: Stats, digits = 3) =>
  s.mean === null
    ? '-'
    : s.sd === null
      ? fmt(s.mean, digits)
      : `${fmt(s.mean, digits)} ± ${fmt(s.sd, digits)}`;
const ci = (d: Interval) =>
  d.mean === null
    ? '-'
    : d.lo === null
      ? fmt(d.mean, 3)
      : `${fmt(d.mean, 3)} [${fmt(d.lo, 3)}, ${fmt(d.hi, 3)}]`;

// Table 2's shape: arms as rows, rounds as columns, mean ± sd over seeds (win rates: and their
// mean standard error). Self-judge arms have no rejected scores.
export function metricTable(s: StudySummary, m: StudyMetric): Table | null {
  const rounds = s.rounds.filter((r) => s.cells.some((c) => c.round === r && c.stats[m].n > 0));
  if (!rounds.length) return null;
  const digits = m === 'pairsKept' || m === 'pairsFiltered' || m === 'tokensPerKeptPair' ? 1 : 3;
  const label = (arm: string) => {
    const scores = rounds
      .filter((r) => r > 0)
      .map((r) => s.cells.find((c) => c.arm === arm && c.round === r)?.rejectedScores.join('/'));
    return scores.length > 0 && scores.every((x) => x === '')
      ? `${arm} [self-judge]`
      : `${arm} [${scores.map((x) => x ?? '-').join(',')}]`;
  };
  return {
    head: ['arm', ...rounds.map((r) => (r === 0 ? 'base' : `round ${r}`))],
    rows: s.arms.map((arm) => [
      label(arm),
      ...rounds.map((r) => {
        const c = s.cells.find((x) => x.arm === arm && x.round === r);
        if (!c) return '-';
        const se = m === 'winRate' || m === 'lcWinRate' ? c.standardError?.[m] : null;
        const v = pm(c.stats[m], digits);
        return se === null || se === undefined || v === '-' ? v : `${v} (SE ${fmt(se, 3)})`;
      }),
    ]),
  };
}

export function diffTable(s: StudySummary, metrics: StudyMetric[]): Table | null {
  const rows = s.arms.slice(1).flatMap((arm) =>
    metrics.map((m) => {
      const ds = s.diffs.filter((d) => d.arm === arm && d.metric === m);
      return [
        `${arm} − ${s.arms[0]}: ${m}`,
        ...s.rounds
          .filter((r) => r > 0)
          .map((r) => {
            const d = ds.find((x) => x.round === r);
            return d ? ci(d.diff) : '-';
          }),
      ];
    }),
  );
  return rows.length
    ? {
        head: [
          'paired difference (95% CI)',
          ...s.rounds.filter((r) => r > 0).map((r) => `round ${r}`),
        ],
        rows,
      }
    : null;
}

export function historyEntry(
  result: AblationResult,
  summary: StudySummary,
  finishedAt: string,
): HistoryEntry {
  const round = Math.max(...summary.rounds);
  const policy: HistoryEntry['policy'] = {};
  for (const c of summary.cells) if (c.round === round) policy[c.arm] = c.stats.policyReward;
  const diff: HistoryEntry['diff'] = {};
  for (const d of summary.diffs)
    if (d.round === round && d.metric === 'policyReward')
      diff[d.arm] = { ...d.diff, versus: d.versus };
  const perArm = (m: StudyMetric) =>
    Object.fromEntries(
      summary.cells
        .filter((c) => c.round === round && c.stats[m].n > 0)
        .map((c) => [c.arm, c.stats[m]]),
    );
  const winRate = perArm('winRate');
  const judged =
    summary.judged && Object.keys(winRate).length
      ? { judged: { ...summary.judged, winRate, lcWinRate: perArm('lcWinRate') } }
      : {};
  return {
    studyId: result.studyId,
    finishedAt,
    seeds: summary.seeds,
    round,
    policy,
    diff,
    ...judged,
  };
}

export async function readHistory(storage: string): Promise<HistoryEntry[]> {
  const text = await readFile(historyFile(storage), 'utf8').catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT') return '';
    throw e;
  });
  return text
    .split('\n')
    .map((l, i) => [l, i] as const)
    .filter(([l]) => l.trim() !== '')
    .map(([l, i]) => {
      try {
        return JSON.parse(l) as HistoryEntry;
      } catch (e) {
        throw new Error(
          `${historyFile(storage)}:${i + 1}: not valid JSON (${(e as Error).message})`,
        );
      }
    });
}

// A study re-run with the same id replaces its line; otherwise lines stay in finishing order.
export async function appendHistory(storage: string, entry: HistoryEntry): Promise<string> {
  const file = historyFile(storage);
  const kept = (await readHistory(storage)).filter((e) => e.studyId !== entry.studyId);
  await writeFileAtomic(file, [...kept, entry].map((e) => `${JSON.stringify(e)}\n`).join(''));
  return file;
}

// The trend over studies with the same arms: one row per study, oldest first; win rate columns
// for the arms some study evaluated.
export function historyTable(entries: HistoryEntry[]): Table {
  const arms = [...new Set(entries.flatMap((e) => Object.keys(e.policy)))];
  const diffArms = [...new Set(entries.flatMap((e) => Object.keys(e.diff)))];
  const judgedArms = (m: 'winRate' | 'lcWinRate') => [
    ...new Set(entries.flatMap((e) => Object.keys(e.judged?.[m] ?? {}))),
  ];
  const rates = [
    ...judgedArms('winRate').map((a) => ({ a, m: 'winRate' as const, title: 'win rate' })),
    ...judgedArms('lcWinRate').map((a) => ({ a, m: 'lcWinRate' as const, title: 'LC win rate' })),
  ];
  return {
    head: [
      'study',
      'finished',
      'seeds',
      'round',
      ...arms.map((a) => `${a} policy reward`),
      ...diffArms.map((a) => `${a} − ${entries.find((e) => e.diff[a])!.diff[a].versus} (95% CI)`),
      ...rates.map((r) => `${r.a} ${r.title}`),
    ],
    align: [
      'l',
      'l',
      'r',
      'r',
      ...arms.map(() => 'r' as const),
      ...diffArms.map(() => 'r' as const),
      ...rates.map(() => 'r' as const),
    ],
    rows: entries.map((e) => [
      e.studyId,
      e.finishedAt.slice(0, 16).replace('T', ' '),
      String(e.seeds.length),
      String(e.round),
      ...arms.map((a) => (e.policy[a] ? pm(e.policy[a]) : '-')),
      ...diffArms.map((a) => (e.diff[a] ? ci(e.diff[a]) : '-')),
      ...rates.map((r) => {
        const x = e.judged?.[r.m][r.a];
        return x ? pm(x) : '-';
      }),
    ]),
  };
}

const band = (s: Stats | Interval, spread: 'sd' | 'ci') => {
  const m = s.mean!;
  if (spread === 'ci') {
    const i = s as Interval;
    return { mean: m, lo: i.lo ?? m, hi: i.hi ?? m };
  }
  return { mean: m, lo: m - (s.sd ?? 0), hi: m + (s.sd ?? 0) };
};

function studyDoc(
  result: AblationResult,
  summary: StudySummary,
  history: HistoryEntry[],
): ReportDoc {
  const s = summary;
  const reused = result.arms.filter((a) => a.reused).length;
  const blocks: Block[] = [
    {
      kind: 'text',
      text:
        `Arms: ${s.arms.map((a) => `**${a}**`).join(' vs ')}; seeds: ` +
        `${s.seeds.map((x) => x ?? "the config's").join(', ')}` +
        (` (${result.arms.length} ` +
          `runs${reused ? `, ${reused} reused from an earlier attempt` : ''}). Cells are ` +
          `mean ± standard deviation over seeds;`) +
        ` differences are paired by seed (same init and data), with a 95% Student-t interval.`,
    },
  ];
  for (const m of STUDY_TABLES) {
    const t = metricTable(s, m);
    if (t) blocks.push({ kind: 'heading', text: metricTitle(s, m) }, { kind: 'table', table: t });
  }
  const diffs = diffTable(s, DIFF_METRICS);
  if (diffs)
    blocks.push({ kind: 'heading', text: 'Paired differences' }, { kind: 'table', table: diffs });

  const policy = s.cells
    .filter((c) => c.stats.policyReward.mean !== null)
    .map((c) => ({ x: c.round, series: c.arm, ...band(c.stats.policyReward, 'sd') }));
  if (policy.length) {
    blocks.push({
      kind: 'figure',
      figure: {
        name: 'policy-reward',
        title: 'Policy reward per round, mean ± sd over seeds (0 = base)',
        spec: errorBarChart({
          title: 'Policy reward by arm',
          x: 'round',
          y: 'mean reward',
          seriesTitle: 'arm',
          values: policy,
        }),
      },
    });
  }
  const pairs = s.cells.flatMap((c) =>
    (['chosenReward', 'rejectedReward'] as const)
      .filter((m) => c.stats[m].mean !== null)
      .map((m) => ({
        x: c.round,
        series: `${c.arm} ${m === 'chosenReward' ? 'chosen' : 'rejected'}`,
        ...band(c.stats[m], 'sd'),
      })),
  );
  if (pairs.length) {
    blocks.push({
      kind: 'figure',
      figure: {
        name: 'pair-rewards',
        title: 'Chosen and rejected reward per round, mean ± sd over seeds (Fig. 4)',
        spec: errorBarChart({
          title: 'Chosen and rejected reward by arm',
          x: 'round',
          y: 'mean reward',
          values: pairs,
        }),
      },
    });
  }
  const d = s.diffs
    .filter((x) => x.metric === 'policyReward' && x.diff.mean !== null)
    .map((x) => ({ x: x.round, series: `${x.arm} − ${x.versus}`, ...band(x.diff, 'ci') }));
  if (d.length) {
    blocks.push({
      kind: 'figure',
      figure: {
        name: 'policy-difference',
        title: 'Paired difference in policy reward with its 95% interval',
        spec: errorBarChart({
          title: 'Policy reward difference',
          x: 'round',
          y: 'difference',
          values: d,
        }),
      },
    });
  }
  if (history.length) {
    blocks.push(
      { kind: 'heading', text: 'History (studies in this storage root, oldest first)' },
      { kind: 'table', table: historyTable(history) },
    );
    const trend = history.flatMap((e, i) =>
      Object.entries(e.diff)
        .filter(([, x]) => x.mean !== null)
        .map(([arm, x]) => ({ x: i + 1, series: `${arm} − ${x.versus}`, ...band(x, 'ci') })),
    );
    if (trend.length) {
      blocks.push({
        kind: 'figure',
        figure: {
          name: 'history',
          title: 'Last-round policy reward difference per study, with 95% intervals',
          spec: errorBarChart({
            title: 'Trend over studies',
            x: 'study (oldest first)',
            y: 'difference',
            values: trend,
          }),
        },
      });
    }
  }
  return { title: `opsr ablation ${result.studyId}`, blocks };
}

// Writes the study's report and its history line; `opsr report` rebuilds from report.json alone.
export async function writeStudyReportFiles(
  storage: string,
  result: AblationResult,
  finishedAt: string | null,
) {
  const summary =
    result.summary ??
    summarizeStudy(
      result.arms.map((a) => ({ name: a.name, seed: a.seed ?? null, result: a.result })),
    );
  const history =
    finishedAt === null
      ? historyFile(storage)
      : await appendHistory(storage, historyEntry(result, summary, finishedAt));
  const dir = studyDir(storage, result.studyId);
  const entries = await readHistory(storage);
  const arms = summary.arms.join('\0');
  const sameArms = entries.filter((e) => Object.keys(e.policy).join('\0') === arms);
  const json = join(dir, 'report.json');
  await writeFileAtomic(json, JSON.stringify(result, null, 2) + '\n');
  const written = await writeReportFiles(dir, studyDoc(result, summary, sameArms));
  return { json, markdown: written.markdown, html: written.html, history };
}
