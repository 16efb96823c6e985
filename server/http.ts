// The HTTP side of the server: JSON bodies in, JSON and server-sent events out, every failure
// answered with protocol.ts's error shape, and the routing table's dispatch.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { ApiError, bad, MAX_JSON_DEPTH } from './protocol.ts';

const MAX_BODY = 32 << 20;

type Handler = (req: IncomingMessage, res: ServerResponse, signal: AbortSignal) => unknown;
/** path -> method -> handler */
export type Routes = Record<string, Record<string, Handler>>;

/** A request listener for the routes; it answers every failure itself and never rejects. */
export function dispatch(routes: Routes, open: Set<ServerResponse>, log: (l: string) => void) {
  return (req: IncomingMessage, res: ServerResponse) =>
    void (async () => {
      open.add(res);
      const abort = new AbortController();
      res.on('close', () => {
        open.delete(res);
        if (!res.writableFinished) abort.abort();
      });
      try {
        const path = (req.url ?? '/').split('?')[0];
        const route = routes[path];
        if (!route) throw new ApiError(404, `no route ${req.method} ${path}; see server/README.md`);
        const handler = route[req.method ?? ''];
        if (!handler) throw new ApiError(405, `use ${Object.keys(route).join(' or ')} ${path}`);
        await handler(req, res, abort.signal);
      } catch (err) {
        if (abort.signal.aborted) return; // the client is gone
        const e = err instanceof ApiError ? err : internalError(err, log);
        if (!res.headersSent) sendJson(res, e.status, e.body());
        else if (!res.writableEnded)
          // a stream ends with the error
          res.end(`data: ${JSON.stringify(e.body())}\n\ndata: [DONE]\n\n`);
      }
    })();
}

/** A POST handler: the JSON body, checked for size and depth, goes to the serving method. */
export const withJsonBody =
  (
    serve: (body: Record<string, unknown>, res: ServerResponse, signal: AbortSignal) => unknown,
  ): Handler =>
  async (req, res, signal) =>
    serve(await readJsonBody(req), res, signal);

// An unexpected failure: its detail (paths, engine internals) goes to the log, not the client.
function internalError(err: unknown, log: (l: string) => void): ApiError {
  log(`opsr serve: internal error: ${(err as Error)?.stack ?? String(err)}`);
  return new ApiError(
    500,
    'internal error; see the server log',
    null,
    'internal_error',
    'server_error',
  );
}

export function sendJson(res: ServerResponse, status: number, value: unknown): void {
  const text = JSON.stringify(value);
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
  });
  res.end(text);
}

// Server-sent events as the OpenAI streaming API writes them, ending with [DONE].
export function openStream(res: ServerResponse, log: (l: string) => void) {
  res.writeHead(200, {
    'content-type': 'text/event-stream',
    'cache-control': 'no-cache',
    connection: 'keep-alive',
  });
  return {
    send: (v: unknown) => {
      res.write(`data: ${JSON.stringify(v)}\n\n`);
    },
    fail: (err: unknown) => {
      const e = err instanceof ApiError ? err : internalError(err, log);
      res.write(`data: ${JSON.stringify(e.body())}\n\n`);
      return null;
    },
    end: () => {
      res.end('data: [DONE]\n\n');
    },
  };
}

async function readJsonBody(req: IncomingMessage): Promise<Record<string, unknown>> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY) throw new ApiError(413, `request body exceeds ${MAX_BODY} bytes`);
    chunks.push(chunk as Buffer);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch (err) {
    throw bad(`malformed JSON body: ${(err as Error).message}`, null, 'invalid_json');
  }
  if (!body || typeof body !== 'object' || Array.isArray(body))
    throw bad('the JSON body must be an object', null, 'invalid_json');
  // Deeply nested values would overflow the stack of whatever walks them later.
  const stack: [unknown, number][] = [[body, 1]];
  while (stack.length) {
    const [v, depth] = stack.pop()!;
    if (!v || typeof v !== 'object') continue;
    if (depth > MAX_JSON_DEPTH)
      throw bad(
        `the JSON body is nested deeper than ${MAX_JSON_DEPTH} levels`,
        null,
        'invalid_json',
      );
    for (const x of Object.values(v)) stack.push([x, depth + 1]);
  }
  return body as Record<string, unknown>;
}
