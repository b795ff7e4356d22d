import type { Session } from '../session.ts';
import type { Form, TokenAnswer } from '../token-answer.ts';
import type { AgentMode } from '../types.ts';

/**
 * One way for an agent to get its tokens. The token keeper and the agent ask only this; what a
 * source cannot do, it leaves out (and says why in `cannotOpen` / `cannotRenew`).
 */
export interface TokenSource {
  readonly mode: AgentMode;
  /** Opens a session for a task (POST /token with the request's form: scope, task, audience, expires_in). */
  open?(form: Form): Promise<TokenAnswer>;
  /** Why `open` is missing, for the error. */
  readonly cannotOpen?: string;
  /**
   * A new token for the session (`null`: the source's own session, not known yet). A refusal that
   * means the session is over is thrown as a `session_ended` CordonSdkError.
   */
  renew?(s: Session | null, what: string): Promise<TokenAnswer>;
  /** Why `renew` is missing: the message once the last token has expired. */
  readonly cannotRenew?: string;
  /** A token of the session for another audience or a shorter life (the broker's /credentials, revoke()). */
  renewFor?(s: Session, what: string, opts: { expiresIn?: number; audience?: string[] }): Promise<TokenAnswer>;
  /** The session the agent holds from the start (a handed-over token). */
  initialSession?(now: number): Session;
  /** The session is fetched with `renew(null)` on first use (`cordon exec`). */
  readonly startsOnFirstUse?: boolean;
  /** false: revoke() leaves ending the session to whoever holds its credential (the orchestrator, `cordon exec`). */
  readonly endsSessions: boolean;
}
