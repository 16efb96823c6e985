// A thin router (vLLM's api_server.py): method and path to a serving handler, one abort signal
// per request (the client hanging up cancels its sequences), and every failure answered in the
// one error shape of protocol.ts.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { ApiError, asApiError, readJsonBody, sendJson } from './protocol.ts';
import type { Handler, Serving } from './serving.ts';

export interface Health {
  readonly up: boolean;
  readonly lastFailure: string;
}

export function createRouter(serving: Serving, health: Health) {
  const routes: Record<string, Record<string, Handler>> = {
    '/v1/completions': { POST: serving.completions },
    '/v1/chat/completions': { POST: serving.chatCompletions },
    '/tokenize': { POST: serving.tokenize },
    '/detokenize': { POST: serving.detokenize },
  };

  return async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const abort = new AbortController();
    res.on('close', () => { if (!res.writableFinished) abort.abort(); });
    try {
      const path = (req.url ?? '/').split('?')[0];
      if (path === '/health') {
        if (req.method !== 'GET') throw new ApiError(405, 'use GET /health');
        if (health.up) { res.writeHead(200).end(); return; }
        throw new ApiError(
          503, `the engine is down (${health.lastFailure || 'starting'}); it is being restarted`);
      }
      if (path === '/v1/models') {
        if (req.method !== 'GET') throw new ApiError(405, 'use GET /v1/models');
        serving.models(res);
        return;
      }
      const route = routes[path];
      if (!route) throw new ApiError(404, `no route ${req.method} ${path}; see server/README.md`);
      const handler = route[req.method ?? ''];
      if (!handler) throw new ApiError(405, `use ${Object.keys(route).join(' or ')} ${path}`);
      const body = await readJsonBody(req);
      await handler(body, req, res, abort.signal);
    } catch (err) {
      if (abort.signal.aborted) return; // the client is gone
      const e = asApiError(err);
      if (res.headersSent) res.end();
      else sendJson(res, e.status, e.body());
    }
  };
}
