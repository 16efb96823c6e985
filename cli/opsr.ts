// The `opsr` command: dispatches to one module per subcommand, each exporting
// main(argv): Promise<number>. Modules load lazily, so one that fails to load breaks only itself.
type Main = (argv: string[]) => Promise<number>;

// Commands other engineers own, loaded by URL so this file typechecks while they are written.
const other = (rel: string) =>
  import(new URL(rel, import.meta.url).href) as Promise<{ main: Main }>;

const COMMANDS: Record<string, { summary: string; load: () => Promise<{ main: Main }> }> = {
  dev: {
    summary: 'start a Temporal dev server (Web UI, SQLite under the storage root) and a worker',
    load: () => import('./dev.ts'),
  },
  run: {
    summary: 'start a run from a config file and follow its progress',
    load: () => import('./run.ts'),
  },
  status: {
    summary: 'progress and per-round table of a running or finished run',
    load: () => import('./status.ts'),
  },
  resume: {
    summary: 'start a failed or terminated run again; finished work is reused',
    load: () => import('./resume.ts'),
  },
  validate: {
    summary: 'check a config file and print it resolved, or every error',
    load: () => import('./validate.ts'),
  },
  ablation: {
    summary: 'run an ablation study (arms side by side)',
    load: () => import('./ablation.ts'),
  },
  schedule: {
    summary: 'create, list or delete Temporal Schedules (e.g. a nightly ablation)',
    load: () => import('./schedule.ts'),
  },
  serve: {
    summary: 'serve a model directory with the embedded OpenAI-compatible server',
    load: () => other('./serve.ts'),
  },
  models: {
    summary: 'list or fetch real pretrained models (e.g. smollm2-135m-instruct)',
    load: () => import('./models.ts'),
  },
  demo: {
    summary: 'the end-to-end demo on a tiny model (three rounds, in minutes)',
    load: () => other('./demo.ts'),
  },
  eval: {
    summary: 'judge-based evaluation of a model: win rate, LC win rate, grades (config evals)',
    load: () => import('./eval.ts'),
  },
  report: {
    summary: "rebuild a run's or study's report.md / report.html / figures",
    load: () => import('./report.ts'),
  },
};

const HELP = `opsr: only-prompting self-rewarding online preference optimization

Usage: opsr <command> [options]    (opsr <command> --help for its options)

Commands:
${Object.entries(COMMANDS)
  .map(([name, c]) => `  ${name.padEnd(10)}${c.summary}`)
  .join('\n')}
`;

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (cmd === undefined || cmd === '--help' || cmd === '-h' || cmd === 'help') {
    process.stdout.write(HELP);
    return cmd === undefined ? 2 : 0;
  }
  const entry = Object.hasOwn(COMMANDS, cmd) ? COMMANDS[cmd] : undefined;
  if (!entry) {
    process.stderr.write(
      `opsr: unknown command "${cmd}"; allowed: ${Object.keys(COMMANDS).join(', ')}\n\n${HELP}`,
    );
    return 2;
  }
  let mod: { main: Main };
  try {
    mod = await entry.load();
  } catch (e) {
    process.stderr.write(`opsr ${cmd}: cannot load the command (${(e as Error).message})\n`);
    return 1;
  }
  return mod.main(rest);
}

process.exit(await main(process.argv.slice(2)));
