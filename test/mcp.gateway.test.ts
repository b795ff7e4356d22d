/**
 * MCP through the gateway with the official SDKs on both sides, for each protocol generation:
 * v1 servers (stateful SSE, stateless JSON) and the 2.x server (2026-07-28 and its 2025 fallback)
 * behind it; v1 and 2.x clients (2025 handshake and 2026-07-28 stateless) in front, with a
 * supplied bearer token. What the servers ran is what the tests assert on.
 */
import assert from 'node:assert/strict';
import { PIN_VERIFY_MS } from '../src/gateway/mcp/pins.ts';
import { revokeSession } from '../src/revocation/revoke.ts';
import { auditHead, auditSince, claimsOf, mustDelegate, mustSession } from './delegation.kit.ts';
import { TICKETS_KEY } from './gateway.kit.ts';
import { connectClient, mcpFixture, rawPost, UPSTREAMS, type Generation, type McpFixture } from './mcp.kit.ts';

const GRANTED = ['add_issue_comment', 'fail', 'get_issue', 'list_issues'];

describe('gateway: MCP with the official SDKs', function () {
  this.timeout(20_000);
  let f: McpFixture;
  let ownerToken: string;

  before(async () => {
    f = await mcpFixture();
    ownerToken = await mustSession(
      f.tb,
      f.mcpOwner,
      Object.values(UPSTREAMS)
        .map((u) => `gw:${u}`)
        .join(' '),
    );
  });
  after(async () => f?.stopAll());

  const combos: Array<{ server: keyof typeof UPSTREAMS; client: Generation }> = [
    { server: 'v1s', client: 'v1' },
    { server: 'v1j', client: 'v2-legacy' },
    { server: 'v2', client: 'v2-modern' },
    { server: 'v2', client: 'v1' },
  ];

  for (const { server, client } of combos) {
    describe(`${client} client → ${server} server`, () => {
      const up = (): string => UPSTREAMS[server];
      const shop = () => f.servers[server].shop;

      it('lists only the tools the policy grants and the token holds', async () => {
        const c = await connectClient(client, f.mcpUrl(up()), ownerToken);
        try {
          const { tools } = await c.client.listTools();
          assert.deepEqual(tools.map((t) => t.name).sort(), GRANTED);
        } finally {
          await c.close();
        }
      });

      it('answers an allowed call with the injected credential; the client token never reaches the server', async () => {
        const head = await auditHead(f.tb.b);
        const c = await connectClient(client, f.mcpUrl(up()), ownerToken);
        try {
          const r = await c.client.callTool({ name: 'list_issues', arguments: { repo: 'agents-web' } });
          assert.match(JSON.stringify(r.content), /issues of agents-web/);
          const ran = shop().calls.at(-1)!;
          assert.deepEqual(ran, { tool: 'list_issues', args: { repo: 'agents-web' }, authorization: `Bearer ${TICKETS_KEY}` });
          assert.ok(
            shop().requests.every((q) => !JSON.stringify(q.headers).includes(ownerToken)),
            'the client token never reached the server',
          );
          const failed = await c.client.callTool({ name: 'fail', arguments: {} });
          assert.equal(failed.isError, true);
        } finally {
          await c.close();
        }
        await f.gw.context.audit.idle();
        const rows = (await auditSince(f.tb.b, head)).filter((r) => r.event === 'mcp.call');
        assert.equal(rows.length, 2, JSON.stringify(rows));
        const [ok, failed] = rows;
        assert.equal(ok.decision, 'allow');
        assert.equal(ok.agent_id, f.mcpOwner.id);
        assert.equal(ok.sid, claimsOf(ownerToken).sid);
        assert.deepEqual(ok.chain, [f.mcpOwner.id]);
        assert.equal(ok.params.upstream, up());
        assert.equal(ok.params.tool, 'list_issues');
        assert.deepEqual(ok.params.arg_names, ['repo']);
        assert.match(ok.params.args_sha256, /^[0-9a-f]{64}$/);
        assert.equal(ok.params.outcome, 'result');
        assert.equal(ok.params.is_error, false);
        assert.match(ok.params.credential_id, /.+/);
        // Values only with audit_args: full (the v1 stateful upstream says so).
        if (server === 'v1s') assert.deepEqual(ok.params.args, { repo: 'agents-web' });
        else assert.equal(ok.params.args, undefined);
        assert.equal(failed.params.tool, 'fail');
        assert.equal(failed.params.is_error, true);
      });

      it('refuses a tool the policy does not grant with a JSON-RPC error; the server never sees it', async () => {
        const head = await auditHead(f.tb.b);
        const before = shop().requests.length;
        const c = await connectClient(client, f.mcpUrl(up()), ownerToken);
        try {
          await assert.rejects(c.client.callTool({ name: 'delete_repo', arguments: { repo: 'agents-web' } }), /delete_repo.*not granted by policy mcp-owner/);
        } finally {
          await c.close();
        }
        assert.ok(!shop().toolsCalled().includes('delete_repo'));
        assert.ok(
          shop()
            .requests.slice(before)
            .every((q) => !q.body.includes('delete_repo')),
          'no request naming the tool reached the server',
        );
        await f.gw.context.audit.idle();
        const row = (await auditSince(f.tb.b, head)).find((r) => r.event === 'mcp.call')!;
        assert.equal(row.decision, 'deny');
        assert.equal(row.params.tool, 'delete_repo');
        assert.equal(row.params.reason_tag, 'tool_not_in_policy');
        assert.equal(row.params.outcome, 'refused');
      });

      it('refuses an argument outside its glob, naming the argument; allows one inside', async () => {
        const c = await connectClient(client, f.mcpUrl(up()), ownerToken);
        const before = shop().calls.length;
        try {
          await assert.rejects(
            c.client.callTool({ name: 'add_issue_comment', arguments: { owner: 'evil', repo: 'agents-web', body: 'hi' } }),
            /argument owner of tool add_issue_comment is outside the policy's glob "acme"/,
          );
          await assert.rejects(
            c.client.callTool({ name: 'add_issue_comment', arguments: { owner: 'acme', repo: 'infra', body: 'hi' } }),
            /argument repo .*"agents-\*"/,
          );
          assert.equal(shop().calls.length, before, 'neither refused call reached the server');
          const r = await c.client.callTool({ name: 'add_issue_comment', arguments: { owner: 'acme', repo: 'agents-web', body: 'hi' } });
          assert.match(JSON.stringify(r.content), /commented/);
          assert.deepEqual(shop().calls.at(-1)!.args, { owner: 'acme', repo: 'agents-web', body: 'hi' });
        } finally {
          await c.close();
        }
      });

      it('lists and reads only the resources and prompts the policy lists', async () => {
        const c = await connectClient(client, f.mcpUrl(up()), ownerToken);
        try {
          assert.deepEqual(
            (await c.client.listResources()).resources.map((r) => r.uri),
            ['repo://acme/readme'],
          );
          assert.equal(((await c.client.readResource({ uri: 'repo://acme/readme' })).contents[0] as { text: string }).text, 'hello');
          await assert.rejects(c.client.readResource({ uri: 'repo://secret/keys' }), /resource repo:\/\/secret\/keys .*not granted/);
          assert.deepEqual(
            (await c.client.listPrompts()).prompts.map((p) => p.name),
            ['summarize'],
          );
          await assert.rejects(c.client.getPrompt({ name: 'exfiltrate' }), /prompt exfiltrate .*not granted/);
        } finally {
          await c.close();
        }
      });

      it('a delegated sub-agent sees and calls only its attenuated tools; the rest is a 403 insufficient_scope', async () => {
        const child = await mustDelegate(f.tb, f.mcpOwner, ownerToken, f.mcpHelper, `gw:${up()}/list_issues`);
        const c = await connectClient(client, f.mcpUrl(up()), child);
        try {
          assert.deepEqual(
            (await c.client.listTools()).tools.map((t) => t.name),
            ['list_issues'],
          );
          const r = await c.client.callTool({ name: 'list_issues', arguments: { repo: 'agents-x' } });
          assert.match(JSON.stringify(r.content), /agents-x/);
          const before = shop().calls.length;
          await assert.rejects(c.client.callTool({ name: 'get_issue', arguments: { repo: 'agents-x', id: 1 } }), (e: Error & { requiredScope?: string }) => {
            assert.match(`${e.message} ${e.requiredScope ?? ''}`, new RegExp(`gw:${up()}/get_issue`));
            return true;
          });
          assert.equal(shop().calls.length, before);
        } finally {
          await c.close();
        }
      });
    });
  }

  it('401 carries resource_metadata; 403 carries insufficient_scope with the scope a tool needs', async () => {
    const up = UPSTREAMS.v1j;
    const call = { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'get_issue', arguments: { repo: 'agents-x', id: 1 } } };
    const none = await rawPost(f.mcpUrl(up), undefined, call);
    assert.equal(none.status, 401);
    assert.equal(none.headers.get('www-authenticate'), `Bearer resource_metadata="${f.gw.url}/.well-known/oauth-protected-resource/mcp/${up}"`);
    const bad = await rawPost(f.mcpUrl(up), 'not.a.jwt', call);
    assert.equal(bad.status, 401);
    assert.match(bad.headers.get('www-authenticate')!, /^Bearer error="invalid_token", error_description=".*", resource_metadata=".*\/mcp\/gh-v1j"$/);
    const child = await mustDelegate(f.tb, f.mcpOwner, ownerToken, f.mcpHelper, `gw:${up}/list_issues`);
    const denied = await rawPost(f.mcpUrl(up), child, call);
    assert.equal(denied.status, 403);
    assert.equal(
      denied.headers.get('www-authenticate'),
      `Bearer error="insufficient_scope", scope="gw:${up}/get_issue", resource_metadata="${f.gw.url}/.well-known/oauth-protected-resource/mcp/${up}"`,
    );
    assert.equal(denied.json.id, 1);
    assert.equal(denied.json.error.code, -32003);
    assert.match(denied.json.error.message, /does not grant gw:gh-v1j\/get_issue/);
    // A token that reaches no part of the upstream is refused before anything is read of the exchange.
    const other = await mustDelegate(f.tb, f.mcpOwner, ownerToken, f.mcpHelper, `gw:${UPSTREAMS.v2}/list_issues`);
    const away = await rawPost(f.mcpUrl(up), other, { jsonrpc: '2.0', id: 2, method: 'tools/list' });
    assert.equal(away.status, 403);
    assert.match(away.headers.get('www-authenticate')!, /scope="gw:gh-v1j"/);
  });

  it('a call without arguments is still judged: a constrained argument must be there, of a kind a glob can match', async () => {
    const up = UPSTREAMS.v1j;
    const before = f.servers.v1j.shop.calls.length;
    const none = await rawPost(f.mcpUrl(up), ownerToken, { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'add_issue_comment' } });
    assert.equal(none.status, 200);
    assert.match(none.json.error.message, /argument owner of tool add_issue_comment is missing or not a string, number or boolean/);
    const nested = await rawPost(f.mcpUrl(up), ownerToken, {
      jsonrpc: '2.0',
      id: 2,
      method: 'tools/call',
      params: { name: 'add_issue_comment', arguments: { owner: ['acme'], repo: 'agents-x', body: 'b' } },
    });
    assert.match(nested.json.error.message, /argument owner .* missing or not a string/);
    const notObject = await rawPost(f.mcpUrl(up), ownerToken, {
      jsonrpc: '2.0',
      id: 3,
      method: 'tools/call',
      params: { name: 'add_issue_comment', arguments: 'owner=acme' },
    });
    assert.deepEqual([notObject.status, notObject.json.error.code], [200, -32602]);
    assert.equal(f.servers.v1j.shop.calls.length, before);
  });

  it("checks a pin not seen lately with its own tools/list inside the caller's MCP session (stateful v1 server)", async () => {
    f.tb.clock.advance(PIN_VERIFY_MS + 1000);
    const shop = f.servers.v1s.shop;
    const c = await connectClient('v1', f.mcpUrl(UPSTREAMS.v1s), ownerToken);
    try {
      const mark = shop.requests.length;
      const r = await c.client.callTool({ name: 'get_issue', arguments: { repo: 'agents-x', id: 5 } });
      assert.match(JSON.stringify(r.content), /issue 5/);
      const check = shop.requests.slice(mark).find((q) => q.body.includes('"tools/list"'));
      assert.ok(check, 'the gateway listed the tools first');
      assert.match(check.body, /"id":"cordon-pin-check-/);
      assert.ok(check.headers['mcp-session-id'], "in the caller's session");
      assert.equal(check.headers.authorization, `Bearer ${TICKETS_KEY}`);
      // Seen now: the next call goes straight through.
      const again = shop.requests.length;
      await c.client.callTool({ name: 'get_issue', arguments: { repo: 'agents-x', id: 6 } });
      assert.ok(shop.requests.slice(again).every((q) => !q.body.includes('"tools/list"')));
    } finally {
      await c.close();
    }
  });

  it('a revoked session is cut mid-stream and refused after', async () => {
    const tok = await mustSession(f.tb, f.mcpOwner, `gw:${UPSTREAMS.v1s}`);
    const url = f.mcpUrl(UPSTREAMS.v1s);
    const init = await rawPost(url, tok, {
      jsonrpc: '2.0',
      id: 0,
      method: 'initialize',
      params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'raw', version: '1' } },
    });
    assert.equal(init.status, 200, init.text);
    const session = init.headers.get('mcp-session-id')!;
    assert.ok(session);
    const headers = { authorization: `Bearer ${tok}`, 'mcp-session-id': session, 'mcp-protocol-version': '2025-11-25' };
    assert.equal((await rawPost(url, tok, { jsonrpc: '2.0', method: 'notifications/initialized' }, headers)).status, 202);
    const stream = await fetch(url, { headers: { ...headers, accept: 'text/event-stream' } });
    assert.equal(stream.status, 200);
    assert.match(stream.headers.get('content-type')!, /text\/event-stream/);
    const reader = stream.body!.getReader();
    const ended = (async () => {
      try {
        for (;;) if ((await reader.read()).done) return 'ended';
      } catch {
        return 'cut';
      }
    })();
    await revokeSession(f.tb.b, claimsOf(tok).sid, { actor: 'test', via: 'test' });
    assert.match(await ended, /ended|cut/);
    const after = await rawPost(url, tok, { jsonrpc: '2.0', id: 3, method: 'tools/list' }, headers);
    assert.equal(after.status, 401);
  });
});
