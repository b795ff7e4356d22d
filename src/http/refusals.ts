import type { NextFunction, Request, Response } from 'express';
import type { Broker } from '../broker.ts';
import { CordonError } from '../errors.ts';
import { recordDenial } from '../tokens/issue.ts';
import { claimedClientId } from './client-auth.ts';
import { sendError, toCordonError } from './errors.ts';

/**
 * Every refusal is audited, including those the HTTP layer makes itself (bad bodies, repeated
 * headers, failed client authentication at /introspect and /revoke): who (the authenticated
 * agent, else the client id the request claimed), what was attempted and why. Errors that
 * are not the caller's (server_error) are logged, not audited as refusals. Never throws: the
 * refusal stands (fails closed) even when its audit row cannot be written, and that is logged.
 */
export async function auditRefusal(b: Broker, req: Request, res: Response, err: unknown, attempted: string): Promise<void> {
  const e = toCordonError(err);
  if (e.audited || e.status >= 500) return;
  const body = req.body as unknown;
  const formClientId = Buffer.isBuffer(body) ? /(?:^|&)client_id=([A-Za-z0-9_-]{1,64})(?:&|$)/.exec(body.toString('latin1'))?.[1] : undefined;
  try {
    await recordDenial(b, {
      event: attempted,
      agentId: (res.locals.agentId as string | undefined) ?? claimedClientId(req.headers.authorization, formClientId),
      reason: `${e.code}: ${e.description}`,
      params: { path: req.path.slice(0, 100), method: req.method, ...e.auditParams },
    });
  } catch (auditError) {
    b.log.error({ err: (auditError as Error).message }, 'could not audit a refusal');
    return;
  }
  if (err instanceof CordonError) err.audited = true;
}

/** Refuses the request with `e`, after auditing it. */
export async function refuse(b: Broker, req: Request, res: Response, e: CordonError, attempted: string): Promise<void> {
  await auditRefusal(b, req, res, e, attempted);
  sendError(res, e, b.log);
}

/** An async endpoint whose refusals are audited as `attempted`; errors then reach the error middleware. */
export const audited =
  (b: Broker, attempted: string, fn: (req: Request, res: Response) => Promise<void>) =>
  (req: Request, res: Response, next: NextFunction): void => {
    fn(req, res).catch(async (err: unknown) => {
      await auditRefusal(b, req, res, err, attempted);
      next(err);
    });
  };

/** Error middleware: audits what an earlier middleware (the body parser) refused, then passes it on. */
export const auditErrors =
  (b: Broker, attempted: string) =>
  (err: unknown, req: Request, res: Response, next: NextFunction): void => {
    void auditRefusal(b, req, res, err, attempted).then(() => next(err));
  };
