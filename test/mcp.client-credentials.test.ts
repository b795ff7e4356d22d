/**
 * An MCP client doing its own OAuth (the official SDK's transport with an `authProvider`) gets its
 * token from the real broker with client credentials: it follows the 401's `resource_metadata` to
 * the gateway's RFC 9728 metadata, asks /token for that resource, and is admitted by the gateway's
 * own token check for that MCP upstream. The front door here stands in for the gateway's MCP route
 * (built elsewhere) and calls the gateway's real handlers: metadata, authentication with the
 * upstream's resource.
 */
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { auth, Client, ClientCredentialsProvider, StreamableHTTPClientTransport } from '@modelcontextprotocol/client';
import { Attempt } from '../src/audit/attempt.ts';
import { authenticateCall, mcpResourceOf } from '../src/gateway/authenticate.ts';
import { handleMcpMetadata, MCP_METADATA_PREFIX, mcpMetadataUrl } from '../src/gateway/mcp-metadata.ts';
import { asCordonError, reply } from '../src/gateway/replies.ts';
import { cordonClientCredentialsProvider } from '../src/sdk/mcp-oauth.ts';
import { claimsOf } from './delegation.kit.ts';
import { answerMcp, echoMcpHandler, mcpAuthFixture, type McpAuthFixture } from './mcp-auth.kit.ts';

describe('MCP client with OAuth client credentials against Cordon', () => {
  let f: McpAuthFixture;
  let front: Server;
  let frontUrl: string;
  /** Authorization headers the MCP route admitted, and requests it refused. */
  const admitted: string[] = [];
  let refused = 0;
  const calls: string[] = [];

  before(async () => {
    const mcp = echoMcpHandler(calls);
    front = createServer((req, res) => {
      void (async () => {
        const g = f.gw.context;
        const path = (req.url ?? '').split('?')[0];
        if (path.startsWith(MCP_METADATA_PREFIX)) return await handleMcpMetadata(g, req, res);
        if (path !== '/mcp/github') return reply(res, asCordonError(new Error('route')));
        try {
          await authenticateCall(g, req, path, new Attempt('gateway.call'), mcpResourceOf(g, 'github'));
        } catch (e) {
          refused++;
          // What the gateway's MCP route answers: the challenge names the metadata (RFC 9728 §5.1).
          res.writeHead(401, {
            'content-type': 'application/json',
            'www-authenticate': `Bearer resource_metadata="${mcpMetadataUrl(g.url, 'github')}", error="invalid_token"`,
          });
          res.end(JSON.stringify({ error: 'invalid_token', error_description: asCordonError(e).description }));
          return;
        }
        admitted.push(req.headers.authorization!);
        await answerMcp(mcp, req, res, frontUrl);
      })().catch((e: Error) => {
        res.writeHead(500);
        res.end(e.message);
      });
    });
    await new Promise<void>((r) => front.listen(0, '127.0.0.1', () => r()));
    frontUrl = `http://127.0.0.1:${(front.address() as AddressInfo).port}`;
    f = await mcpAuthFixture({ gatewayUrl: frontUrl });
  });
  after(async () => {
    front.closeAllConnections();
    await new Promise<void>((r) => front.close(() => r()));
    await f.stop();
  });

  const sessionsOf = async (agentId: string): Promise<number> =>
    Number((await f.tb.b.db('sessions').where({ agent_id: agentId }).count({ n: '*' }).first())?.n);
  const echo = async (client: Client, text: string): Promise<string> => {
    const r = await client.callTool({ name: 'echo', arguments: { text } });
    return (r.content as Array<{ text: string }>)[0].text;
  };

  it("the SDK's ClientCredentialsProvider as it comes stops at Cordon's metadata: it requires authorization_endpoint", async () => {
    const plain = new ClientCredentialsProvider({ clientId: f.owner.id, clientSecret: f.owner.secret, expectedIssuer: f.tb.url, scope: 'gw:github' });
    await assert.rejects(auth(plain, { serverUrl: `${frontUrl}/mcp/github` }), /authorization_endpoint/);
  });

  it('with cordonClientCredentialsProvider the client gets a token for the MCP resource from the broker and is admitted', async () => {
    const provider = await cordonClientCredentialsProvider({
      issuer: f.tb.url,
      clientId: f.owner.id,
      clientSecret: f.owner.secret,
      scope: 'gw:github/list_issues',
      task: 'mcp-oauth',
    });
    const client = new Client({ name: 'oauth-client', version: '1.0.0' });
    const refusedBefore = refused;
    await client.connect(new StreamableHTTPClientTransport(new URL(`${frontUrl}/mcp/github`), { authProvider: provider }));
    assert.deepEqual(
      (await client.listTools()).tools.map((t) => t.name),
      ['echo'],
    );
    assert.equal(await echo(client, 'hello'), 'hello');
    assert.equal(refused, refusedBefore + 1, 'one 401 (no token yet), then admitted');

    const token = admitted.at(-1)!.replace(/^Bearer /, '');
    const claims = claimsOf(token);
    assert.deepEqual([claims.aud].flat(), [`${frontUrl}/mcp/github`], 'the resource indicator became the audience');
    assert.equal(claims.scope, 'gw:github/list_issues', "the task's scope, not every scope the metadata lists");
    assert.equal(claims.client_id, f.owner.id);
    assert.equal(claims.task, 'mcp-oauth');
    const opened = await f.tb.b.db('audit').where({ event: 'session.open', sid: claims.sid }).first();
    assert.ok(opened, 'the broker recorded the session it opened');
    assert.deepEqual(JSON.parse(opened.params).audience, [`${frontUrl}/mcp/github`]);

    // Past the token's life (token_ttl 10m) the gateway refuses it; the provider renews in the same session.
    const sessions = await sessionsOf(f.owner.id);
    f.tb.clock.advance(11 * 60_000);
    assert.equal(await echo(client, 'later'), 'later');
    const renewed = claimsOf(admitted.at(-1)!.replace(/^Bearer /, ''));
    assert.notEqual(renewed.jti, claims.jti);
    assert.equal(renewed.sid, claims.sid);
    assert.equal(await sessionsOf(f.owner.id), sessions, 'no new session');

    // Once the session has ended (session_ttl 1h), the call fails and no other session opens.
    f.tb.clock.advance(60 * 60_000);
    const callsBefore = calls.length;
    await assert.rejects(echo(client, 'never'), /session has ended/);
    assert.equal(calls.length, callsBefore, 'the tool was never called');
    assert.equal(await sessionsOf(f.owner.id), sessions, 'still no new session');
    await client.close().catch(() => {});
  });
});
