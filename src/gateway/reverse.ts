/**
 * Reverse mode, `ANY /u/{upstream}/{path}`: the filter chain of one call. Each step does one
 * thing and refuses by throwing; the chain ends in exactly one audit row, allowed or refused.
 *
 *   parse path → authenticate → authorise (upstream, rule, scope) → admit (limits)
 *   → inject (the upstream's credential) → forward (stream both ways) → audit
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { Attempt } from '../audit/attempt.ts';
import { clientAddressOf } from '../audit/refusal-limiter.ts';
import { CordonError } from '../errors.ts';
import { NAME_PATTERN } from '../policy/schema.ts';
import { authenticateCall } from './authenticate.ts';
import { authoriseCall, type AuthorisedCall } from './authorise.ts';
import type { GatewayContext } from './context.ts';
import { forward, forwardableHeaders, readBody, UpstreamError } from './forward.ts';
import { injectTemplate } from './inject.ts';
import { parseCallPath, type CallPath } from './path.ts';
import type { GatewayPrincipal } from './principal.ts';
import { asCordonError, reply } from './replies.ts';
import { authenticateGatewayKeys, signForUpstream, sigv4BodyCap } from './aws.ts';
import { hasSigV4 } from './sigv4.ts';

export const REVERSE_PREFIX = '/u/';

/** The upstream's URL for this call: its base path, then the call's path as received, then the query. */
export function upstreamUrl(base: string, path: CallPath): URL {
  const u = new URL(base);
  u.pathname = `${u.pathname.replace(/\/+$/, '')}${path.raw}`;
  // As received: re-encoding a query can change what some APIs read from it.
  u.search = path.query;
  return u;
}

/** What the audit row says about the call, filled in step by step. */
interface CallFacts {
  upstream: string;
  method: string;
  path: string;
  rule?: string;
  status?: number;
  bytes_in?: number;
  bytes_out?: number;
  duration_ms?: number;
  credential_id?: string;
}

export async function handleReverse(g: GatewayContext, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const started = performance.now();
  const attempt = new Attempt('gateway.call', clientAddressOf(req.socket.remoteAddress));
  const rest = (req.url ?? '').slice(REVERSE_PREFIX.length);
  const slash = rest.indexOf('/');
  const name = slash < 0 ? rest.split('?')[0] : rest.slice(0, slash);
  const method = (req.method ?? 'GET').toUpperCase();
  const facts: CallFacts = { upstream: name.slice(0, 64), method, path: (slash < 0 ? '/' : rest.slice(slash).split('?')[0]).slice(0, 512) };
  let untrack: (() => void) | undefined;
  let p: GatewayPrincipal | undefined;
  let forwardedAt: number | undefined;
  const abort = new AbortController();
  try {
    if (!NAME_PATTERN.test(name))
      throw new CordonError('not_found', 'unknown upstream: /u/{upstream}/{path} names an upstream of your policy', { reason: 'upstream_unknown' });
    const path = parseCallPath(slash < 0 ? '' : rest.slice(slash));
    // An AWS SDK signs with gateway keys, and its signature covers the body: read it first.
    const viaKeys = hasSigV4({ url: req.url ?? '', headers: req.headers });
    let body = viaKeys && method !== 'GET' && method !== 'HEAD' ? await readBody(req, sigv4BodyCap(g)) : undefined;
    p = viaKeys
      ? await authenticateGatewayKeys(g, req, body ?? Buffer.alloc(0), attempt)
      : await authenticateCall(g, req, `${REVERSE_PREFIX}${name}${path.raw}`, attempt);
    if (!g.audit.healthy)
      throw new CordonError('temporarily_unavailable', 'the gateway cannot write its audit log right now; try again shortly', { reason: 'audit_unavailable' });
    const call = authoriseCall(p, name, method, path);
    facts.rule = call.rule;
    const sigv4 = call.upstream.inject !== undefined && 'aws_sigv4' in call.upstream.inject;
    if (viaKeys && !sigv4)
      throw new CordonError('invalid_token', `gateway keys are for AWS upstreams; ${name} takes a bearer token`, { reason: 'gateway_keys_misused' });
    g.limits.admit(p);
    if (sigv4 && body === undefined && method !== 'GET' && method !== 'HEAD') body = await readBody(req, call.upstream.maxBodyBytes);
    if (body && body.length > call.upstream.maxBodyBytes)
      throw new CordonError('invalid_request', `request body is larger than ${call.upstream.maxBodyBytes} bytes`, { reason: 'body_too_large', status: 413 });
    const url = upstreamUrl(call.upstream.url, path);
    const headers = await inject(g, p, call, { method, url, headers: forwardableHeaders(req.headers), body }, attempt, facts);
    untrack = g.open.track(p, 'call', name, () => abort.abort());
    forwardedAt = performance.now();
    const r = await forward(
      {
        url,
        method,
        headers,
        body: body ?? (method === 'GET' || method === 'HEAD' ? null : req),
        maxBodyBytes: call.upstream.maxBodyBytes,
        timeoutMs: call.upstream.timeoutSec * 1000,
        signal: abort.signal,
        dispatcher: g.dispatcher,
      },
      res,
    );
    Object.assign(facts, { status: r.status, bytes_in: r.bytesIn, bytes_out: r.bytesOut, duration_ms: Math.round(performance.now() - started) });
    g.audit.call('gateway.call', attempt, 'allow', { ...facts });
    g.observe({ upstream: name, decision: 'allow', status: r.status, upstreamSeconds: r.upstreamSeconds });
  } catch (err) {
    const e = asCordonError(err);
    if (e.code === 'server_error') g.b.log.error({ err: (err as Error)?.message, upstream: facts.upstream }, 'gateway call failed');
    Object.assign(facts, { status: e.status, duration_ms: Math.round(performance.now() - started) });
    // An upstream that failed an allowed call is not a refusal of the caller.
    const refused = !(e instanceof UpstreamError);
    g.audit.call('gateway.call', attempt, refused ? 'deny' : 'allow', { ...facts }, e);
    const upstreamSeconds = !refused && forwardedAt !== undefined ? (performance.now() - forwardedAt) / 1000 : undefined;
    g.observe({ upstream: name, decision: refused ? 'deny' : 'allow', status: e.status, reason: e.reason, upstreamSeconds });
    // A burst of refusals may revoke the session: done before answering, so the agent's next call already meets it.
    if (refused && p) await g.limits.denied(p, e, facts.upstream);
    // An unread request body would be taken for the next request on this connection.
    reply(res, e, req.complete ? {} : { connection: 'close' });
  } finally {
    untrack?.();
  }
}

/** The upstream's credential into the call, as its policy says (nothing when it names none); returns the headers to send. */
async function inject(
  g: GatewayContext,
  p: GatewayPrincipal,
  call: AuthorisedCall,
  out: { method: string; url: URL; headers: Record<string, string>; body: Buffer | undefined },
  attempt: Attempt,
  facts: CallFacts,
): Promise<Record<string, string>> {
  const { upstream } = call;
  if (!upstream.credential || !upstream.inject) return out.headers;
  const held = await g.secrets.get(p, upstream.credential, attempt);
  facts.credential_id = held.credentialId;
  const inj = upstream.inject;
  if ('aws_sigv4' in inj) return signForUpstream({ ...upstream, inject: inj }, held.values, out);
  const query = new URLSearchParams(out.url.search);
  injectTemplate(inj, held.values, out.headers, query);
  out.url.search = query.toString();
  return out.headers;
}
