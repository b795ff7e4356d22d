/**
 * Typed protocol errors. Decisions deep in tokens/, policy/ and providers/ throw these;
 * the HTTP layer maps them to RFC 6749 / 6750 JSON in one place and the CLI to one line.
 * `code` is the RFC error code (stable, for clients); `reason` is a stable machine tag
 * for audit rows and metrics; `description` is safe to show to the caller.
 */
export type OAuthErrorCode =
  | 'invalid_request'
  | 'invalid_client'
  | 'invalid_grant'
  | 'invalid_scope'
  | 'invalid_target'
  | 'unauthorized_client'
  | 'unsupported_grant_type'
  | 'unsupported_token_type'
  | 'access_denied'
  | 'invalid_token'
  | 'insufficient_scope'
  | 'invalid_dpop_proof'
  | 'use_dpop_nonce'
  | 'not_found'
  | 'server_error'
  | 'temporarily_unavailable'
  | 'bad_gateway';

const STATUS: Record<OAuthErrorCode, number> = {
  invalid_request: 400,
  invalid_client: 401,
  invalid_grant: 400,
  invalid_scope: 400,
  invalid_target: 400,
  unauthorized_client: 400,
  unsupported_grant_type: 400,
  unsupported_token_type: 400,
  access_denied: 403,
  invalid_token: 401,
  insufficient_scope: 403,
  invalid_dpop_proof: 400,
  use_dpop_nonce: 400,
  not_found: 404,
  server_error: 500,
  temporarily_unavailable: 503,
  bad_gateway: 502,
};

export class CordonError extends Error {
  readonly code: OAuthErrorCode;
  readonly description: string;
  readonly reason: string;
  readonly status: number;
  /** Facts the refusal's audit row should carry besides what was asked (e.g. `replay: true`). */
  readonly auditParams: Record<string, unknown> | undefined;
  constructor(
    code: OAuthErrorCode,
    description: string,
    opts: { reason?: string; status?: number; cause?: unknown; auditParams?: Record<string, unknown> } = {},
  ) {
    super(description, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'CordonError';
    this.code = code;
    this.description = description;
    this.reason = opts.reason ?? code;
    this.status = opts.status ?? STATUS[code];
    this.auditParams = opts.auditParams;
  }
  toJSON(): { error: string; error_description: string } {
    return { error: this.code, error_description: this.description };
  }
}

export const isCordonError = (e: unknown): e is CordonError => e instanceof CordonError;

/** Configuration problems stop start-up with one line naming the variable. */
export class ConfigError extends Error {
  readonly variable: string;
  constructor(variable: string, problem: string) {
    super(`${variable}: ${problem}`);
    this.name = 'ConfigError';
    this.variable = variable;
  }
}
