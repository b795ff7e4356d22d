import { GRANT_CLIENT_CREDENTIALS } from '../../protocol/constants.ts';
import type { BrokerClient } from '../broker-client.ts';
import { CordonSdkError } from '../errors.ts';
import type { Session } from '../session.ts';
import { refusedWith, type Form, type TokenAnswer } from '../token-answer.ts';
import type { TokenSource } from './source.ts';

/**
 * A client secret or private_key_jwt: sessions open with client_credentials, and are renewed by
 * asking again with `session=<sid>` until the broker refuses (the session has ended).
 */
export class ClientCredentialSource implements TokenSource {
  readonly mode: 'secret' | 'private_key_jwt';
  readonly endsSessions = true;
  readonly #broker: BrokerClient;

  constructor(broker: BrokerClient, kind: 'secret' | 'private_key_jwt') {
    this.#broker = broker;
    this.mode = kind;
  }

  open(form: Form): Promise<TokenAnswer> {
    return this.#broker.tokenRequest([...form, ['grant_type', GRANT_CLIENT_CREDENTIALS]], 'session start', { endSession: true });
  }

  renew(s: Session | null, what: string): Promise<TokenAnswer> {
    if (!s) throw new CordonSdkError('no_session', 'no session: call startSession() first');
    return this.renewFor(s, what, {});
  }

  /** A new token of the open session (`session=<sid>`), refused with `invalid_grant` once the session has ended. */
  async renewFor(s: Session, what: string, opts: { expiresIn?: number; audience?: string[] }): Promise<TokenAnswer> {
    const form: Form = [
      ['scope', s.scope.join(' ')],
      ['session', s.sid],
    ];
    for (const a of opts.audience ?? s.audience) form.push(['audience', a]);
    const expiresIn = opts.expiresIn !== undefined && s.expiresIn !== undefined ? Math.min(opts.expiresIn, s.expiresIn) : (opts.expiresIn ?? s.expiresIn);
    if (expiresIn !== undefined) form.push(['expires_in', String(expiresIn)]);
    form.push(['grant_type', GRANT_CLIENT_CREDENTIALS]);
    let a: TokenAnswer;
    try {
      a = await this.#broker.tokenRequest(form, what);
    } catch (e) {
      if (refusedWith(e, 'invalid_grant')) {
        throw new CordonSdkError('session_ended', `session ${s.sid} cannot be renewed: ${e.error_description ?? e.error}`, {
          error: e.error,
          error_description: e.error_description,
          status: e.status,
          cause: e,
        });
      }
      throw e;
    }
    if (a.sid !== s.sid) {
      // The broker opened another session instead of renewing this one: do not drift into it.
      await this.#broker.revokeToken(a.accessToken, true).catch(() => {});
      throw new CordonSdkError('bad_response', `${what}: the broker answered for session ${a.sid}, not ${s.sid}`);
    }
    return a;
  }
}
