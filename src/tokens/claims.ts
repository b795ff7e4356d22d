/** RFC 8693 §4.1 actor claim: the outermost `sub` is the current actor, nested `act` the earlier links. */
export interface ActClaim {
  sub: string;
  act?: ActClaim;
}

/** The claims of a Cordon access token (RFC 9068 plus Cordon's session and chain claims). */
export interface AccessTokenClaims {
  iss: string;
  sub: string;
  aud: string | string[];
  iat: number;
  nbf: number;
  exp: number;
  jti: string;
  client_id: string;
  scope: string;
  sid: string;
  task?: string;
  cordon_depth: number;
  act?: ActClaim;
  cnf?: { jkt: string };
}

export { ACCESS_TOKEN_TYP, TOKEN_TYPE_ACCESS, TOKEN_TYPE_JWT, TOKEN_TYPE_BOOTSTRAP, GRANT_TOKEN_EXCHANGE } from '../protocol/constants.ts';

/** The chain of holders from root to current, read from an act claim (bounded: a real chain is never deep). */
/** The `aud` claim as a list (RFC 7519 allows a single string). */
export const audiencesOf = (claims: { aud?: string | string[] }): string[] =>
  claims.aud === undefined ? [] : Array.isArray(claims.aud) ? claims.aud : [claims.aud];

export function chainOf(claims: { client_id: string; act?: ActClaim; sub: string }, rootClientId?: string): string[] {
  const holders: string[] = [];
  let a: ActClaim | undefined = claims.act;
  // Only well-formed links count: a malformed act (a string, a missing sub) ends the chain here.
  while (a !== null && typeof a === 'object' && typeof a.sub === 'string' && holders.length < 64) {
    holders.push(a.sub);
    a = a.act;
  }
  holders.reverse();
  if (!holders.length) return [claims.client_id];
  return rootClientId && holders[0] !== rootClientId ? [rootClientId, ...holders] : holders;
}
