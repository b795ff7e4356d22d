import assert from 'node:assert/strict';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { gatewayFixture, TICKETS_KEY, type GatewayFixture } from './gateway.kit.ts';
import { auditHead, auditSince, claimsOf, mustDelegate, mustSession, register, type Agent } from './delegation.kit.ts';
import { verifyAudit } from '../src/audit/verify.ts';
import { strictestLimits } from '../src/gateway/limits.ts';
import { metricsFor } from '../src/observability/metrics.ts';
import type { Policy } from '../src/policy/types.ts';

/** The alert webhook's double: records every POST it receives. */
class WebhookDouble {
  readonly received: Array<{ method: string; headers: IncomingHttpHeaders; body: string }> = [];
  server!: Server;
  url = '';
  async start(): Promise<void> {
    this.server = createServer((req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () => {
        this.received.push({ method: req.method ?? '', headers: req.headers, body });
        res.writeHead(204).end();
      });
    });
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', () => r()));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/hooks/cordon`;
  }
  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}

const limitedPolicies = (upstreamUrl: string): Record<string, string> => ({
  'gw-limited.yaml': `
name: gw-limited
description: Calls the tickets API under limits.
token_ttl: 10m
session_ttl: 1h
scopes: [gw:tickets]
delegation:
  max_depth: 1
  scopes: [gw:tickets/read]
credentials:
  tickets-key: { provider: vault, path: secret/data/tickets/api, ttl: 10m }
upstreams:
  tickets:
    url: ${upstreamUrl}/api
    credential: tickets-key
    inject: { header: Authorization, value: "Bearer {secret.api_key}" }
    timeout: 2s
    rules:
      read: { methods: [GET], paths: ["/tickets/*", "/stream"] }
limits:
  calls_per_minute: 3
  on_denials: { count: 5, within: 1m, then: revoke_session }
`,
  'gw-watched.yaml': `
name: gw-watched
description: Alarms on refusals but is never cut off.
token_ttl: 10m
session_ttl: 1h
scopes: [gw:open]
credentials:
  tickets-key: { provider: vault, path: secret/data/tickets/api, ttl: 10m }
upstreams:
  open:
    url: ${upstreamUrl}/open
    credential: tickets-key
    inject: { header: X-Api-Key, value: "{secret.api_key}" }
    rules:
      any: { methods: [GET], paths: ["/**"] }
limits:
  on_denials: { count: 3, within: 1m }
`,
});

const policyWith = (limits: Policy['limits']): Policy => ({ limits }) as Policy;

describe('gateway limits: the strictest along the chain', () => {
  it('takes the lowest rate, and one denial rule at least as strict as each (fewest refusals, longest window, revoking if any revokes)', () => {
    assert.deepEqual(strictestLimits([policyWith({}), policyWith({})]), {});
    assert.deepEqual(
      strictestLimits([
        policyWith({ callsPerMinute: 600, onDenials: { count: 5, withinSec: 60 } }),
        policyWith({ callsPerMinute: 30 }),
        policyWith({ onDenials: { count: 10, withinSec: 300, then: 'revoke_session' } }),
      ]),
      { callsPerMinute: 30, onDenials: { count: 5, withinSec: 300, then: 'revoke_session' } },
    );
  });
});

for (const db of ['sqlite', 'postgres'] as const) {
  describe(`gateway limits (${db})`, function () {
    this.timeout(20_000);
    let f: GatewayFixture;
    let webhook: WebhookDouble;
    let limited: Agent;
    let watched: Agent;
    before(async () => {
      webhook = new WebhookDouble();
      await webhook.start();
      f = await gatewayFixture({ pg: db === 'postgres', policies: limitedPolicies, env: { CORDON_ALERT_WEBHOOK: webhook.url } });
      metricsFor(f.tb.b);
      const suffix = Math.random().toString(36).slice(2, 8);
      limited = await register(f.tb, `gw-limited-${suffix}`, 'gw-limited');
      watched = await register(f.tb, `gw-watched-${suffix}`, 'gw-watched');
    });
    after(async () => {
      await f?.stop();
      await webhook?.stop();
    });
    beforeEach(() => {
      f.upstream.received.length = 0;
      webhook.received.length = 0;
    });

    it('calls_per_minute 3: the 4th call within 60 s is 429 with Retry-After, reaches nothing, is audited; a freed slot admits again', async () => {
      const tok = await mustSession(f.tb, limited, 'gw:tickets');
      const head = await auditHead(f.tb.b);
      for (let i = 0; i < 3; i++) {
        assert.equal((await f.call(`/u/tickets/tickets/${i}`, { token: tok })).status, 200);
        f.tb.clock.advance(10_000);
      }
      const over = await f.call('/u/tickets/tickets/9', { token: tok });
      assert.equal(over.status, 429, over.text);
      assert.equal(over.headers.get('retry-after'), '30', 'the first call leaves the window 30 s from now');
      assert.equal(over.body.error, 'temporarily_unavailable');
      assert.match(over.body.error_description, /3 calls per minute/);
      assert.deepEqual(
        f.upstream.received.map((r) => r.url),
        ['/api/tickets/0', '/api/tickets/1', '/api/tickets/2'],
      );

      f.tb.clock.advance(30_000);
      assert.equal((await f.call('/u/tickets/tickets/10', { token: tok })).status, 200, 'the first call has left the window');
      const again = await f.call('/u/tickets/tickets/11', { token: tok });
      assert.equal(again.status, 429);
      assert.equal(again.headers.get('retry-after'), '10');
      f.tb.clock.advance(60_000);
      for (let i = 0; i < 3; i++) assert.equal((await f.call(`/u/tickets/tickets/${20 + i}`, { token: tok })).status, 200);
      assert.equal(f.upstream.received.length, 7);

      await f.tb.b.issuance.idle();
      const rows = (await auditSince(f.tb.b, head)).filter((x) => x.event === 'gateway.call');
      const refused = rows.filter((x) => x.decision === 'deny');
      assert.deepEqual(
        refused.map((x) => [x.params.reason_tag, x.params.retry_after, x.params.status, x.agent_id]),
        [
          ['rate_limited', 30, 429, limited.id],
          ['rate_limited', 10, 429, limited.id],
        ],
      );
      assert.equal(rows.length, 9);
    });

    it('counts the session, not the token: a sub-agent spends its root’s budget and is bound by the root policy’s limit', async () => {
      const root = await mustSession(f.tb, limited, 'gw:tickets');
      assert.equal((await f.call('/u/tickets/tickets/1', { token: root })).status, 200);
      assert.equal((await f.call('/u/tickets/tickets/2', { token: root })).status, 200);
      const sub = await mustDelegate(f.tb, limited, root, f.helper, 'gw:tickets/read');
      assert.equal((await f.call('/u/tickets/tickets/3', { token: sub })).status, 200);
      assert.equal((await f.call('/u/tickets/tickets/4', { token: sub })).status, 429);
      assert.equal((await f.call('/u/tickets/tickets/5', { token: root })).status, 429);
      assert.equal(f.upstream.received.length, 3);
      // Another session of the same agent has its own budget.
      const other = await mustSession(f.tb, limited, 'gw:tickets');
      assert.equal((await f.call('/u/tickets/tickets/6', { token: other })).status, 200);
    });

    it('5 refusals within a minute: one alarm row, one webhook POST with ids only, a metric, and the session revoked with its open stream cut', async () => {
      const tok = await mustSession(f.tb, limited, 'gw:tickets');
      const sid = claimsOf(tok).sid;
      const head = await auditHead(f.tb.b);
      const { closed, restore } = f.upstream.holdStreams();
      try {
        const stream = await fetch(`${f.gw.url}/u/tickets/stream`, { headers: { authorization: `Bearer ${tok}` } });
        assert.equal(stream.status, 200);
        const reader = stream.body!.getReader();
        assert.equal(Buffer.from((await reader.read()).value!).toString(), 'data: first\n\n');

        assert.equal((await f.call('/u/nope/x', { token: tok })).status, 404);
        f.tb.clock.advance(20_000);
        assert.equal((await f.call('/u/nope/y', { token: tok })).status, 404);
        for (const p of ['/u/tickets/admin', '/u/tickets/admin/users']) assert.equal((await f.call(p, { token: tok })).status, 403);
        assert.equal(webhook.received.length, 0, 'four refusals raise nothing');
        f.tb.clock.advance(30_000);
        // The fifth: answered only once the session is revoked, so the next call already meets the revocation.
        assert.equal((await f.call('/u/tickets/secrets', { token: tok })).status, 403);
        const next = await f.call('/u/tickets/tickets/1', { token: tok });
        assert.equal(next.status, 401);
        assert.match(next.body.error_description, /revoked/);
        await closed;
        await assert.rejects(
          (async () => {
            for (;;) if ((await reader.read()).done) throw new Error('ended without an error');
          })(),
        );
      } finally {
        restore();
      }
      assert.equal(f.upstream.received.length, 1, 'only the stream reached the upstream');

      await f.gw.context.limits.idle();
      assert.equal(webhook.received.length, 1);
      const post = webhook.received[0];
      assert.equal(post.method, 'POST');
      assert.match(String(post.headers['content-type']), /^application\/json/);
      assert.ok(!post.body.includes(tok) && !post.body.includes(TICKETS_KEY) && !post.body.includes(limited.secret), 'no token or secret in the alarm');
      const alarm = JSON.parse(post.body);
      assert.deepEqual(
        { ...alarm, at: undefined, issuer: undefined },
        {
          type: 'cordon.alarm',
          alarm: 'denial_burst',
          at: undefined,
          issuer: undefined,
          agent_id: limited.id,
          sid,
          chain: [limited.id],
          count: 5,
          within_sec: 60,
          upstream: 'tickets',
          reason_tags: ['upstream_unknown', 'no_rule'],
          action: 'revoke_session',
        },
      );

      await f.tb.b.issuance.idle();
      const rows = await auditSince(f.tb.b, head);
      const alarms = rows.filter((x) => x.event === 'alarm');
      assert.equal(alarms.length, 1);
      assert.equal(alarms[0].decision, 'info');
      assert.equal(alarms[0].agent_id, limited.id);
      assert.equal(alarms[0].sid, sid);
      assert.deepEqual(alarms[0].chain, [limited.id]);
      assert.match(alarms[0].reason ?? '', /^denial_burst: 5 refusals within 60s/);
      assert.deepEqual(alarms[0].params, {
        count: 5,
        within_sec: 60,
        upstream: 'tickets',
        reason_tags: ['upstream_unknown', 'no_rule'],
        action: 'revoke_session',
      });
      const revoke = rows.find((x) => x.event === 'revoke' && x.sid === sid);
      assert.ok(revoke, 'the session revocation is audited');
      assert.equal(revoke.params.via, 'limits');
      assert.ok(revoke.seq > alarms[0].seq, 'the alarm comes first');
      assert.ok(!JSON.stringify(rows).includes(tok), 'no token in the audit log');
      const metric = await f.tb.b.metrics!.registry.getSingleMetricAsString('cordon_gateway_alarms_total');
      assert.match(metric, /cordon_gateway_alarms_total\{action="revoke_session"\} 1\b/);
    });

    it('without `then`: one alarm per window however long the burst, another in the next window, and the session stays open', async () => {
      const tok = await mustSession(f.tb, watched, 'gw:open');
      const head = await auditHead(f.tb.b);
      for (let i = 0; i < 7; i++) assert.equal((await f.call(`/u/open/x${i}`, { token: tok, method: 'POST' })).status, 403);
      assert.equal((await f.call('/u/open/fine', { token: tok })).status, 200);
      f.tb.clock.advance(61_000);
      for (let i = 0; i < 2; i++) assert.equal((await f.call(`/u/open/y${i}`, { token: tok, method: 'POST' })).status, 403);
      await f.gw.context.limits.idle();
      assert.equal(webhook.received.length, 1, 'two refusals in the new window raise nothing yet');
      assert.equal((await f.call('/u/open/y2', { token: tok, method: 'POST' })).status, 403);
      await f.gw.context.limits.idle();
      await f.tb.b.issuance.idle();
      const alarms = (await auditSince(f.tb.b, head)).filter((x) => x.event === 'alarm');
      assert.deepEqual(
        alarms.map((x) => [x.params.action, x.params.upstream, x.params.reason_tags]),
        [
          ['alert', 'open', ['no_rule']],
          ['alert', 'open', ['no_rule']],
        ],
      );
      assert.equal(webhook.received.length, 2);
      assert.equal((await f.call('/u/open/still', { token: tok })).status, 200);
      const metric = await f.tb.b.metrics!.registry.getSingleMetricAsString('cordon_gateway_alarms_total');
      assert.match(metric, /cordon_gateway_alarms_total\{action="alert"\} 2\b/);
    });

    it('keeps no state for sessions idle past their windows', async () => {
      assert.ok(f.gw.context.limits.size > 0);
      f.tb.clock.advance(2 * 60_000);
      const tok = await mustSession(f.tb, limited, 'gw:tickets');
      assert.equal((await f.call('/u/tickets/tickets/1', { token: tok })).status, 200);
      assert.equal(f.gw.context.limits.size, 1);
    });

    it('leaves an audit chain that verifies', async () => {
      await f.tb.b.issuance.idle();
      const v = await verifyAudit(f.tb.b.db);
      assert.ok(v.ok, JSON.stringify(v));
    });
  });
}
