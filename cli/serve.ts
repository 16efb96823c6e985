// `opsr serve --model DIR`: the embedded OpenAI-compatible server in the foreground until
// SIGINT/SIGTERM.
import { parseArgs } from 'node:util';
import { startServer, type ServerOptions } from '../server/index.ts';

const USAGE = `usage: opsr serve --model DIR [--host 127.0.0.1] [--port 8000] [--served-model-name \
NAME]
                  [--threads N] [--max-batch N] [--dtype fp32|bf16] [--engine PATH]`;

function positiveInt(name: string, v: string | undefined, min: number): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min)
    throw new Error(`--${name} must be an integer >= ${min}; got ${JSON.stringify(v)}`);
  return n;
}

export async function main(argv: string[]): Promise<number> {
  let opts: ServerOptions;
  try {
    const { values } = parseArgs({
      args: argv,
      options: {
        model: { type: 'string' },
        host: { type: 'string' },
        port: { type: 'string' },
        'served-model-name': { type: 'string' },
        threads: { type: 'string' },
        'max-batch': { type: 'string' },
        dtype: { type: 'string' },
        engine: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
    });
    if (values.help) {
      console.log(USAGE);
      return 0;
    }
    if (!values.model) throw new Error('--model DIR is required');
    const dtype = values.dtype;
    if (dtype !== undefined && dtype !== 'fp32' && dtype !== 'bf16') {
      throw new Error(`--dtype must be fp32 or bf16; got ${JSON.stringify(dtype)}`);
    }
    opts = {
      modelDir: values.model,
      host: values.host ?? '127.0.0.1',
      port: positiveInt('port', values.port, 0) ?? 8000,
      servedModelName: values['served-model-name'],
      threads: positiveInt('threads', values.threads, 1),
      maxBatch: positiveInt('max-batch', values['max-batch'], 1),
      dtype,
      enginePath: values.engine,
    };
  } catch (err) {
    console.error(`opsr serve: ${(err as Error).message}\n${USAGE}`);
    return 2;
  }
  let server;
  try {
    server = await startServer(opts);
  } catch (err) {
    console.error(`opsr serve: ${(err as Error).message}`);
    return 1;
  }
  console.error(
    `opsr serve: ${opts.servedModelName ?? opts.modelDir} at ${server.url} ` +
      `(OpenAI-compatible; GET /health, /v1/models)`,
  );
  await new Promise<void>((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
  });
  await server.close();
  return 0;
}
