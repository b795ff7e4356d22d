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
import { authenticateCall } from './authenticate.ts';
import { authoriseCall, type AuthorisedCall } from './authorise.ts';
import type { GatewayContext } from './context.ts';
import { forward, forwardableHeaders, UpstreamError } from './forward.ts';
import { injectTemplate } from './inject.ts';
import { parseCallPath, type CallPath } from './path.ts';
import type { GatewayPrincipal } from './principal.ts';
import { asCordonError, reply } from './replies.ts';

export const REVERSE_PREFIX = '/u/';
const NAME = /^[a-z0-9][a-z0-9._-]{0,63}$/;

/** The upstream's URL for this call: its base path, then the call's path as received, then the query. */
export function upstreamUrl(base: string, path: CallPath, query: URLSearchParams): URL {
  const u = new URL(base);
  u.pathname = `${u.pathname.replace(/\/+$/, '')}${path.raw}`;
  u.search = query.toString();
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
  let forwardedAt: number | undefined;
  const abort = new AbortController();
  try {
    if (!NAME.test(name))
      throw new CordonError('not_found', 'unknown upstream: /u/{upstream}/{path} names an upstream of your policy', { reason: 'upstream_unknown' });
    const path = parseCallPath(slash < 0 ? '' : rest.slice(slash));
    const p = await authenticateCall(g, req, `${REVERSE_PREFIX}${name}${path.raw}`, attempt);
    if (!g.audit.healthy)
      throw new CordonError('temporarily_unavailable', 'the gateway cannot write its audit log right now; try again shortly', { reason: 'audit_unavailable' });
    const call = authoriseCall(p, name, method, path);
    facts.rule = call.rule;
    const headers = forwardableHeaders(req.headers);
    const query = new URLSearchParams(path.query);
    await inject(g, p, call, headers, query, attempt, facts);
    untrack = g.open.track(p, 'call', name, () => abort.abort());
    forwardedAt = performance.now();
    const r = await forward(
      {
        url: upstreamUrl(call.upstream.url, path, query),
        method,
        headers,
        body: method === 'GET' || method === 'HEAD' ? null : req,
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
    // An unread request body would be taken for the next request on this connection.
    reply(res, e, req.complete ? {} : { connection: 'close' });
    Object.assign(facts, { status: e.status, duration_ms: Math.round(performance.now() - started) });
    // An upstream that failed an allowed call is not a refusal of the caller.
    const decision = e instanceof UpstreamError ? 'allow' : 'deny';
    g.audit.call('gateway.call', attempt, decision, { ...facts }, e);
    const upstreamSeconds = decision === 'allow' && forwardedAt !== undefined ? (performance.now() - forwardedAt) / 1000 : undefined;
    g.observe({ upstream: name, decision, status: e.status, reason: e.reason, upstreamSeconds });
  } finally {
    untrack?.();
  }
}

/** The upstream's credential into the call, as its policy says (nothing when it names none). */
async function inject(
  g: GatewayContext,
  p: GatewayPrincipal,
  call: AuthorisedCall,
  headers: Record<string, string>,
  query: URLSearchParams,
  attempt: Attempt,
  facts: CallFacts,
): Promise<void> {
  const { upstream } = call;
  if (!upstream.credential || !upstream.inject) return;
  const held = await g.secrets.get(p, upstream.credential, attempt);
  facts.credential_id = held.credentialId;
  if ('aws_sigv4' in upstream.inject) throw new CordonError('server_error', 'SigV4 signing is not wired into this gateway', { reason: 'sigv4_unwired' });
  injectTemplate(upstream.inject, held.values, headers, query);
}
