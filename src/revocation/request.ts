import { CordonError } from '../errors.ts';
import { WORKLOAD_CLIENT_ID } from '../protocol/constants.ts';

/**
 * Does this /revoke request come from the public workload client? Secretless agents (bootstrap,
 * federation) revoke as `cordon-workload` with no credentials at all: possession of the token is
 * the proof (RFC 7009 §5), and revokeByHolder limits what that proves. Presenting any credential
 * means the caller authenticates as an agent instead.
 */
export function revokesAsWorkload(request: { clientId: string | undefined; presentsCredentials: boolean }): boolean {
  return request.clientId === WORKLOAD_CLIENT_ID && !request.presentsCredentials;
}

/**
 * The options of a /revoke request: only access tokens are issued by this broker, and Cordon's
 * extension `end_session=true` ends the token's whole session (the opener only, see revokeByHolder).
 */
export function revocationOptions(request: { tokenTypeHint: string | undefined; endSession: string | undefined }): { endSession: boolean } {
  const { tokenTypeHint, endSession } = request;
  if (tokenTypeHint !== undefined && tokenTypeHint !== 'access_token')
    throw new CordonError('unsupported_token_type', 'only access tokens are issued by this broker');
  if (endSession !== undefined && endSession !== 'true' && endSession !== 'false')
    throw new CordonError('invalid_request', 'end_session must be true or false');
  return { endSession: endSession === 'true' };
}
