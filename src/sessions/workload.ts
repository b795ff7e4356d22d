import { CordonError } from '../errors.ts';
import { TOKEN_TYPE_BOOTSTRAP, TOKEN_TYPE_JWT, WORKLOAD_CLIENT_ID } from '../protocol/constants.ts';

/** Subject token types that open a session (token exchange by a workload, no client secret needed). */
export const SESSION_OPENING_TYPES: readonly string[] = [TOKEN_TYPE_BOOTSTRAP, TOKEN_TYPE_JWT];

/** The public workload client proves nothing by itself: it may only redeem a bootstrap token or a federated JWT, whose subject names the agent. */
export function assertWorkloadMayExchange(subjectType: string): void {
  if (!SESSION_OPENING_TYPES.includes(subjectType)) {
    throw new CordonError(
      'unauthorized_client',
      `${WORKLOAD_CLIENT_ID} may only redeem a bootstrap token or a federated JWT; delegation needs an authenticated agent`,
      { reason: 'workload_subject_type' },
    );
  }
}
