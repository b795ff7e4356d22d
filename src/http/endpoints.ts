import type { Request, Response } from 'express';
import type { Broker } from '../broker.ts';
import { CordonError } from '../errors.ts';
import { introspect } from '../tokens/introspect.ts';
import { revokeByHolder } from '../revocation/revoke.ts';
import { revocationOptions, revokesAsWorkload } from '../revocation/request.ts';
import { revocationFeed } from '../revocation/feed.ts';
import { authenticateClient } from './client-auth.ts';
import { parseForm, required, single } from './form.ts';

/** RFC 7662. Who may introspect is assertMayUse's call (agents/standing.ts). */
export const introspectEndpoint =
  (b: Broker) =>
  async (req: Request, res: Response): Promise<void> => {
    const form = parseForm(req);
    await authenticateClient(b, req, res, form, 'introspect');
    const token = required(form, 'token');
    single(form, 'token_type_hint');
    res.setHeader('Cache-Control', 'no-store');
    res.json(await introspect(b, token));
  };

/** RFC 7009. The holder (or an ancestor in its delegation chain) revokes; everything below goes too. */
export const revokeEndpoint =
  (b: Broker) =>
  async (req: Request, res: Response): Promise<void> => {
    const form = parseForm(req);
    const presentsCredentials = Boolean(req.headers.authorization) || form.has('client_secret') || form.has('client_assertion');
    const workload = revokesAsWorkload({ clientId: single(form, 'client_id'), presentsCredentials });
    const agent = workload ? null : await authenticateClient(b, req, res, form, 'revoke');
    const token = required(form, 'token');
    const options = revocationOptions({ tokenTypeHint: single(form, 'token_type_hint'), endSession: single(form, 'end_session') });
    await revokeByHolder(b, agent?.id ?? null, token, options);
    res.setHeader('Cache-Control', 'no-store');
    res.status(200).end();
  };

/** The revocation feed for offline verifiers: `since` is the cursor from the previous answer. */
export const revocationsEndpoint =
  (b: Broker) =>
  async (req: Request, res: Response): Promise<void> => {
    const extra = Object.keys(req.query).filter((k) => k !== 'since' && k !== 'limit');
    if (extra.length) throw new CordonError('invalid_request', `unknown parameter ${extra[0].slice(0, 40)}`);
    const since = req.query.since ?? '0';
    const limit = req.query.limit ?? '1000';
    if (typeof since !== 'string' || !/^\d{1,15}$/.test(since))
      throw new CordonError('invalid_request', 'since must be a cursor from a previous answer (a whole number)');
    if (typeof limit !== 'string' || !/^\d{1,4}$/.test(limit) || Number(limit) < 1) throw new CordonError('invalid_request', 'limit must be 1 to 9999');
    res.setHeader('Cache-Control', 'no-store');
    res.json(await revocationFeed(b, Number(since), Number(limit)));
  };

export const jwksEndpoint =
  (b: Broker) =>
  async (_req: Request, res: Response): Promise<void> => {
    await b.keys.fresh();
    res.setHeader('Cache-Control', 'public, max-age=60');
    res.type('application/jwk-set+json').send(JSON.stringify(b.keys.jwks()));
  };
