// A stand-in for the `vllm` executable in tests of the managed-vllm lifecycle: it takes vLLM's
// `serve` arguments and serves the model with opsr's embedded server (the real HTTP server and
// engine, launched the way opsr launches vLLM). It appends its argv to $FAKE_VLLM_LOG.
// With $FAKE_VLLM_BROKEN set it is alive but broken, as the CPU build after its engine died:
// /health passes, the first $FAKE_VLLM_GOOD (default 0) completions answer, then every request
// gets HTTP 500 with $FAKE_VLLM_BROKEN as the message.
import { appendFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { startServer } from '../../server/index.ts';

const argv = process.argv.slice(2);
if (process.env.FAKE_VLLM_LOG)
  appendFileSync(process.env.FAKE_VLLM_LOG, JSON.stringify({ pid: process.pid, argv }) + '\n');
const flag = (name: string) => {
  const i = argv.indexOf(name);
  if (i < 0 || i + 1 >= argv.length) throw new Error(`fake vllm: missing ${name}`);
  return argv[i + 1];
};
if (argv[0] !== 'serve') throw new Error(`fake vllm: expected "serve", got ${argv[0]}`);
const broken = process.env.FAKE_VLLM_BROKEN;
let good = Number(process.env.FAKE_VLLM_GOOD ?? 0);
const server = broken
  ? await serveBroken(broken)
  : await startServer({
      modelDir: argv[1],
      servedModelName: flag('--served-model-name'),
      host: flag('--host'),
      port: Number(flag('--port')),
      threads: 1,
    });
const stop = () => void server.close().then(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);

async function serveBroken(message: string): Promise<{ close(): Promise<void> }> {
  const srv = createServer((req, res) => {
    req.resume();
    res.setHeader('content-type', 'application/json');
    if (req.url === '/health') return res.end();
    if (req.url === '/v1/completions' && good-- > 0) {
      const choices = [{ text: 'ok', finish_reason: 'length' }];
      return res.end(JSON.stringify({ choices, usage: { completion_tokens: 1 } }));
    }
    res.statusCode = 500;
    res.end(JSON.stringify({ error: { message, type: 'InternalServerError', code: 500 } }));
  });
  await new Promise<void>((r) => srv.listen(Number(flag('--port')), flag('--host'), r));
  return { close: () => new Promise((r) => srv.close(() => r())) };
}
