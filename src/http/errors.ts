import type { NextFunction, Request, Response } from 'express';
import type { Logger } from 'pino';
import { CordonError } from '../errors.ts';

/** The one place broker errors become HTTP: RFC 6749 JSON, RFC 6750/9449 challenges, never a stack trace. */
export function sendError(res: Response, err: unknown, log?: Logger): void {
  const e = toCordonError(err);
  if (e.status >= 500 && e.code === 'server_error') log?.error({ err: err instanceof Error ? err.message : String(err) }, 'unexpected error');
  if (e.code === 'invalid_token' || e.code === 'insufficient_scope' || e.code === 'invalid_dpop_proof') {
    const scheme = res.locals.authScheme === 'DPoP' ? 'DPoP algs="ES256 EdDSA RS256 PS256"' : 'Bearer';
    // A header value is Latin-1 at most; descriptions may quote what the caller sent, so keep printable ASCII only.
    const description = e.description.replace(/["\\]/g, "'").replace(/[^\x20-\x7e]/g, '?');
    res.setHeader('WWW-Authenticate', `${scheme} error="${e.code}", error_description="${description}"`);
  }
  if (e.code === 'invalid_client' && res.locals.basicAuth) res.setHeader('WWW-Authenticate', 'Basic realm="cordon"');
  res.status(e.status).setHeader('Cache-Control', 'no-store').json(e.toJSON());
}

export function toCordonError(err: unknown): CordonError {
  if (err instanceof CordonError) return err;
  const e = err as { type?: string; status?: number };
  if (e?.type === 'entity.too.large') return new CordonError('invalid_request', 'request body is too large', { status: 413, reason: 'body_too_large' });
  if (e?.type === 'entity.parse.failed' || e?.type === 'encoding.unsupported' || e?.type === 'charset.unsupported')
    return new CordonError('invalid_request', 'request body could not be parsed', { reason: 'body_malformed' });
  if (e?.status === 400) return new CordonError('invalid_request', 'request could not be parsed', { reason: 'body_malformed' });
  return new CordonError('server_error', 'the broker could not complete the request', { reason: 'internal' });
}

/** Express error middleware: last in the chain. Whatever happens, the answer is RFC 6749 JSON. */
export const errorMiddleware =
  (log: Logger) =>
  (err: unknown, _req: Request, res: Response, _next: NextFunction): void => {
    if (res.headersSent) return;
    try {
      sendError(res, err, log);
    } catch (e) {
      log.error({ err: (e as Error).message }, 'could not send an error response');
      if (!res.headersSent)
        res.status(500).type('application/json').send('{"error":"server_error","error_description":"the broker could not complete the request"}');
    }
  };

/** Wraps an async handler so thrown errors reach the error middleware. */
export const handle =
  (fn: (req: Request, res: Response) => Promise<void>) =>
  (req: Request, res: Response, next: NextFunction): void => {
    fn(req, res).catch(next);
  };
