import { randomUUID } from 'node:crypto';
import type { Express, NextFunction, Request, Response } from 'express';
import type { Logger } from 'pino';
import type { Broker } from '../broker.ts';

/** A caller's X-Request-Id is echoed only when it is short and plain; otherwise a fresh one is made. */
const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

export const requestIdOf = (res: Response): string | undefined => res.locals.requestId as string | undefined;

/**
 * One structured line per request (pino-http's shape, minus everything that may hold a
 * secret): request id, method, path without query, status, latency, size, peer. Never
 * headers (Authorization, DPoP, cookies) and never bodies (client secrets, tokens).
 * `res.locals.log` is a child logger carrying the request id, for handlers.
 */
export function requestLogger(log: Logger) {
  return (req: Request, res: Response, next: NextFunction): void => {
    const incoming = req.headers['x-request-id'];
    const id = typeof incoming === 'string' && REQUEST_ID.test(incoming) ? incoming : randomUUID();
    res.locals.requestId = id;
    res.setHeader('X-Request-Id', id);
    const child = log.child({ req_id: id });
    res.locals.log = child;
    const start = process.hrtime.bigint();
    const url = req.originalUrl.split('?')[0].slice(0, 256);
    let done = false;
    const finish = (aborted: boolean) => {
      if (done) return;
      done = true;
      const ms = Number(process.hrtime.bigint() - start) / 1e6;
      const status = res.statusCode;
      const line = {
        req: { id, method: req.method, url, remoteAddress: req.socket.remoteAddress, userAgent: (req.headers['user-agent'] ?? '').slice(0, 200) || undefined },
        res: { statusCode: aborted ? null : status, contentLength: Number(res.getHeader('content-length') ?? 0) || undefined },
        responseTime: Math.round(ms * 1000) / 1000,
      };
      if (aborted) child.warn(line, 'request aborted');
      else if (status >= 500) child.error(line, 'request failed');
      else child.info(line, 'request completed');
    };
    res.on('finish', () => finish(false));
    res.on('close', () => finish(!res.writableFinished));
    next();
  };
}

/** Mount first, so every route (the OAuth provider included) is logged. */
export function mountRequestLogging(app: Express, b: Broker): void {
  app.use(requestLogger(b.log));
}
