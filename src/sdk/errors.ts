/**
 * Errors the SDK raises. `code` is stable and meant for programs; the message is for people.
 *
 * - `network`        the broker could not be reached (refused, reset, timeout, DNS).
 * - `bad_response`   the broker answered something that is not what the protocol says
 *                    (an HTML error page, truncated JSON, a token response without a token, …).
 * - `oauth`          the broker refused with an RFC 6749 error (`error`, `error_description`).
 * - `session_ended`  the session has reached its end or was revoked; open a new one.
 * - `no_session`     `token()` and friends were called before `startSession()`.
 * - `config`         the agent is missing something it needs (issuer, credentials, key file).
 * - `closed`         the agent was closed.
 * - `unsupported`    the call does not fit the credential (e.g. an AWS provider for a Vault credential).
 */
export type CordonSdkErrorCode = 'network' | 'bad_response' | 'oauth' | 'session_ended' | 'no_session' | 'config' | 'closed' | 'unsupported';

export class CordonSdkError extends Error {
  readonly code: CordonSdkErrorCode;
  /** RFC 6749 error code when `code` is `oauth` (or the refusal that ended a session). */
  readonly error?: string;
  readonly error_description?: string;
  /** HTTP status of the answer that caused the error, when there was one. */
  readonly status?: number;
  constructor(code: CordonSdkErrorCode, message: string, opts: { error?: string; error_description?: string; status?: number; cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'CordonSdkError';
    this.code = code;
    if (opts.error !== undefined) this.error = opts.error;
    if (opts.error_description !== undefined) this.error_description = opts.error_description;
    if (opts.status !== undefined) this.status = opts.status;
  }
}

export const isCordonSdkError = (e: unknown, code?: CordonSdkErrorCode): e is CordonSdkError =>
  e instanceof CordonSdkError && (code === undefined || e.code === code);
