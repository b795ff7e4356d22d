/**
 * The gateway's AWS steps. Authenticate: a request signed with gateway keys (an AWS SDK pointed at
 * `/u/{upstream}`) is verified with the key's secret, which exists only while the token it names
 * is live. Inject: the call is re-signed for the real endpoint with the session's STS keys. Both
 * need the body whole (its hash is signed), so bodies of SigV4 upstreams are buffered, capped.
 */
import type { IncomingMessage } from 'node:http';
import type { Attempt } from '../audit/attempt.ts';
import { CordonError } from '../errors.ts';
import { gatewayKeySecret, parseGatewayKeyId } from '../keys/gateway-keys.ts';
import type { Upstream } from '../policy/types.ts';
import type { GatewayContext } from './context.ts';
import type { GatewayPrincipal } from './principal.ts';
import { resign, verifyIncoming } from './sigv4.ts';

/** The largest body any SigV4 upstream of any loaded policy accepts: the cap for buffering before the upstream is known. */
export function sigv4BodyCap(g: GatewayContext): number {
  let cap = 0;
  for (const p of g.b.policies.list()) for (const u of Object.values(p.upstreams)) if (u.inject && 'aws_sigv4' in u.inject) cap = Math.max(cap, u.maxBodyBytes);
  return cap;
}

/** A request signed with gateway keys: verified against the live token the key id names. */
export async function authenticateGatewayKeys(g: GatewayContext, req: IncomingMessage, body: Buffer, attempt: Attempt): Promise<GatewayPrincipal> {
  let principal: GatewayPrincipal | undefined;
  let refusal: CordonError | undefined;
  await verifyIncoming(
    { method: req.method ?? 'GET', url: req.url ?? '/', headers: req.headers, body },
    async (akid) => {
      const jti = parseGatewayKeyId(akid);
      if (!jti) return undefined;
      try {
        principal = await g.tokens.withPolicies(await g.tokens.check(jti));
      } catch (e) {
        // The key is authentic only if its token lives; say why it does not (after the signature check fails on it).
        refusal = e instanceof CordonError ? e : undefined;
        return undefined;
      }
      attempt.by(principal.claims.client_id, principal.chain).in(principal.view.sid, principal.view.jti);
      return gatewayKeySecret(g.b.secretHashKey, akid);
    },
    g.b.clock,
  ).catch((e: unknown) => {
    throw refusal && e instanceof CordonError && e.reason === 'sigv4_unknown_key'
      ? new CordonError('invalid_token', `gateway key refused: ${refusal.description}`, { reason: refusal.reason })
      : e;
  });
  return principal!;
}

/** Signs the call for the upstream with the session's STS keys; returns the headers to send. */
export async function signForUpstream(
  upstream: Upstream & { inject: { aws_sigv4: { service: string; region: string } } },
  values: Record<string, unknown>,
  call: { method: string; url: URL; headers: Record<string, string>; body: Buffer | undefined },
): Promise<Record<string, string>> {
  const { AccessKeyId, SecretAccessKey, SessionToken } = values;
  if (typeof AccessKeyId !== 'string' || typeof SecretAccessKey !== 'string')
    throw new CordonError('bad_gateway', "the upstream's credential holds no AWS keys to sign with", { reason: 'inject_field_missing' });
  return resign(
    { method: call.method, url: `${call.url.pathname}${call.url.search}`, headers: call.headers, body: call.body },
    { accessKeyId: AccessKeyId, secretAccessKey: SecretAccessKey, ...(typeof SessionToken === 'string' ? { sessionToken: SessionToken } : {}) },
    { ...upstream.inject.aws_sigv4, host: call.url.host },
  );
}
