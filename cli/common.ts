// What the subcommands share: argument parsing with usage errors, the Temporal connection,
// Web UI links, progress bars and the per-round table.
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { Client, Connection } from '@temporalio/client';
import { ConfigError, type RunConfig } from '../config/index.ts';
import { loadRunConfig } from '../activities/load-config.ts';
import type { RoundSummary, RunProgress } from '../contracts/workflows.ts';

// Exit codes of every subcommand.
export const EXIT = { ok: 0, failed: 1, usage: 2 } as const;

export class UsageError extends Error {}

type Options = NonNullable<ParseArgsConfig['options']>;

// Strict parsing: an unknown flag or a missing value is a usage error naming the flag.
export function parseFlags<O extends Options>(
  argv: string[],
  options: O,
  usage: string,
  positionals = 0,
) {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      options: { ...options, help: { type: 'boolean', short: 'h' } },
      allowPositionals: positionals > 0,
      strict: true,
    });
  } catch (e) {
    throw new UsageError(
      `${(e as Error).message.replace(/\. To specify a positional.*$/s, '')}\n\n${usage}`,
    );
  }
  if ((parsed.values as { help?: boolean }).help) throw new HelpRequested(usage);
  if (parsed.positionals.length > positionals)
    throw new UsageError(`unexpected argument "${parsed.positionals[positionals]}"\n\n${usage}`);
  return parsed;
}

// --help: thrown by parseFlags so that every command answers it the same way (guard prints it).
class HelpRequested extends Error {}

// Runs a subcommand body: usage and config errors print to stderr and exit 2.
export async function guard(body: () => Promise<number>): Promise<number> {
  try {
    return await body();
  } catch (e) {
    if (e instanceof HelpRequested) {
      process.stdout.write(`${e.message}\n`);
      return EXIT.ok;
    }
    if (e instanceof UsageError) {
      process.stderr.write(`opsr: ${e.message}\n`);
      return EXIT.usage;
    }
    if (e instanceof ConfigError) {
      process.stderr.write(`opsr: invalid config ${e.message}\n`);
      return EXIT.usage;
    }
    process.stderr.write(`opsr: ${(e as Error).message ?? String(e)}\n`);
    return EXIT.failed;
  }
}

// `opsr run` and `opsr ablation`: a config to start, an optional workflow id, and a connection.
export function parseStartFlags(argv: string[], usage: string) {
  const { values } = parseFlags(
    argv,
    {
      config: { type: 'string' },
      id: { type: 'string' },
      detach: { type: 'boolean' },
      address: { type: 'string' },
      namespace: { type: 'string' },
    },
    usage,
  );
  if (!values.config) throw new UsageError(`--config FILE is required\n\n${usage}`);
  return { ...values, config: values.config };
}

export const CONNECTION_FLAGS = {
  address: { type: 'string' },
  namespace: { type: 'string' },
  config: { type: 'string' },
} as const satisfies Options;

export const CONNECTION_HELP = `Connection: --address HOST:PORT and --namespace NS, else the \
config's temporal section (--config FILE),
else TEMPORAL_ADDRESS / TEMPORAL_NAMESPACE, else 127.0.0.1:7233 / default. TLS: temporal.tls or \
TEMPORAL_TLS=1;
API key: the env var named by temporal.apiKeyEnv, else TEMPORAL_API_KEY.`;

export interface TemporalTarget {
  address: string;
  namespace: string;
  tls: boolean;
  apiKeyEnv?: string;
}

// Flags win over the config, the config over the environment.
export function temporalTarget(
  flags: { address?: string; namespace?: string },
  config?: RunConfig['temporal'],
): TemporalTarget {
  const env = process.env;
  return {
    address: flags.address ?? config?.address ?? env.TEMPORAL_ADDRESS ?? '127.0.0.1:7233',
    namespace: flags.namespace ?? config?.namespace ?? env.TEMPORAL_NAMESPACE ?? 'default',
    tls: config?.tls ?? /^(1|true|yes)$/i.test(env.TEMPORAL_TLS ?? ''),
    apiKeyEnv: config?.apiKeyEnv ?? (env.TEMPORAL_API_KEY ? 'TEMPORAL_API_KEY' : undefined),
  };
}

// The temporal section of --config, when a command takes one only for the connection.
export async function temporalFromConfigFlag(
  file: string | undefined,
): Promise<RunConfig['temporal'] | undefined> {
  return file ? (await loadRunConfig(file)).temporal : undefined;
}

export async function connect(
  t: TemporalTarget,
): Promise<{ client: Client; close: () => Promise<void> }> {
  let apiKey: string | undefined;
  if (t.apiKeyEnv) {
    apiKey = process.env[t.apiKeyEnv];
    if (!apiKey)
      throw new Error(`temporal.apiKeyEnv: environment variable ${t.apiKeyEnv} is not set`);
  }
  let connection: Connection;
  try {
    connection = await Connection.connect({
      address: t.address,
      tls: t.tls || !!apiKey,
      apiKey,
      connectTimeout: 5000,
    });
  } catch (e) {
    throw new Error(
      `cannot reach the Temporal server at ${t.address} (${(e as Error).message}); ` +
        `start one with \`opsr dev\` or pass --address`,
    );
  }
  return {
    client: new Client({ connection, namespace: t.namespace }),
    close: () => connection.close(),
  };
}

// Web UI: OPSR_UI_URL, else the dev server's convention (frontend port + 1000).
export function uiBase(address: string): string {
  if (process.env.OPSR_UI_URL) return process.env.OPSR_UI_URL.replace(/\/+$/, '');
  const m = /^(.*):(\d+)$/.exec(address);
  return m ? `http://${m[1]}:${Number(m[2]) + 1000}` : `http://${address}`;
}

export function workflowLink(base: string, namespace: string, workflowId: string): string {
  const ns = encodeURIComponent(namespace);
  return `${base}/namespaces/${ns}/workflows/${encodeURIComponent(workflowId)}`;
}

export function timestampId(prefix: string, now = new Date()): string {
  return `${prefix}-${now
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d+Z$/, 'Z')}`;
}

// ---- rendering --------------------------------------------------------------------------------

const color = (code: number, s: string, on: boolean) => (on ? `\x1b[${code}m${s}\x1b[0m` : s);

function bar(done: number, total: number, width = 30): string {
  const f = total > 0 ? Math.min(1, Math.max(0, done / total)) : 0;
  const full = Math.round(f * width);
  return (
    `[${'#'.repeat(full)}${'.'.repeat(width - full)}] ` +
    `${String(Math.round(f * 100)).padStart(3)}%`
  );
}

// Three lines: the run's rounds, this round's sampling and training.
export function renderProgress(p: RunProgress, ansi = false): string {
  const doneRounds = p.completed.length;
  const head =
    `${color(1, p.runId, ansi)}  phase ${color(36, p.phase, ansi)}  round ${p.round}/${p.rounds}` +
    (p.rejectedScore === null ? '' : `  rejected score ${p.rejectedScore}`) +
    (p.stopRequested ? '  (stop requested after this round)' : '');
  return [
    head,
    `  rounds    ${bar(doneRounds, p.rounds)}  ${doneRounds}/${p.rounds}`,
    `  sampling  ${bar(p.sampled.done, p.sampled.total)}  ` +
      (p.sampled.total > 0 ? `${p.sampled.done}/${p.sampled.total} prompts` : 'not started'),
    `  training  ${bar(p.train.step, p.train.totalSteps)}  ` +
      (p.train.totalSteps > 0 ? `step ${p.train.step}/${p.train.totalSteps}` : 'not started'),
  ].join('\n');
}

// Where a log (not a terminal) gets a new frame: a phase or round change, a stop request, and
// each tenth of a round's sampling and training.
export function progressKey(p: RunProgress): string {
  const tenth = (done: number, total: number) => (total > 0 ? Math.floor((10 * done) / total) : -1);
  return (
    `${p.phase}/${p.round}/${p.completed.length}/${p.stopRequested}/` +
    `${tenth(p.sampled.done, p.sampled.total)}/${tenth(p.train.step, p.train.totalSteps)}`
  );
}

const fmt = (v: number | null | undefined, digits = 4) =>
  v === null || v === undefined || !Number.isFinite(v)
    ? '-'
    : Math.abs(v) >= 1e4 || (v !== 0 && Math.abs(v) < 1e-3)
      ? v.toExponential(2)
      : v.toFixed(digits);

export function table(header: string[], rows: string[][]): string {
  const w = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (r: string[]) =>
    r.map((c, i) => (i === 0 ? c.padEnd(w[i]) : c.padStart(w[i]))).join('  ');
  return [line(header), w.map((n) => '-'.repeat(n)).join('  '), ...rows.map(line)].join('\n');
}

// The per-round table: pairs kept/filtered, rewards (paper Fig. 4), policy reward, training
// metrics.
export function roundTable(rounds: RoundSummary[]): string {
  if (rounds.length === 0) return '(no round finished yet)';
  return table(
    [
      'round',
      'rejected',
      'kept',
      'filtered',
      'chosen_rw',
      'rejected_rw',
      'policy_rw',
      'loss',
      'acc',
      'margin',
    ],
    rounds.map((r) => [
      String(r.round),
      String(r.rejectedScore),
      String(r.pairsKept),
      String(r.pairsFiltered),
      fmt(r.chosenReward),
      fmt(r.rejectedReward),
      fmt(r.policyReward),
      fmt(r.train.loss),
      fmt(r.train['rewards/accuracies'], 3),
      fmt(r.train['rewards/margins']),
    ]),
  );
}
