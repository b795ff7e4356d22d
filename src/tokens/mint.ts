import { SignJWT } from 'jose';
import type { Keyring } from '../keys/keyring.ts';
import { ACCESS_TOKEN_TYP, type AccessTokenClaims } from './claims.ts';

/** Signs an access token with the active key. The claims are final: decisions happened before this. */
export async function signAccessToken(keys: Keyring, claims: AccessTokenClaims): Promise<{ jwt: string; kid: string }> {
  const { kid, alg, privateKey } = keys.active();
  const { iss, sub, aud, iat, nbf, exp, jti, ...rest } = claims;
  const jwt = await new SignJWT(rest)
    .setProtectedHeader({ alg, kid, typ: ACCESS_TOKEN_TYP })
    .setIssuer(iss)
    .setSubject(sub)
    .setAudience(aud)
    .setIssuedAt(iat)
    .setNotBefore(nbf)
    .setExpirationTime(exp)
    .setJti(jti)
    .sign(privateKey);
  return { jwt, kid };
}
