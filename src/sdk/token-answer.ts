import { decodeJwt } from 'jose';
import { CordonSdkError } from './errors.ts';
import { isObject } from './http.ts';

/** A token response from the broker (or `cordon exec`'s endpoint), checked. */
export interface TokenAnswer {
  accessToken: string;
  tokenType: 'Bearer' | 'DPoP';
  expiresIn: number;
  scope?: string[];
  sid: string;
  /** ms since the epoch, when the broker said. */
  sessionExpiresAt?: number;
}

export type Form = Array<[string, string]>;

export const JWS_SHAPE = /^[\w-]+\.[\w-]+\.[\w-]+$/;
export const splitScope = (s: string | string[]): string[] => (Array.isArray(s) ? s : s.split(' ')).map((x) => x.trim()).filter(Boolean);
export const list = (v: string | string[] | undefined): string[] => (v === undefined ? [] : Array.isArray(v) ? v : [v]);

/** A failure of the broker or the network, not a refusal: worth keeping a still-valid token over. */
export const brokerHiccup = (e: unknown): boolean =>
  e instanceof CordonSdkError && (e.code === 'network' || e.code === 'bad_response' || (e.status ?? 0) >= 500);

/** The broker refused with this RFC 6749 error. */
export const refusedWith = (e: unknown, ...errors: string[]): e is CordonSdkError =>
  e instanceof CordonSdkError && e.code === 'oauth' && errors.includes(e.error ?? '');

export function parseTokenAnswer(json: unknown, what: string): TokenAnswer {
  if (!isObject(json)) throw new CordonSdkError('bad_response', `${what}: the token response is not a JSON object`);
  const { access_token, token_type, expires_in, scope, sid, session_expires_at } = json;
  if (typeof access_token !== 'string' || !JWS_SHAPE.test(access_token))
    throw new CordonSdkError('bad_response', `${what}: the token response has no access_token JWT`);
  const tt = typeof token_type === 'string' ? token_type.toLowerCase() : '';
  if (tt !== 'bearer' && tt !== 'dpop')
    throw new CordonSdkError('bad_response', `${what}: token_type ${JSON.stringify(token_type)} is neither Bearer nor DPoP`);
  if (typeof expires_in !== 'number' || !Number.isFinite(expires_in) || expires_in <= 0)
    throw new CordonSdkError('bad_response', `${what}: expires_in is missing or not a positive number`);
  let theSid = sid;
  if (theSid === undefined) {
    try {
      theSid = decodeJwt(access_token).sid;
    } catch {
      /* checked below */
    }
  }
  if (typeof theSid !== 'string' || !theSid) throw new CordonSdkError('bad_response', `${what}: the token response names no session (sid)`);
  if (scope !== undefined && typeof scope !== 'string') throw new CordonSdkError('bad_response', `${what}: scope is not a string`);
  if (session_expires_at !== undefined && (typeof session_expires_at !== 'number' || !Number.isFinite(session_expires_at)))
    throw new CordonSdkError('bad_response', `${what}: session_expires_at is not a number`);
  return {
    accessToken: access_token,
    tokenType: tt === 'dpop' ? 'DPoP' : 'Bearer',
    expiresIn: expires_in,
    scope: typeof scope === 'string' ? splitScope(scope) : undefined,
    sid: theSid,
    sessionExpiresAt: typeof session_expires_at === 'number' ? session_expires_at * 1000 : undefined,
  };
}
