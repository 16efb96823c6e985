// opsr validate --config FILE: the resolved config on stdout, or every problem on stderr (exit 2).
import { EXIT, UsageError, guard, parseFlags } from './common.ts';
import { readJsonFile } from '../config/index.ts';
import { loadAblationConfig, loadRunConfig } from '../activities/load-config.ts';

const USAGE = `Usage: opsr validate --config FILE [--ablation]

Prints the resolved config (defaults filled in, paths absolute, per-round schedules explicit) as
JSON, or every problem as "<field path>: <what is wrong> (got <value>; allowed <what>)" and exits 2.
A file with "arms" (or --ablation) is read as an ablation study ({base, arms}).`;

export async function main(argv: string[]): Promise<number> {
  return guard(async () => {
    const { values } = parseFlags(
      argv,
      { config: { type: 'string' }, ablation: { type: 'boolean' } },
      USAGE,
    );
    if (!values.config) throw new UsageError(`--config FILE is required\n\n${USAGE}`);
    const raw = await readJsonFile(values.config);
    const asAblation = values.ablation || (!!raw && typeof raw === 'object' && 'arms' in raw);
    const resolved = asAblation
      ? (await loadAblationConfig(values.config)).config
      : await loadRunConfig(values.config);
    process.stdout.write(`${JSON.stringify(resolved, null, 2)}\n`);
    process.stderr.write(`opsr: ${values.config}: valid${asAblation ? ' ablation study' : ''}\n`);
    return EXIT.ok;
  });
}
