/**
 * The agent SDK's MCP transport against a real MCP server (official SDK, `@modelcontextprotocol/server`)
 * behind a small node:http endpoint that records the Authorization header of every request it got:
 * the session token is sent, renewed before expiry (on the broker's ManualClock) and after a 401,
 * and a revoked session fails the call instead of sending anything stale.
 */
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Client } from '@modelcontextprotocol/client';
import { CordonAgent } from '../src/sdk/agent.ts';
import { CordonSdkError } from '../src/sdk/errors.ts';
import { mcpEndpoint } from '../src/sdk/mcp.ts';
import { revokeSession } from '../src/revocation/revoke.ts';
import { claimsOf } from './delegation.kit.ts';
import { answerMcp, echoMcpHandler, mcpAuthFixture, type McpAuthFixture } from './mcp-auth.kit.ts';

interface Seen {
  method: string;
  authorization: string | undefined;
  dpop: string | undefined;
}

/** An MCP server (one per request, as the SDK advises) behind node:http; `refuse` holds tokens it answers 401 to. */
class RecordingMcpEndpoint {
  readonly seen: Seen[] = [];
  readonly refuse = new Set<string>();
  readonly calls: string[] = [];
  server!: Server;
  url = '';

  async start(): Promise<void> {
    const handler = echoMcpHandler(this.calls);
    this.server = createServer((req, res) => {
      void (async () => {
        const authorization = req.headers.authorization;
        this.seen.push({ method: req.method ?? '', authorization, dpop: req.headers.dpop as string | undefined });
        const token = authorization?.replace(/^(Bearer|DPoP) /, '');
        if (!token || this.refuse.has(token)) {
          res.writeHead(401, { 'www-authenticate': 'Bearer error="invalid_token"', 'content-type': 'application/json' });
          res.end('{"error":"invalid_token"}');
          return;
        }
        await answerMcp(handler, req, res, this.url);
      })().catch((e: Error) => {
        res.writeHead(500);
        res.end(e.message);
      });
    });
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', () => r()));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  tokens(): string[] {
    return this.seen.map((s) => s.authorization?.replace(/^(Bearer|DPoP) /, '') ?? '');
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}

describe('SDK: CordonAgent.mcpTransport (official MCP client over Streamable HTTP)', () => {
  let f: McpAuthFixture;
  let mcp: RecordingMcpEndpoint;
  before(async () => {
    f = await mcpAuthFixture();
    mcp = new RecordingMcpEndpoint();
    await mcp.start();
  });
  after(async () => {
    await mcp.stop();
    await f.stop();
  });
  beforeEach(() => {
    mcp.seen.length = 0;
    mcp.refuse.clear();
  });

  const agentFor = (opts: { dpop?: boolean } = {}) =>
    new CordonAgent({
      issuer: f.tb.url,
      clientId: f.owner.id,
      clientSecret: f.owner.secret,
      clock: f.tb.clock,
      gatewayUrl: f.gatewayUrl,
      random: () => 0,
      ...opts,
    });
  const connect = async (agent: CordonAgent): Promise<Client> => {
    const client = new Client({ name: 'cordon-test', version: '1.0.0' });
    await client.connect(await agent.mcpTransport('github', { url: `${mcp.url}/mcp` }));
    return client;
  };
  const echo = async (client: Client, text: string): Promise<string> => {
    const r = await client.callTool({ name: 'echo', arguments: { text } });
    return (r.content as Array<{ text: string }>)[0].text;
  };

  it('the endpoint is {gatewayUrl}/mcp/{upstream} unless given', () => {
    const agent = agentFor();
    assert.equal(mcpEndpoint('github', {}, agent.gatewayUrl).href, `${f.gatewayUrl}/mcp/github`);
    assert.equal(mcpEndpoint('github', { gatewayUrl: 'https://gw.example/' }, agent.gatewayUrl).href, 'https://gw.example/mcp/github');
    assert.equal(mcpEndpoint('x', { url: 'http://127.0.0.1:1/elsewhere' }, undefined).href, 'http://127.0.0.1:1/elsewhere');
    assert.throws(
      () => mcpEndpoint('github', {}, undefined),
      (e: CordonSdkError) => e.code === 'config' && /CORDON_GATEWAY_URL/.test(e.message),
    );
    assert.throws(
      () => mcpEndpoint('../x', {}, f.gatewayUrl),
      (e: CordonSdkError) => e.code === 'config',
    );
    assert.equal(
      CordonAgent.fromEnv({
        CORDON_ISSUER: f.tb.url,
        CORDON_CLIENT_ID: f.owner.id,
        CORDON_CLIENT_SECRET: f.owner.secret,
        CORDON_GATEWAY_URL: `${f.gatewayUrl}/`,
      }).gatewayUrl,
      f.gatewayUrl,
    );
  });

  it('every request carries the session token, and the token is renewed in the session before it expires', async () => {
    const agent = agentFor();
    await agent.startSession({ scope: 'gw:github' });
    const client = await connect(agent);
    const tools = await client.listTools();
    assert.deepEqual(
      tools.tools.map((t) => t.name),
      ['echo'],
    );
    assert.equal(await echo(client, 'one'), 'one');
    const first = await agent.token();
    assert.ok(mcp.seen.length >= 2);
    assert.ok(
      mcp.seen.every((s) => s.authorization === `Bearer ${first}`),
      'every request so far carried the first token',
    );

    // Past the token's renewal point (token_ttl 10m): the next request carries a new token of the same session.
    f.tb.clock.advance(9.5 * 60_000);
    const before = mcp.seen.length;
    assert.equal(await echo(client, 'two'), 'two');
    const second = mcp.tokens().slice(before);
    assert.ok(second.length >= 1);
    assert.ok(second.every((t) => t === second[0] && t !== first));
    assert.equal(claimsOf(second[0]).sid, claimsOf(first).sid);
    assert.ok(claimsOf(second[0]).exp > claimsOf(first).exp);
    await client.close();
    await agent.close();
  });

  it('a 401 renews the token once and retries; a revoked session fails the call and sends nothing stale', async () => {
    const agent = agentFor();
    const s = await agent.startSession({ scope: 'gw:github' });
    const client = await connect(agent);
    const refused = await agent.token();
    mcp.refuse.add(refused);
    const at = mcp.seen.length;
    assert.equal(await echo(client, 'again'), 'again');
    // Whatever the transport sent with the refused token (its call, and the stream it may open) was sent again with a new one.
    const sent = mcp.seen.slice(at);
    const tokenOf = (x: Seen): string => x.authorization?.replace(/^Bearer /, '') ?? '';
    assert.ok(sent.some((x) => tokenOf(x) === refused));
    const renewed = tokenOf(sent.filter((x) => x.method === 'POST').at(-1)!);
    assert.notEqual(renewed, refused);
    assert.equal(claimsOf(renewed).sid, s.sid);
    assert.deepEqual(new Set(sent.map(tokenOf)), new Set([refused, renewed]), 'requests refused together shared one renewal');
    assert.deepEqual(mcp.calls.slice(-1), ['again']);

    await revokeSession(f.tb.b, s.sid, { actor: 'test', via: 'test' });
    mcp.refuse.add(renewed);
    const calls = mcp.calls.length;
    await assert.rejects(echo(client, 'never'), (e: Error) => /session/i.test(`${e.message} ${(e.cause as Error | undefined)?.message ?? ''}`));
    assert.equal(mcp.calls.length, calls, 'the tool was never called');
    await client.close().catch(() => {});
    await agent.close().catch(() => {});
  });

  it('a DPoP-bound token goes with a proof for the MCP endpoint', async () => {
    const agent = agentFor({ dpop: true });
    await agent.startSession({ scope: 'gw:github' });
    const client = await connect(agent);
    assert.equal(await echo(client, 'bound'), 'bound');
    const last = mcp.seen.at(-1)!;
    assert.match(last.authorization ?? '', /^DPoP /);
    const proof = claimsOf(last.dpop!);
    assert.equal(proof.htu, `${mcp.url}/mcp`);
    assert.equal(proof.htm, 'POST');
    await client.close();
    await agent.close();
  });

  it('the MCP client SDK is imported lazily: no module of the agent SDK loads it at start', () => {
    for (const file of readdirSync('src/sdk').filter((n) => n.endsWith('.ts'))) {
      const text = readFileSync(`src/sdk/${file}`, 'utf8');
      for (const m of text.matchAll(/^\s*import\s+(?!type\b)[^;]*from\s+'@modelcontextprotocol\/[^']+'/gm))
        assert.fail(`${file} imports the MCP SDK eagerly: ${m[0]}`);
    }
  });
});
