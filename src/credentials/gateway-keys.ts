/**
 * `POST /credentials/NAME` for an aws-sts credential with `deliver: gateway`: the agent gets
 * gateway keys (keys/gateway-keys.ts), never the STS keys. They open nothing but the gateway, which
 * maps the key id to the token's jti and judges that token on every call: the keys work exactly as
 * long as the token (its exp, its revocation, its session) and no longer. No backend is called and
 * nothing is recorded but the audit row: the keys are recomputed, not stored.
 */
import type { Broker } from '../broker.ts';
import { appendAudit } from '../store/audit-chain.ts';
import { transact } from '../store/db.ts';
import { mintGatewayKeys } from '../keys/gateway-keys.ts';
import { NAME_PATTERN } from '../policy/schema.ts';
import { covers, parseScope } from '../policy/scopes.ts';
import type { AccessTokenClaims } from '../tokens/claims.ts';
import type { TokenView } from '../tokens/verify.ts';
import type { CredentialResponse } from './issue.ts';

export interface GatewayKeysResponse extends CredentialResponse {
  provider: 'aws-sts';
  credentials: { AccessKeyId: string; SecretAccessKey: string; Expiration: string };
  gateway: true;
}

/**
 * Gateway keys when `name` is an aws-sts `deliver: gateway` credential this token may have;
 * undefined otherwise, and then issueCredential's own checks decide (and name any refusal: scope,
 * policy, provider). The token has been found active, its audience and DPoP proof checked.
 */
export async function issueGatewayKeys(
  b: Broker,
  name: string,
  claims: AccessTokenClaims,
  view: TokenView,
  chain: string[],
): Promise<GatewayKeysResponse | undefined> {
  if (typeof name !== 'string' || !NAME_PATTERN.test(name)) return undefined;
  const policy = b.policies.get(view.rootPolicy);
  const spec = policy && Object.hasOwn(policy.credentials, name) ? policy.credentials[name] : undefined;
  if (spec?.provider !== 'aws-sts' || spec.deliver !== 'gateway') return undefined;
  if (!covers(parseScope(view.scope), `cred:${name}`)) return undefined;
  // Without STS the gateway could not re-sign: let the common checks refuse (aws-sts_off).
  if (!b.providers.get('aws-sts')) return undefined;

  const expiresAt = Math.min(view.expiresAt, claims.exp * 1000, view.sessionExpiresAt);
  const keys = mintGatewayKeys(b.secretHashKey, view.jti);
  const expiration = new Date(expiresAt).toISOString();
  await transact(b.db, (tx) =>
    appendAudit(tx, {
      at: b.clock.now(),
      event: 'credential.issue',
      decision: 'allow',
      agentId: claims.client_id,
      sid: claims.sid,
      jti: claims.jti,
      chain,
      // The key id names the token (it is not secret); the secret never leaves the reply.
      params: { name, provider: 'aws-sts', gateway_keys: true, access_key_id: keys.accessKeyId },
    }),
  );
  for (const f of b.hooks.onDecision) f('credential.issue', 'allow', null);
  return {
    name,
    provider: 'aws-sts',
    expires_at: expiration,
    credentials: { AccessKeyId: keys.accessKeyId, SecretAccessKey: keys.secretAccessKey, Expiration: expiration },
    gateway: true,
  };
}
