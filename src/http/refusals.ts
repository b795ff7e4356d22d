import type { NextFunction, Request, Response } from 'express';
import type { Broker } from '../broker.ts';
import { CordonError } from '../errors.ts';
import { NAME_PATTERN } from '../policy/schema.ts';
import { clientAddressOf } from '../audit/refusal-limiter.ts';
import { recordDenial } from '../tokens/issue.ts';
import { claimedClientId } from './client-auth.ts';
import { sendError, toCordonError } from './errors.ts';

/**
 * Every refusal is audited, including those the HTTP layer makes itself (bad bodies, repeated
 * headers, failed client authentication, unknown routes and methods, a bad metrics token): who
 * (the authenticated agent, else the client id the request claimed), from which address, what was
 * attempted and why. Refusals naming no known agent are rate-limited per address (recordDenial).
 * Errors that are not the caller's (server_error) are logged, not audited as refusals. Never
 * throws: the refusal stands (fails closed) even when its audit row cannot be written, and that is logged.
 */
export async function auditRefusal(b: Broker, req: Request, res: Response, err: unknown, attempted: string = attemptedAt(req.path)): Promise<void> {
  const e = toCordonError(err);
  if (e.audited || e.status >= 500) return;
  const body = req.body as unknown;
  const formClientId = Buffer.isBuffer(body) ? /(?:^|&)client_id=([A-Za-z0-9_-]{1,64})(?:&|$)/.exec(body.toString('latin1'))?.[1] : undefined;
  try {
    await recordDenial(b, {
      event: attempted,
      agentId: (res.locals.agentId as string | undefined) ?? claimedClientId(req.headers.authorization, formClientId),
      reason: `${e.code}: ${e.description}`,
      params: { ...requestParams(req), ...e.auditParams },
      clientAddress: clientAddressOf(req.socket.remoteAddress),
    });
  } catch (auditError) {
    b.log.error({ err: (auditError as Error).message }, 'could not audit a refusal');
    return;
  }
  e.audited = true;
}

/** The audit event a request to `path` attempts, for refusals made before (or without) a route. */
export function attemptedAt(path: string): string {
  if (path.startsWith('/credentials/')) return 'credential.issue';
  const known: Record<string, string> = { '/token': 'token', '/introspect': 'introspect', '/revoke': 'revoke', '/revocations': 'revocations', '/metrics': 'metrics', '/jwks': 'jwks' };
  return known[path] ?? 'request';
}

/**
 * What a refusal row says about the request. At /credentials the path is the route and the name
 * a separate parameter, recorded only when well-formed: whatever else was put in the URL (a token
 * pasted by mistake) stays out of the log.
 */
function requestParams(req: Request): Record<string, unknown> {
  if (req.path.startsWith('/credentials/')) {
    const name = req.path.slice('/credentials/'.length);
    return { path: '/credentials/:name', method: req.method, ...(NAME_PATTERN.test(name) ? { name } : {}) };
  }
  return { path: req.path.slice(0, 100), method: req.method };
}

/** Refuses the request with `e`, after auditing it. */
export async function refuse(b: Broker, req: Request, res: Response, e: CordonError, attempted?: string): Promise<void> {
  await auditRefusal(b, req, res, e, attempted);
  sendError(res, e, b.log);
}

/** An async endpoint whose refusals are audited as `attempted`; errors then reach the error middleware. */
export const audited =
  (b: Broker, attempted: string, fn: (req: Request, res: Response) => Promise<void>) =>
  (req: Request, res: Response, next: NextFunction): void => {
    fn(req, res).catch(async (err: unknown) => {
      const e = toCordonError(err);
      await auditRefusal(b, req, res, e, attempted);
      next(e.status < 500 ? e : err);
    });
  };

/**
 * Error middleware: audits what an earlier middleware (the body parser, the router) refused, then
 * passes it on — as the CordonError it maps to, which carries the `audited` mark, so a later
 * auditErrors does not write it again.
 */
export const auditErrors =
  (b: Broker, attempted?: string) =>
  (err: unknown, req: Request, res: Response, next: NextFunction): void => {
    const e = toCordonError(err);
    void auditRefusal(b, req, res, e, attempted).then(() => next(e.status < 500 ? e : err));
  };
