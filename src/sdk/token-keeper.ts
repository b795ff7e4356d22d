import { CordonSdkError } from './errors.ts';
import { currentToken, type CurrentToken, type Session } from './session.ts';
import type { TokenSource } from './sources/index.ts';
import { brokerHiccup, type TokenAnswer } from './token-answer.ts';
import type { SdkClock } from './types.ts';

/**
 * Keeps a valid token for the agent's session: renews it before expiry (with jitter, never past
 * the session's end) through the token source, one renewal at a time; keeps a still-valid token
 * over a broker hiccup; marks the session ended when the broker refuses to renew it.
 */
export class TokenKeeper {
  session: Session | null = null;
  readonly #source: TokenSource;
  readonly #clock: SdkClock;
  readonly #random: () => number;
  #refreshing: Promise<void> | null = null;

  constructor(source: TokenSource, clock: SdkClock, random: () => number) {
    this.#source = source;
    this.#clock = clock;
    this.#random = random;
    if (source.initialSession) this.session = source.initialSession(clock.now());
  }

  /** Starts tracking a session the source just opened. */
  begin(a: TokenAnswer, req: { scope: string[]; task?: string; audience: string[]; expiresIn?: number }): Session {
    const now = this.#clock.now();
    const end = a.sessionExpiresAt ?? null;
    this.session = {
      sid: a.sid,
      scope: a.scope ?? req.scope,
      task: req.task,
      audience: req.audience,
      expiresIn: req.expiresIn,
      expiresAt: end,
      current: this.#current(a, now, end),
      issued: [{ token: a.accessToken, expiresAt: now + a.expiresIn * 1000 }],
      ended: null,
    };
    return this.session;
  }

  #current(a: TokenAnswer, now: number, sessionEnd: number | null): CurrentToken {
    return currentToken(a, now, sessionEnd, this.#random);
  }

  /** A token that is valid now; fails with `session_ended` once the session has ended. */
  async fresh(): Promise<CurrentToken> {
    if (!this.session && this.#source.startsOnFirstUse) await this.#singleRefresh();
    const s = this.session;
    if (!s) throw new CordonSdkError('no_session', 'no session: call startSession() first');
    if (s.ended) throw s.ended;
    const now = this.#clock.now();
    if (s.expiresAt !== null && now >= s.expiresAt) {
      s.ended = new CordonSdkError('session_ended', `session ${s.sid} has reached its end`);
      throw s.ended;
    }
    if (now < s.current.refreshAt && now < s.current.expiresAt - 1000) return s.current;
    if (!this.#source.renew) {
      if (now < s.current.expiresAt - 1000) return s.current;
      s.ended = new CordonSdkError('session_ended', this.#source.cannotRenew ?? `session ${s.sid} cannot be renewed`);
      throw s.ended;
    }
    try {
      await this.#singleRefresh();
    } catch (e) {
      if (e instanceof CordonSdkError && e.code === 'session_ended') throw e;
      // A broker hiccup while the current token still has life left: keep using it, ask again next time.
      if (brokerHiccup(e) && this.#clock.now() < s.current.expiresAt - 1000) return s.current;
      throw e;
    }
    // The refresh may have ended the session (TypeScript's narrowing above cannot see that).
    if (s.ended) throw s.ended as CordonSdkError;
    return s.current;
  }

  /** Forget the current tokens' renewal times: the next fresh() asks the broker (after a refusal). */
  invalidate(): void {
    const s = this.session;
    if (!s) return;
    s.current.refreshAt = 0;
    s.brokerToken = undefined;
  }

  /** One refresh at a time: concurrent callers share it. */
  #singleRefresh(): Promise<void> {
    this.#refreshing ??= this.#refresh().finally(() => {
      this.#refreshing = null;
    });
    return this.#refreshing;
  }

  async #refresh(): Promise<void> {
    const s = this.session;
    let a: TokenAnswer;
    try {
      a = await this.#source.renew!(s, 'token refresh');
    } catch (e) {
      if (s && e instanceof CordonSdkError && e.code === 'session_ended') s.ended = e;
      throw e;
    }
    const now = this.#clock.now();
    if (!s) {
      // The source's own session (cordon exec), seen for the first time.
      const end = a.sessionExpiresAt ?? null;
      this.session = { sid: a.sid, scope: a.scope ?? [], audience: [], expiresAt: end, current: this.#current(a, now, end), issued: [], ended: null };
      return;
    }
    if (a.sessionExpiresAt !== undefined) s.expiresAt = s.expiresAt === null ? a.sessionExpiresAt : Math.min(s.expiresAt, a.sessionExpiresAt);
    s.current = this.#current(a, now, s.expiresAt);
    s.issued = s.issued.filter((t) => t.expiresAt > now);
    s.issued.push({ token: a.accessToken, expiresAt: now + a.expiresIn * 1000 });
  }

  /**
   * The token to present at /credentials. The broker takes only tokens whose audience includes
   * it, so a resource server that holds the agent's token cannot trade it for backend
   * credentials. A session opened for resource servers gets a second, broker-audience token.
   */
  async brokerToken(issuer: string): Promise<CurrentToken> {
    const t = await this.fresh();
    const s = this.session!;
    if (s.audience.length === 0 || s.audience.includes(issuer)) return t;
    const renewFor = this.#source.renewFor?.bind(this.#source);
    if (!renewFor) {
      throw new CordonSdkError(
        'config',
        `this session's tokens are for ${s.audience.join(', ')}, not the broker: open the session with the broker (${issuer}) among its audiences to fetch credentials`,
      );
    }
    const now = this.#clock.now();
    const b = s.brokerToken;
    if (b && now < b.refreshAt && now < b.expiresAt - 1000) return b;
    s.brokerTokenInFlight ??= renewFor(s, 'token for /credentials', { audience: [issuer] })
      .then((a) => {
        const at = this.#clock.now();
        s.brokerToken = this.#current(a, at, s.expiresAt);
        s.issued.push({ token: a.accessToken, expiresAt: at + a.expiresIn * 1000 });
        return s.brokerToken;
      })
      .catch((e: unknown) => {
        // As for the session token: a refused renewal means the session is over; a broker hiccup
        // while the cached broker token still has life left keeps that token.
        if (e instanceof CordonSdkError && e.code === 'session_ended') {
          s.ended = e;
          throw e;
        }
        if (brokerHiccup(e) && b && this.#clock.now() < b.expiresAt - 1000) return b;
        throw e;
      })
      .finally(() => {
        s.brokerTokenInFlight = undefined;
      });
    return s.brokerTokenInFlight;
  }
}
