import type { Broker } from '../broker.ts';
import { CordonError } from '../errors.ts';

export type IntrospectionResponse = { active: false } | ({ active: true } & Record<string, unknown>);

/**
 * RFC 7662 from the broker's own records, as the live-token cache (b.live) holds them: a token
 * string already verified and still live is answered from memory, anything else is verified and
 * read from the database (and kept while live). Anything we cannot vouch for — bad signature,
 * foreign key, `alg: none`, expired, revoked, revoked session or holder — is simply `active: false` (§2.2).
 */
export async function introspect(b: Broker, token: unknown): Promise<IntrospectionResponse> {
  let live;
  try {
    live = await b.live.require(token, 'invalid_token');
  } catch (e) {
    if (e instanceof CordonError) return { active: false };
    throw e;
  }
  // What the broker recorded, which the presented claims were checked against.
  const claims = live.claims;
  return {
    active: true,
    token_type: claims.cnf ? 'DPoP' : 'Bearer',
    iss: claims.iss,
    sub: claims.sub,
    aud: claims.aud,
    client_id: claims.client_id,
    scope: claims.scope,
    sid: claims.sid,
    ...(claims.task ? { task: claims.task } : {}),
    ...(claims.act ? { act: claims.act } : {}),
    iat: claims.iat,
    nbf: claims.nbf,
    exp: claims.exp,
    jti: claims.jti,
    cordon_depth: claims.cordon_depth,
    ...(claims.cnf ? { cnf: claims.cnf } : {}),
  };
}
