/**
 * `ANY /mcp/{upstream}`: an MCP-aware proxy for `kind: mcp` upstreams over Streamable HTTP (2025
 * revisions with `initialize` and `Mcp-Session-Id`, GET for the server's stream and DELETE to end
 * it; 2026-07-28 stateless with its standard headers). The filter chain of one exchange:
 *
 *   Origin → authenticate → upstream of the root policy → session id → read and parse the message
 *   → headers agree with it → judge it (judge-request.ts) → admit (limits) → inject → forward
 *   → relay the answer, lists filtered (relay.ts) → audit
 *
 * Every `tools/call`, allowed or refused, and every refused request is one `mcp.call` row.
 */
import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { Attempt } from '../../audit/attempt.ts';
import { clientAddressOf } from '../../audit/refusal-limiter.ts';
import { CordonError } from '../../errors.ts';
import { NAME_PATTERN } from '../../policy/schema.ts';
import { authenticateCall } from '../authenticate.ts';
import { upstreamFor } from '../authorise.ts';
import type { GatewayContext } from '../context.ts';
import { readBody, UpstreamError } from '../forward.ts';
import type { GatewayPrincipal } from '../principal.ts';
import { asCordonError } from '../replies.ts';
import { answerFacts, toolCallFacts } from './call-facts.ts';
import { isJudged, judgeClientMessage } from './judge-request.ts';
import { reachesUpstream } from './judge.ts';
import type { Witness } from './pins.ts';
import { relayAnswer } from './relay.ts';
import { MCP_PREFIX, mcpResourceUrl, replyMcp } from './replies.ts';
import { mcpStateOf } from './state.ts';
import { ask, send, targetFor, type UpstreamTarget } from './upstream.ts';
import { checkStandardHeaders, parseClientMessage, type ClientMessage, type JsonRpcId } from './wire.ts';

const METHODS = new Set(['GET', 'POST', 'DELETE']);

/** DNS rebinding: a browser page of another site must not reach the gateway. No Origin (an agent, a CLI) or the gateway's own passes. */
function checkOrigin(g: GatewayContext, req: IncomingMessage): void {
  const origin = req.headers.origin;
  if (origin === undefined) return;
  if (origin === new URL(g.url).origin) return;
  throw new CordonError(
    'access_denied',
    `requests from origin ${JSON.stringify(origin.slice(0, 100))} are refused (only the gateway's own origin may call it)`,
    {
      reason: 'mcp_origin_refused',
      status: 403,
    },
  );
}

/** The 2026-07-28 envelope of the caller's request, for a request the gateway sends in its exchange. */
function envelopeOf(m: ClientMessage): Record<string, unknown> | undefined {
  const meta = m.kind === 'response' ? undefined : m.params?._meta;
  if (meta === null || typeof meta !== 'object' || Array.isArray(meta)) return undefined;
  const out = Object.fromEntries(Object.entries(meta).filter(([k]) => k.startsWith('io.modelcontextprotocol/')));
  return Object.keys(out).length ? out : undefined;
}

export async function handleMcp(g: GatewayContext, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const started = performance.now();
  const attempt = new Attempt('mcp.call', clientAddressOf(req.socket.remoteAddress));
  const state = mcpStateOf(g);
  const name = (req.url ?? '').slice(MCP_PREFIX.length).split('?')[0];
  const httpMethod = (req.method ?? 'GET').toUpperCase();
  const facts: Record<string, unknown> = { upstream: name.slice(0, 64), http_method: httpMethod.slice(0, 16) };
  const abort = new AbortController();
  const cleanup: Array<() => void> = [];
  let p: GatewayPrincipal | undefined;
  let id: JsonRpcId | null = null;
  let toolCall = false;
  let forwardedAt: number | undefined;
  try {
    checkOrigin(g, req);
    if (!NAME_PATTERN.test(name))
      throw new CordonError('not_found', 'unknown MCP upstream: call /mcp/{upstream}, an MCP upstream of your policy', { reason: 'upstream_unknown' });
    if (!METHODS.has(httpMethod))
      throw new CordonError('invalid_request', `${httpMethod.slice(0, 16)} is not part of MCP Streamable HTTP (GET, POST, DELETE)`, {
        reason: 'mcp_http_method',
        status: 405,
      });
    p = await authenticateCall(g, req, `${MCP_PREFIX}${name}`, attempt, mcpResourceUrl(g.url, name));
    const principal = p;
    if (!g.audit.healthy)
      throw new CordonError('temporarily_unavailable', 'the gateway cannot write its audit log right now; try again shortly', { reason: 'audit_unavailable' });
    const upstream = upstreamFor(p, name, 'mcp');
    if (!reachesUpstream(p, name, upstream))
      throw new CordonError('insufficient_scope', `token scope does not grant gw:${name} or any of its tools`, {
        reason: 'gw_not_in_scope',
        auditParams: { scope_needed: `gw:${name}` },
      });
    const given = req.headers['mcp-session-id'];
    const givenSession = Array.isArray(given) ? given[0] : given;
    const session = givenSession === undefined ? undefined : state.sessionIds.unwrap(p, name, givenSession);
    if (givenSession !== undefined && session === undefined)
      throw new CordonError('not_found', 'unknown MCP session for this agent and session: start a new one (initialize)', { reason: 'mcp_session_unknown' });

    let message: ClientMessage | undefined;
    let body: Buffer | null = null;
    if (httpMethod === 'POST') {
      body = await readBody(req, upstream.maxBodyBytes);
      message = parseClientMessage(body);
      facts.rpc_method = message.kind === 'response' ? 'response' : message.method.slice(0, 100);
      if (message.kind === 'request') {
        id = message.id;
        if (message.method === 'tools/call') {
          toolCall = true;
          Object.assign(facts, toolCallFacts(upstream, message.params));
        }
        if (givenSession !== undefined) cleanup.push(state.claimId(givenSession, message.id));
      }
      checkStandardHeaders(req.headers, message);
    }
    const witness: Witness = { agentId: p.claims.client_id, sid: p.view.sid, jti: p.view.jti, chain: p.chain, via: 'gateway' };
    let target: UpstreamTarget | undefined;
    const targetOnce = async (): Promise<UpstreamTarget> => (target ??= await targetFor(g, principal, upstream, req, attempt, session));
    const timeoutMs = upstream.timeoutSec * 1000;
    if (message) {
      const envelope = envelopeOf(message);
      await judgeClientMessage(
        {
          p,
          name,
          upstream,
          pins: state.pins,
          witness,
          listTools: async (cursor) =>
            ask(
              g,
              await targetOnce(),
              {
                id: `cordon-pin-check-${randomUUID()}`,
                method: 'tools/list',
                ...(cursor !== undefined || envelope
                  ? { params: { ...(cursor !== undefined ? { cursor } : {}), ...(envelope ? { _meta: envelope } : {}) } }
                  : {}),
              },
              timeoutMs,
              abort.signal,
            ),
        },
        message,
      );
      if (message.kind !== 'response' && isJudged(message)) body = Buffer.from(JSON.stringify(message.parsed));
    }
    g.limits.admit(p);
    const t = await targetOnce();
    if (t.credentialId) facts.credential_id = t.credentialId;
    cleanup.push(g.open.track(p, 'call', name, () => abort.abort()));
    // No stream outlives the token it was opened with.
    const expiry = setTimeout(() => abort.abort(), Math.max(0, p.expiresAt - g.b.clock.now()));
    expiry.unref();
    cleanup.push(() => clearTimeout(expiry));
    forwardedAt = performance.now();
    const sent = await send(g, t, httpMethod, body, timeoutMs, abort.signal);
    let answer: Record<string, unknown> | undefined;
    const relayed = await relayAnswer(
      sent,
      res,
      {
        p,
        name,
        upstream,
        pins: state.pins,
        witness,
        ...(message?.kind === 'request' ? { request: { id: message.id, method: message.method } } : {}),
        onAnswer: (a) => void (answer ??= a),
      },
      (upstreamId) => state.sessionIds.wrap(principal, name, upstreamId),
    );
    Object.assign(facts, {
      status: relayed.status,
      bytes_in: body?.length ?? 0,
      bytes_out: relayed.bytesOut,
      duration_ms: Math.round(performance.now() - started),
    });
    if (toolCall) {
      Object.assign(facts, answer ? answerFacts(answer) : { outcome: relayed.cut ? 'cut' : 'no_result', is_error: null });
      g.audit.call('mcp.call', attempt, 'allow', facts);
    }
    g.observe({ upstream: name, decision: 'allow', status: relayed.status, upstreamSeconds: sent.upstreamSeconds });
  } catch (err) {
    const e = asCordonError(err);
    if (e.code === 'server_error') g.b.log.error({ err: (err as Error)?.message, upstream: facts.upstream }, 'MCP exchange failed');
    // An upstream that failed an allowed exchange is not a refusal of the caller.
    const refused = !(e instanceof UpstreamError);
    Object.assign(facts, { status: e.status, duration_ms: Math.round(performance.now() - started), outcome: refused ? 'refused' : 'failed' });
    if (refused || toolCall) g.audit.call('mcp.call', attempt, refused ? 'deny' : 'allow', { ...facts }, e);
    const upstreamSeconds = !refused && forwardedAt !== undefined ? (performance.now() - forwardedAt) / 1000 : undefined;
    g.observe({ upstream: name, decision: refused ? 'deny' : 'allow', status: e.status, reason: e.reason, upstreamSeconds });
    if (refused && p) await g.limits.denied(p, e, NAME_PATTERN.test(name) ? name : undefined);
    // An unread request body would be taken for the next request on this connection.
    replyMcp(res, g.url, NAME_PATTERN.test(name) ? name : undefined, e, id, {
      ...(req.complete ? {} : { connection: 'close' }),
      ...(e.reason === 'mcp_http_method' ? { allow: 'GET, POST, DELETE' } : {}),
    });
  } finally {
    for (const f of cleanup) f();
  }
}
