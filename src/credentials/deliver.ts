/**
 * Who receives a credential. `deliver: gateway` means only the gateway ever holds it (it injects it
 * into the calls it allows), so `POST /credentials` never hands it to an agent.
 *
 * Branch point for gateway keys: an aws-sts credential delivered to the gateway is to answer an
 * access key valid only at the gateway instead of this refusal; that special case belongs in
 * decide() (credentials/issue.ts), before the refusal is thrown.
 */
import { CordonError } from '../errors.ts';
import type { CredentialSpec, Policy } from '../policy/types.ts';

export const deliversToGateway = (spec: CredentialSpec): boolean => spec.deliver === 'gateway';

/** The 403 for an agent asking for a gateway-only credential, naming where to call instead (never the credential's value). */
export function gatewayOnlyRefusal(name: string, policy: Policy, gatewayUrl: string): CordonError {
  const via = Object.entries(policy.upstreams)
    .filter(([, u]) => u.credential === name)
    .map(([upstream, u]) => (u.kind === 'mcp' ? `${gatewayUrl}/mcp/${upstream}` : `${gatewayUrl}/u/${upstream}/…`));
  return new CordonError(
    'access_denied',
    `credential ${name} is delivered to the gateway only (deliver: gateway in policy ${policy.name}): call the upstream through the gateway${via.length > 0 ? ` (${via.join(' or ')})` : ` at ${gatewayUrl}`} with this token, which injects it; no agent receives it`,
    { reason: 'credential_gateway_only' },
  );
}
