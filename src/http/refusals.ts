import type { NextFunction, Request, Response } from 'express';
import type { Broker } from '../broker.ts';
import { CordonError } from '../errors.ts';
import { NAME_PATTERN } from '../policy/schema.ts';
import { clientAddressOf } from '../audit/refusal-limiter.ts';
import { recordRefusal } from '../audit/refusals.ts';
import { Attempt } from '../audit/attempt.ts';
import type { Attempted } from '../store/audit-events.ts';
import { claimedClientId } from './basic-auth.ts';
import { sendError, toCordonError } from './errors.ts';

/**
 * The request's attempt (see Attempt): opened on first use with what the HTTP layer knows — the
 * route, the client address, the client id the request claims (never a secret) — and filled in by
 * client authentication and the decisions as they learn who is asking.
 */
export function attemptOf(req: Request, res: Response, attempted?: Attempted): Attempt {
  let a = res.locals.attempt as Attempt | undefined;
  if (!a) {
    a = new Attempt(attempted ?? attemptedAt(req.path), clientAddressOf(req.socket.remoteAddress));
    const body = req.body as unknown;
    const formClientId = Buffer.isBuffer(body) ? /(?:^|&)client_id=([A-Za-z0-9_-]{1,64})(?:&|$)/.exec(body.toString('latin1'))?.[1] : undefined;
    a.by(claimedClientId(req.headers.authorization, formClientId)).note(requestParams(req));
    res.locals.attempt = a;
  } else if (attempted) a.event = attempted;
  return a;
}

/**
 * The HTTP entry points' refusal writer: a request is refused at most once, so its deny row is
 * written at most once (whichever wrapper sees the refusal first), from the request's attempt.
 * Errors that are not the caller's (server_error) are logged, not audited as refusals. Never
 * throws: the refusal stands (fails closed) even when its row cannot be written, and that is logged.
 */
export async function auditRefusal(b: Broker, req: Request, res: Response, err: unknown, attempted?: Attempted): Promise<void> {
  const e = toCordonError(err);
  if (e.code === 'server_error' || res.locals.refusalRecorded) return;
  res.locals.refusalRecorded = true;
  try {
    await recordRefusal(b, attemptOf(req, res, attempted), e);
  } catch (auditError) {
    b.log.error({ err: (auditError as Error).message }, 'could not audit a refusal');
  }
}

/** The audit event a request to `path` attempts, for refusals made before (or without) a route. */
export function attemptedAt(path: string): Attempted {
  if (path.startsWith('/credentials/')) return 'credential.issue';
  const known: Record<string, Attempted> = {
    '/token': 'token',
    '/introspect': 'introspect',
    '/revoke': 'revoke',
    '/revocations': 'revocations',
    '/metrics': 'metrics',
    '/jwks': 'jwks',
  };
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
export async function refuse(b: Broker, req: Request, res: Response, e: CordonError, attempted?: Attempted): Promise<void> {
  await auditRefusal(b, req, res, e, attempted);
  sendError(res, e, b.log);
}

/** An async endpoint whose refusals are audited as `attempted`; errors then reach the error middleware. */
export const audited =
  (b: Broker, attempted: Attempted, fn: (req: Request, res: Response, attempt: Attempt) => Promise<void>) =>
  (req: Request, res: Response, next: NextFunction): void => {
    fn(req, res, attemptOf(req, res, attempted)).catch(async (err: unknown) => {
      const e = toCordonError(err);
      await auditRefusal(b, req, res, e, attempted);
      next(e.status < 500 ? e : err);
    });
  };

/** Error middleware: audits what an earlier middleware (the body parser, the router) refused, then passes it on as the CordonError it maps to. */
export const auditErrors =
  (b: Broker, attempted?: Attempted) =>
  (err: unknown, req: Request, res: Response, next: NextFunction): void => {
    const e = toCordonError(err);
    void auditRefusal(b, req, res, e, attempted).then(() => next(e.status < 500 ? e : err));
  };
