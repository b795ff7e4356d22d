import type { Request, Response } from 'express';
import type { Broker } from '../broker.ts';
import { CordonError } from '../errors.ts';
import { introspect } from '../tokens/introspect.ts';
import { revokeByHolder } from '../revocation/revoke.ts';
import { WORKLOAD_CLIENT_ID } from '../sessions/bootstrap.ts';
import { revocationFeed } from '../revocation/feed.ts';
import { authenticateClient } from './client-auth.ts';
import { parseForm, required, single } from './form.ts';

/** RFC 7662. Any authenticated agent may introspect (resource servers register as agents with a scope-less policy). */
export const introspectEndpoint = (b: Broker) => async (req: Request, res: Response): Promise<void> => {
  const form = parseForm(req);
  await authenticateClient(b, req, res, form);
  const token = required(form, 'token');
  single(form, 'token_type_hint');
  res.setHeader('Cache-Control', 'no-store');
  res.json(await introspect(b, token));
};

/** RFC 7009. The holder (or an ancestor in its delegation chain) revokes; everything below goes too. */
export const revokeEndpoint = (b: Broker) => async (req: Request, res: Response): Promise<void> => {
  const form = parseForm(req);
  // Secretless agents (bootstrap, federation) revoke as the public workload client: possession of the token is the proof (RFC 7009 §5).
  const isWorkload = single(form, 'client_id') === WORKLOAD_CLIENT_ID && !req.headers.authorization && !form.has('client_secret') && !form.has('client_assertion');
  const agent = isWorkload ? null : await authenticateClient(b, req, res, form, { allowDisabled: true });
  const token = required(form, 'token');
  const hint = single(form, 'token_type_hint');
  if (hint !== undefined && hint !== 'access_token') throw new CordonError('unsupported_token_type', 'only access tokens are issued by this broker');
  // Cordon extension: `end_session=true` ends the token's whole session (the opener only), so it cannot be renewed.
  const endSession = single(form, 'end_session');
  if (endSession !== undefined && endSession !== 'true' && endSession !== 'false') throw new CordonError('invalid_request', 'end_session must be true or false');
  await revokeByHolder(b, agent?.id ?? null, token, { endSession: endSession === 'true' });
  res.setHeader('Cache-Control', 'no-store');
  res.status(200).end();
};

/** The revocation feed for offline verifiers: `since` is the cursor from the previous answer. */
export const revocationsEndpoint = (b: Broker) => async (req: Request, res: Response): Promise<void> => {
  const extra = Object.keys(req.query).filter((k) => k !== 'since' && k !== 'limit');
  if (extra.length) throw new CordonError('invalid_request', `unknown parameter ${extra[0].slice(0, 40)}`);
  const since = req.query.since ?? '0';
  const limit = req.query.limit ?? '1000';
  if (typeof since !== 'string' || !/^\d{1,15}$/.test(since)) throw new CordonError('invalid_request', 'since must be a cursor from a previous answer (a whole number)');
  if (typeof limit !== 'string' || !/^\d{1,4}$/.test(limit) || Number(limit) < 1) throw new CordonError('invalid_request', 'limit must be 1 to 9999');
  res.setHeader('Cache-Control', 'no-store');
  res.json(await revocationFeed(b, Number(since), Number(limit)));
};

export const jwksEndpoint = (b: Broker) => async (_req: Request, res: Response): Promise<void> => {
  await b.keys.fresh();
  res.setHeader('Cache-Control', 'public, max-age=60');
  res.type('application/jwk-set+json').send(JSON.stringify(b.keys.jwks()));
};
