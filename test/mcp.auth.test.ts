/**
 * MCP authorization at the gateway and the broker: RFC 9728 metadata per MCP upstream, RFC 8707
 * `resource={gateway}/mcp/{upstream}` at /token (session start, renewal, delegation), and a token
 * for one MCP upstream admitted on that upstream's route only.
 */
import assert from 'node:assert/strict';
import { discoverOAuthProtectedResourceMetadata } from '@modelcontextprotocol/client';
import { Attempt } from '../src/audit/attempt.ts';
import { audienceAllows, mcpResourceOf, principalOfToken } from '../src/gateway/authenticate.ts';
import { mcpMetadataUrl } from '../src/gateway/mcp-metadata.ts';
import { CordonError } from '../src/errors.ts';
import { claimsOf, delegateReq, mustDelegate, mustSession, session } from './delegation.kit.ts';
import { mcpAuthFixture, type McpAuthFixture } from './mcp-auth.kit.ts';

describe('MCP authorization: protected-resource metadata and resource-bound tokens', () => {
  let f: McpAuthFixture;
  let github: string;
  before(async () => {
    f = await mcpAuthFixture();
    github = `${f.gatewayUrl}/mcp/github`;
  });
  after(async () => f.stop());

  const get = async (path: string, init: RequestInit = {}) => {
    const r = await fetch(`${f.gatewayUrl}${path}`, init);
    const text = await r.text();
    return { status: r.status, headers: r.headers, text, body: text ? JSON.parse(text) : undefined };
  };
  const maxSeq = async (): Promise<number> => Number((await f.tb.b.db('audit').max({ m: 'seq' }).first())?.m ?? 0);
  const denialsAfter = async (seq: number) => f.tb.b.db('audit').where('seq', '>', seq).andWhere({ decision: 'deny' }).orderBy('seq');
  const aud = (jwt: string): string[] => [claimsOf(jwt).aud].flat();

  describe('GET /.well-known/oauth-protected-resource/mcp/{upstream}', () => {
    it('describes an MCP upstream: its resource URL, the broker as authorization server, the scopes reaching it from every policy', async () => {
      const r = await get('/.well-known/oauth-protected-resource/mcp/github');
      assert.equal(r.status, 200, r.text);
      assert.match(r.headers.get('content-type') ?? '', /^application\/json/);
      assert.equal(r.headers.get('access-control-allow-origin'), '*');
      assert.deepEqual(r.body.resource, github);
      assert.deepEqual(r.body.authorization_servers, [f.tb.b.config.issuer]);
      assert.deepEqual(r.body.scopes_supported, ['gw:github', 'gw:github/add_issue_comment', 'gw:github/get_issue', 'gw:github/list_issues']);
      assert.deepEqual(r.body.bearer_methods_supported, ['header']);
      assert.ok(Array.isArray(r.body.dpop_signing_alg_values_supported));
      assert.equal(mcpMetadataUrl(f.gatewayUrl, 'github'), `${f.gatewayUrl}/.well-known/oauth-protected-resource/mcp/github`);
      // Nothing of a credential: no URL of the upstream, no credential name.
      assert.doesNotMatch(r.text, /127\.0\.0\.1:9|pat|secret/);
    });

    it("the official SDK's discovery finds it from the MCP server URL alone (RFC 9728 path-aware well-known)", async () => {
      const m = await discoverOAuthProtectedResourceMetadata(github);
      assert.equal(m.resource, github);
      assert.deepEqual(m.authorization_servers, [f.tb.b.config.issuer]);
    });

    it('HEAD answers the headers only', async () => {
      const r = await get('/.well-known/oauth-protected-resource/mcp/docs', { method: 'HEAD' });
      assert.equal(r.status, 200);
      assert.equal(r.text, '');
    });

    it('404 JSON for an http upstream, an unknown name, a malformed name or the bare prefix; 405 for other methods', async () => {
      for (const name of ['tickets', 'nope', '..%2fgithub', 'GitHub', 'github/extra', '']) {
        const r = await get(`/.well-known/oauth-protected-resource/mcp/${name}`);
        assert.equal(r.status, 404, name);
        assert.equal(r.body.error, 'not_found', name);
      }
      const r = await get('/.well-known/oauth-protected-resource/mcp/github', { method: 'POST' });
      assert.equal(r.status, 405);
      assert.equal(r.headers.get('allow'), 'GET, HEAD');
      assert.equal(r.body.error, 'invalid_request');
    });
  });

  describe('/token with resource={gateway}/mcp/{upstream}', () => {
    it('client_credentials: the token is for that resource only, and its renewal in the session keeps it', async () => {
      const r = await session(f.tb, f.owner, 'gw:github/list_issues', { resource: github });
      assert.equal(r.status, 200, JSON.stringify(r.body));
      assert.deepEqual(aud(r.body.access_token), [github]);
      const renewed = await session(f.tb, f.owner, 'gw:github/list_issues', { resource: github, session: r.body.sid });
      assert.equal(renewed.status, 200, JSON.stringify(renewed.body));
      assert.deepEqual(aud(renewed.body.access_token), [github]);
      // Asked with `audience` (RFC 8693 spelling) and beside the broker, it is held too.
      const both = await session(f.tb, f.owner, 'gw:github', { audience: [github, f.tb.b.config.issuer] });
      assert.equal(both.status, 200, JSON.stringify(both.body));
      assert.deepEqual(aud(both.body.access_token).sort(), [f.tb.b.config.issuer, github].sort());
    });

    it('refused with invalid_target, and audited, when the root policy defines no such MCP upstream', async () => {
      const cases: Array<[string, RegExp]> = [
        [`${f.gatewayUrl}/mcp/tickets`, /no MCP upstream of policy mcp-owner/], // an http upstream
        [`${f.gatewayUrl}/mcp/docs`, /no MCP upstream of policy mcp-owner/], // another policy's
        [`${f.gatewayUrl}/mcp/nope`, /no MCP upstream/],
        [`${f.gatewayUrl}/mcp/github/extra`, /not allowed by policy/],
        ['http://elsewhere.example/mcp/github', /not allowed by policy/],
      ];
      for (const [resource, description] of cases) {
        const before = await maxSeq();
        const r = await session(f.tb, f.owner, 'gw:github', { resource });
        assert.equal(r.status, 400, resource);
        assert.equal(r.body.error, 'invalid_target', resource);
        assert.match(r.body.error_description, description);
        const rows = await denialsAfter(before);
        assert.equal(rows.length, 1, resource);
        assert.equal(rows[0].agent_id, f.owner.id);
        assert.match(rows[0].reason, /^invalid_target/);
      }
      // The policy that defines docs gets it.
      const ok = await session(f.tb, f.other, 'gw:docs', { resource: `${f.gatewayUrl}/mcp/docs` });
      assert.equal(ok.status, 200, JSON.stringify(ok.body));
    });

    it('delegation: a sub-agent inherits the MCP audience by default, may name it, and may not widen to another', async () => {
      const parent = await mustSession(f.tb, f.owner, 'gw:github', { resource: github });
      const inherited = await mustDelegate(f.tb, f.owner, parent, f.helper, 'gw:github/list_issues');
      assert.deepEqual(aud(inherited), [github]);
      const named = await mustDelegate(f.tb, f.owner, parent, f.helper, 'gw:github/list_issues', { resource: github });
      assert.deepEqual(aud(named), [github]);
      const wider = await delegateReq(f.tb, f.owner, parent, f.helper.id, 'gw:github/list_issues', { resource: f.tb.b.config.issuer });
      assert.equal(wider.status, 400);
      assert.equal(wider.body.error, 'invalid_target');
    });
  });

  describe('the gateway admits a resource-bound token on its own route only', () => {
    const principal = (jwt: string, resource?: string) => principalOfToken(f.gw.context, jwt, new Attempt('gateway.call'), resource);

    it('an MCP-upstream token passes on that upstream, not on another, not on /u/ or /upstreams', async () => {
      const g = f.gw.context;
      assert.equal(mcpResourceOf(g, 'github'), github);
      const jwt = await mustSession(f.tb, f.owner, 'gw:github gw:tickets', { resource: github });
      const p = await principal(jwt, mcpResourceOf(g, 'github'));
      assert.equal(p.claims.client_id, f.owner.id);
      assert.equal(audienceAllows(g, p, mcpResourceOf(g, 'github')), true);
      assert.equal(audienceAllows(g, p, mcpResourceOf(g, 'docs')), false);
      assert.equal(audienceAllows(g, p), false);
      await assert.rejects(principal(jwt, mcpResourceOf(g, 'docs')), (e: CordonError) => e.reason === 'audience_not_gateway');
      await assert.rejects(principal(jwt), (e: CordonError) => e.reason === 'audience_not_gateway' && e.status === 401);
      // Through the real front door: reverse mode and discovery keep the check they had.
      for (const path of ['/u/tickets/anything', '/upstreams']) {
        const r = await get(path, { headers: { authorization: `Bearer ${jwt}` } });
        assert.equal(r.status, 401, path);
        assert.equal(r.body.error, 'invalid_token', path);
        assert.match(r.body.error_description, /audience/);
      }
    });

    it('a token for the broker (the default audience) is admitted everywhere, as before', async () => {
      const g = f.gw.context;
      const jwt = await mustSession(f.tb, f.owner, 'gw:github');
      const p = await principal(jwt, mcpResourceOf(g, 'github'));
      assert.equal(audienceAllows(g, p), true);
      assert.equal(audienceAllows(g, p, mcpResourceOf(g, 'docs')), true);
      const r = await get('/upstreams', { headers: { authorization: `Bearer ${jwt}` } });
      assert.equal(r.status, 200, r.text);
      assert.deepEqual(
        r.body.upstreams.map((u: { name: string; url: string }) => [u.name, u.url]),
        [['github', github]],
      );
    });
  });
});
