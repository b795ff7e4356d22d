import type { KoaContextWithOIDC } from 'oidc-provider';
import type { Broker } from '../../broker.ts';
import type { Agent } from '../../store/agents.ts';
import { CordonError } from '../../errors.ts';
import { verifyDpopProof } from '../../tokens/dpop.ts';
import { providerClient, providerParams } from '../internals.ts';

/** String parameter as oidc-provider parsed it (it already refuses duplicates unless allowed). */
export const param = (ctx: KoaContextWithOIDC, name: string): string | undefined => {
  const v = providerParams(ctx)[name];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') throw new CordonError('invalid_request', `parameter ${name} must be a single string`);
  return v;
};

/** RFC 8707 `resource` and RFC 8693 `audience`, both repeatable, merged. */
export const audiences = (ctx: KoaContextWithOIDC): string[] => {
  const out: string[] = [];
  for (const name of ['resource', 'audience']) {
    const v = providerParams(ctx)[name];
    if (v === undefined) continue;
    for (const s of Array.isArray(v) ? v : [v]) {
      if (typeof s !== 'string' || s === '' || s.length > 512)
        throw new CordonError('invalid_target', `${name} must be a non-empty string of at most 512 characters`);
      out.push(s);
    }
  }
  return out;
};

/** Verifies the DPoP header when present; the thumbprint binds the issued token (cnf.jkt). */
export async function dpopOf(b: Broker, ctx: KoaContextWithOIDC): Promise<string | null> {
  const header = ctx.headers.dpop;
  if (header === undefined) return null;
  if (Array.isArray(header)) throw new CordonError('invalid_dpop_proof', 'exactly one DPoP header is allowed');
  return verifyDpopProof(b, header, { method: 'POST', url: `${b.config.issuer}/token` });
}

export const tokenResponse = (
  r: { jwt: string; expiresIn: number; claims: { scope: string; sid: string; cnf?: unknown } },
  extra: Record<string, unknown> = {},
) => ({
  access_token: r.jwt,
  token_type: r.claims.cnf ? 'DPoP' : 'Bearer',
  expires_in: r.expiresIn,
  scope: r.claims.scope,
  sid: r.claims.sid,
  ...extra,
});

/** The authenticated agent's row as the client lookup read it in this request (see provider.ts). */
export const callerRow = (ctx: KoaContextWithOIDC): Agent | undefined => {
  const a = ctx.state?.cordonAgent as Agent | undefined;
  return a && a.id === providerClient(ctx)?.clientId ? a : undefined;
};
