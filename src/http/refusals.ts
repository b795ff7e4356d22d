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
 * are not the caller's (server_error) are logged, not audited as refusals.
 */
export async function auditRefusal(b: Broker, req: Request, res: Response, err: unknown, attempted: string): Promise<void> {
  const e = toCordonError(err);
  if (e.audited || e.status >= 500) return;
  const body = req.body as unknown;
  const formClientId = Buffer.isBuffer(body) ? /(?:^|&)client_id=([A-Za-z0-9_-]{1,64})(?:&|$)/.exec(body.toString('latin1'))?.[1] : undefined;
  await recordDenial(b, {
    event: attempted,
    agentId: (res.locals.agentId as string | undefined) ?? claimedClientId(req.headers.authorization, formClientId),
    reason: `${e.code}: ${e.description}`,
    params: { path: req.path.slice(0, 100), method: req.method, ...e.auditParams },
  });
  if (err instanceof CordonError) err.audited = true;
}

/** Refuses the request with `e`, after auditing it. */
export async function refuse(b: Broker, req: Request, res: Response, e: CordonError, attempted: string): Promise<void> {
  try {
    await auditRefusal(b, req, res, e, attempted);
  } catch (auditError) {
    // Fail closed: the refusal stands even when its audit row cannot be written.
    b.log.error({ err: (auditError as Error).message }, 'could not audit a refusal');
  }
  sendError(res, e, b.log);
}

/** An async endpoint whose refusals are audited as `attempted`; errors then reach the error middleware. */
export const audited =
  (b: Broker, attempted: string, fn: (req: Request, res: Response) => Promise<void>) =>
  (req: Request, res: Response, next: NextFunction): void => {
    fn(req, res).catch(async (err: unknown) => {
      try {
        await auditRefusal(b, req, res, err, attempted);
      } catch (auditError) {
        b.log.error({ err: (auditError as Error).message }, 'could not audit a refusal');
      }
      next(err);
    });
  };
