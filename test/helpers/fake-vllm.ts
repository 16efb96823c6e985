// A stand-in for the `vllm` executable in tests of the managed-vllm lifecycle: it takes vLLM's
// `serve` arguments and serves the model with opsr's embedded server (the real HTTP server and
// engine, launched the way opsr launches vLLM). It appends its argv to $FAKE_VLLM_LOG.
import { appendFileSync } from 'node:fs';
import { startServer } from '../../server/index.ts';

const argv = process.argv.slice(2);
if (process.env.FAKE_VLLM_LOG) appendFileSync(process.env.FAKE_VLLM_LOG, JSON.stringify({ pid: process.pid, argv }) + '\n');
const flag = (name: string) => {
  const i = argv.indexOf(name);
  if (i < 0 || i + 1 >= argv.length) throw new Error(`fake vllm: missing ${name}`);
  return argv[i + 1];
};
if (argv[0] !== 'serve') throw new Error(`fake vllm: expected "serve", got ${argv[0]}`);
const server = await startServer({
  modelDir: argv[1], servedModelName: flag('--served-model-name'), host: flag('--host'), port: Number(flag('--port')), threads: 1,
});
const stop = () => void server.close().then(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
