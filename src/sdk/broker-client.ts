import { CordonSdkError } from './errors.ts';
import { DpopKey } from './dpop.ts';
import { requestJson, type HttpOptions } from './http.ts';
import { parseTokenAnswer, type Form, type TokenAnswer } from './token-answer.ts';
import type { ClientAuth } from './client-auth.ts';
import type { SdkClock } from './types.ts';

/** The broker's /token and /revoke as the agent speaks to them: client authentication, DPoP proofs, checked answers. */
export class BrokerClient {
  readonly issuer: string;
  readonly http: HttpOptions;
  readonly clock: SdkClock;
  readonly auth: ClientAuth;
  #dpop: DpopKey | null | Promise<DpopKey>;
  /** Throws when the agent was closed: nothing is asked of the broker after that. */
  readonly #ensureOpen: () => void;

  constructor(opts: { issuer: string; http: HttpOptions; clock: SdkClock; auth: ClientAuth; dpop: DpopKey | null | Promise<DpopKey>; ensureOpen: () => void }) {
    this.#ensureOpen = opts.ensureOpen;
    this.issuer = opts.issuer;
    this.http = opts.http;
    this.clock = opts.clock;
    this.auth = opts.auth;
    this.#dpop = opts.dpop;
  }

  async dpopKey(): Promise<DpopKey | null> {
    if (this.#dpop === null) return null;
    this.#dpop = await this.#dpop;
    return this.#dpop;
  }

  /** `Authorization` (and `DPoP`) headers presenting `t` at `url`. */
  async presenting(t: { accessToken: string; tokenType: 'Bearer' | 'DPoP' }, method: string, url: string): Promise<Record<string, string>> {
    const h: Record<string, string> = { authorization: `${t.tokenType} ${t.accessToken}` };
    if (t.tokenType === 'DPoP') {
      const key = await this.dpopKey();
      if (!key) throw new CordonSdkError('config', 'the token is DPoP-bound but this agent has no DPoP key');
      h.dpop = await key.proof(method, url, { nowMs: this.clock.now(), accessToken: t.accessToken });
    }
    return h;
  }

  /**
   * POST /token. With a DPoP key a proof is sent (unless `dpop: false`). `bound` (default: a proof
   * was sent) says the answer must be bound to our key; for a delegation the proof only shows we
   * hold the subject token, and the new token is the sub-agent's. A token issued but refused here is
   * revoked at once (`endSession` when it opened a session), never left alive.
   */
  async tokenRequest(form: Form, what: string, opts: { dpop?: boolean; bound?: boolean; endSession?: boolean } = {}): Promise<TokenAnswer> {
    this.#ensureOpen();
    const url = `${this.issuer}/token`;
    const auth = await this.auth.credentials();
    const headers: Record<string, string> = { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json', ...auth.headers };
    const key = await this.dpopKey();
    const proved = key !== null && opts.dpop !== false;
    if (proved) headers.dpop = await key.proof('POST', url, { nowMs: this.clock.now() });
    const body = new URLSearchParams([...form, ...auth.form]).toString();
    const { body: json } = await requestJson(this.http, url, { method: 'POST', headers, body }, what);
    const a = parseTokenAnswer(json, what);
    if ((opts.bound ?? proved) && a.tokenType !== 'DPoP') {
      await this.revokeToken(a.accessToken, opts.endSession ?? false).catch(() => {});
      throw new CordonSdkError('bad_response', `${what}: asked for a DPoP-bound token but got token_type ${a.tokenType}; it was revoked`);
    }
    return a;
  }

  /** POST /revoke; `endSession` ends the token's whole session. */
  async revokeToken(token: string, endSession = false): Promise<void> {
    const url = `${this.issuer}/revoke`;
    const auth = await this.auth.credentials();
    const body = new URLSearchParams([
      ['token', token],
      ['token_type_hint', 'access_token'],
      ...(endSession ? [['end_session', 'true']] : []),
      ...auth.form,
    ]).toString();
    await requestJson(
      this.http,
      url,
      { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', ...auth.headers }, body },
      'revocation',
      { allowEmpty: true },
    );
  }
}
