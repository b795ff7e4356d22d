import type { Express, Request, Response } from 'express';
import type { Broker } from '../broker.ts';
import { CordonError } from '../errors.ts';
import { NAME_PATTERN } from '../policy/schema.ts';
import type { Attempt } from '../audit/attempt.ts';
import { issueCredential } from '../credentials/issue.ts';
import { audited } from './refusals.ts';

/**
 * `POST /credentials/:name`: parses the request and maps errors; every decision is in
 * tokens/credentials.ts. The token comes as `Authorization: Bearer <jwt>` or
 * `Authorization: DPoP <jwt>` with a `DPoP` proof header; the body is ignored.
 */
export function credentialsRoute(app: Express, b: Broker): void {
  app.post('/credentials/:name', audited(b, 'credential.issue', credentialsEndpoint(b)));
}

export const credentialsEndpoint =
  (b: Broker) =>
  async (req: Request, res: Response, attempt: Attempt): Promise<void> => {
    const name = req.params.name;
    const { scheme, token } = bearer(req);
    res.locals.authScheme = scheme;
    if (typeof name !== 'string' || !NAME_PATTERN.test(name))
      throw new CordonError('invalid_request', `credential name must match ${NAME_PATTERN.source}`, { reason: 'credential_name_malformed' });
    const dpop = req.headers.dpop;
    if (Array.isArray(dpop)) throw new CordonError('invalid_dpop_proof', 'exactly one DPoP header is allowed', { status: 401, reason: 'dpop_multiple' });
    const out = await issueCredential(b, { jwt: token, name, scheme, dpopProof: dpop, method: 'POST', url: `${b.config.issuer}/credentials/${name}` }, attempt);
    res.setHeader('Cache-Control', 'no-store');
    res.setHeader('Pragma', 'no-cache');
    res.json(out);
  };

/** RFC 6750 §2.1 / RFC 9449 §7.1: one Authorization header, scheme Bearer or DPoP (case-insensitive), one token68. */
function bearer(req: Request): { scheme: 'Bearer' | 'DPoP'; token: string } {
  const h = req.headers.authorization;
  if (!h)
    throw new CordonError('invalid_token', 'an access token is required: Authorization: Bearer <token> (or DPoP <token> with a DPoP proof)', {
      reason: 'token_missing',
    });
  const m = /^(Bearer|DPoP) +([A-Za-z0-9\-._~+/]+=*)$/i.exec(h);
  if (!m) throw new CordonError('invalid_token', 'Authorization must be "Bearer <token>" or "DPoP <token>"', { reason: 'auth_malformed' });
  return { scheme: m[1].toLowerCase() === 'dpop' ? 'DPoP' : 'Bearer', token: m[2] };
}
