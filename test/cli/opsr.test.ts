// The `opsr` command as a user runs it (a child process): help, validate, usage errors.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { opsr } from '../helpers/opsr-cli.ts';

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'opsr-cli-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('opsr', () => {
  test('--help lists every command', async () => {
    const r = await opsr(['--help']);
    assert.equal(r.code, 0, r.stderr);
    for (const c of [
      'dev',
      'run',
      'status',
      'resume',
      'validate',
      'ablation',
      'schedule',
      'serve',
      'demo',
    ]) {
      assert.match(r.stdout, new RegExp(`^  ${c} +\\S`, 'm'), `${c} missing from --help`);
    }
  });

  test('an unknown command exits 2 and names the allowed ones', async () => {
    const r = await opsr(['trian']);
    assert.equal(r.code, 2);
    assert.match(
      r.stderr,
      /unknown command "trian"; allowed: dev, run, status, resume, validate, ablation, schedule/,
    );
  });

  test('validate: a good config prints the resolved JSON and exits 0', async () => {
    await writeFile(
      join(dir, 'run.json'),
      JSON.stringify({
        model: 'models/m',
        prompts: { file: 'p.jsonl' },
        rounds: 2,
        prefixes: { rejectedScores: 'fixed' },
      }),
    );
    const r = await opsr(['validate', '--config', join(dir, 'run.json')], { cwd: dir });
    assert.equal(r.code, 0, r.stderr);
    const c = JSON.parse(r.stdout);
    assert.equal(c.model, join(dir, 'models/m'));
    assert.equal(c.storage, join(dir, '.opsr'));
    assert.deepEqual(c.prefixes.rejectedScores, [3, 3]);
    assert.match(r.stderr, /run\.json: valid/);
  });

  test('validate: the ablation preset resolves to its arms', async () => {
    const r = await opsr([
      'validate',
      '--config',
      'config/presets/ablation-fixed-vs-progressive.json',
    ]);
    assert.equal(r.code, 0, r.stderr);
    const a = JSON.parse(r.stdout);
    assert.deepEqual(
      a.arms.map((x: { name: string; config: { prefixes: { rejectedScores: number[] } } }) => [
        x.name,
        x.config.prefixes.rejectedScores,
      ]),
      [
        ['fixed', [3, 3, 3]],
        ['progressive', [3, 5, 7]],
      ],
    );
  });

  test('validate: every problem on stderr, nothing on stdout, exit 2', async () => {
    const file = join(dir, 'bad.json');
    await writeFile(
      file,
      JSON.stringify({
        model: 'm',
        prompts: { file: 'p' },
        rounds: 3,
        prefixes: { rejectedScores: [3, 5] },
        training: { loss: 'kto' },
        sampling: { lifecycle: 'external' },
      }),
    );
    const r = await opsr(['validate', '--config', file]);
    assert.equal(r.code, 2);
    assert.equal(r.stdout, '');
    assert.match(r.stderr, /bad\.json: \d+ problems/);
    assert.match(
      r.stderr,
      new RegExp(
        /training\.loss: is not an allowed value \(got "kto"; /.source +
          /allowed one of "simpo", "dpo", "ipo", "hinge"\)/.source,
      ),
    );
    assert.match(
      r.stderr,
      /sampling\.baseURL: is required with lifecycle "external" \(got nothing; allowed/,
    );
  });

  test('validate: a JSON syntax error names file, line and column', async () => {
    const file = join(dir, 'syntax.json');
    await writeFile(file, '{\n  "model": "m"\n  "rounds": 3\n}\n');
    const r = await opsr(['validate', '--config', file]);
    assert.equal(r.code, 2);
    assert.ok(r.stderr.includes(`${file}: 1 problem`), r.stderr);
    assert.match(r.stderr, /line 3, column 3: invalid JSON/);
  });

  test('usage errors exit 2 before any connection', async () => {
    const cases: [string[], RegExp][] = [
      [['validate'], /--config FILE is required/],
      [['validate', '--cfg', 'x'], /Unknown option '--cfg'/],
      [['run'], /--config FILE is required/],
      [
        ['run', '--config', join(dir, 'missing.json')],
        /missing\.json: 1 problem\n {2}cannot read the file \(ENOENT\)/,
      ],
      [['status'], /RUN \(a workflow id\) is required/],
      [['resume', 'a', 'b'], /unexpected argument "b"/],
      [
        ['schedule', 'remove', 'x'],
        /unknown schedule command "remove"; allowed: create, list, delete, trigger/,
      ],
      [
        [
          'schedule',
          'create',
          '--id',
          'n',
          '--config',
          'config/presets/mistral-7b-base-paper.json',
          '--overlap',
          'sometimes',
        ],
        /--overlap "sometimes" is not allowed; allowed: skip, buffer_one/,
      ],
      [
        [
          'schedule',
          'create',
          '--id',
          'n',
          '--config',
          'config/presets/mistral-7b-base-paper.json',
          '--cron',
          '2am',
        ],
        /--cron "2am" is not a cron spec/,
      ],
      [
        ['schedule', 'create', '--id', 'n'],
        /give exactly one of --config \(a run\) and --ablation \(a study\)/,
      ],
      [['dev', '--port', 'x'], /--port "x" is not a port; allowed 1-65535/],
    ];
    for (const [args, want] of cases) {
      const r = await opsr(args);
      assert.equal(r.code, 2, `${args.join(' ')}: exit ${r.code}\n${r.stderr}`);
      assert.match(r.stderr, want, args.join(' '));
    }
  });

  test('a server that is not there: exit 1 with the address and a hint', async () => {
    const r = await opsr(['status', 'some-run', '--address', '127.0.0.1:1']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /cannot reach the Temporal server at 127\.0\.0\.1:1 .*opsr dev/s);
  });
});
