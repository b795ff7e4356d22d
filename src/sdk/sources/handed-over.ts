import { decodeJwt } from 'jose';
import { CordonSdkError } from '../errors.ts';
import type { Session } from '../session.ts';
import { JWS_SHAPE, splitScope } from '../token-answer.ts';
import type { TokenSource } from './source.ts';

/**
 * An access token handed over by an orchestrator (a delegation): used until it expires. The
 * agent cannot open, renew or end sessions with it; the orchestrator that holds the session does.
 */
export class HandedOverSource implements TokenSource {
  readonly mode = 'handed';
  readonly endsSessions = false;
  readonly cannotOpen = 'an agent running on a handed-over token cannot open sessions';
  readonly cannotRenew = 'the handed-over token has expired; ask the orchestrator for another';
  readonly #jwt: string;
  readonly #claims: Record<string, unknown>;

  constructor(jwt: string) {
    if (!JWS_SHAPE.test(jwt)) throw new CordonSdkError('config', 'the handed-over access token is not a JWT');
    try {
      this.#claims = decodeJwt(jwt);
    } catch {
      throw new CordonSdkError('config', 'the handed-over access token cannot be decoded');
    }
    if (typeof this.#claims.exp !== 'number' || typeof this.#claims.sid !== 'string')
      throw new CordonSdkError('config', 'the handed-over access token has no exp or sid');
    this.#jwt = jwt;
  }

  initialSession(now: number): Session {
    const claims = this.#claims;
    const cnf = claims.cnf as { jkt?: string } | undefined;
    const expiresAt = (claims.exp as number) * 1000;
    const scope = typeof claims.scope === 'string' ? splitScope(claims.scope) : [];
    return {
      sid: claims.sid as string,
      scope,
      task: typeof claims.task === 'string' ? claims.task : undefined,
      audience: [],
      expiresAt: null, // the session's end is not in the token; its own exp is the limit here
      current: { accessToken: this.#jwt, tokenType: cnf?.jkt ? 'DPoP' : 'Bearer', issuedAt: now, expiresAt, refreshAt: Infinity, scope: [...scope] },
      issued: [{ token: this.#jwt, expiresAt }],
      ended: null,
    };
  }
}
