import assert from 'node:assert/strict';
import { once } from 'node:events';
import { Socket, connect, createServer as createNetServer, type AddressInfo } from 'node:net';
import type { Policy } from '../src/policy/types.ts';
import { basic, bearer, connectVia, type Proxy, policy, principal, readBytes, readReply, startEcho, startProxy } from './gateway.egress.kit.ts';

/** A port nothing listens on: bound, then released. */
async function deadPort(): Promise<number> {
  const s = createNetServer().listen(0, '127.0.0.1');
  await once(s, 'listening');
  const { port } = s.address() as AddressInfo;
  s.close();
  await once(s, 'close');
  return port;
}

describe('gateway egress: CONNECT', () => {
  let echo: Awaited<ReturnType<typeof startEcho>>;
  let root: Policy;
  let sub: Policy;
  let proxy: Proxy;
  let closedPort: number;
  const names: Record<string, string[]> = {
    'internal.example': ['10.0.0.5'],
    'metadata.example': ['169.254.169.254'],
    'mapped.example': ['::ffff:127.0.0.1'],
    'mixed.example': ['93.184.216.34', '10.0.0.5'],
    'public.example': ['93.184.216.34'],
  };

  before(async () => {
    echo = await startEcho();
    closedPort = await deadPort();
    root = policy('root-persona', [
      { host: '127.0.0.1', ports: [echo.port, closedPort] },
      { host: 'localhost', ports: [echo.port] },
      { host: 'internal.example', ports: [443] },
      { host: 'metadata.example', ports: [80] },
      { host: 'mapped.example', ports: [443] },
      { host: 'mixed.example', ports: [443] },
      { host: 'public.example', ports: [443] },
    ]);
    sub = policy('sub-persona', [{ host: 'public.example', ports: [443] }]);
  });
  after(() => echo.close());
  beforeEach(async () => {
    echo.received.length = 0;
    echo.connections = 0;
    proxy = await startProxy({ 'root-token': principal([root]), 'sub-token': principal([root, sub]) }, names);
  });
  afterEach(async () => {
    assert.equal(proxy.open.size, 0, 'every tracked exchange was untracked');
    await proxy.close();
  });

  it('tunnels bytes both ways to a listed IP literal (loopback allowed because the rule names it), counts them, records once', async () => {
    const r = await connectVia(proxy.port, `127.0.0.1:${echo.port}`, bearer('root-token'), 'early');
    assert.equal(r.status, 200);
    assert.match(r.head, /^HTTP\/1\.1 200 Connection Established/);
    assert.equal(await readBytes(r.socket, 'pong:early'.length), 'pong:early', 'bytes sent right behind the CONNECT head reach the target');
    r.socket.write('ping');
    assert.equal(await readBytes(r.socket, 'pong:ping'.length), 'pong:ping');
    assert.deepEqual(echo.received, ['early', 'ping']);
    r.socket.end();
    const [row] = await proxy.recorded(1);
    assert.equal(proxy.rows.length, 1);
    assert.equal(row.decision, 'allow');
    assert.equal(row.status, 200);
    assert.equal(row.host, '127.0.0.1');
    assert.equal(row.port, echo.port);
    assert.equal(row.address, '127.0.0.1');
    assert.equal(row.bytesOut, 'earlyping'.length);
    assert.equal(row.bytesIn, 'pong:earlypong:ping'.length);
    assert.equal(row.principal?.chainPolicies[0].name, 'root-persona');
    assert.deepEqual(proxy.lookups, [], 'an IP literal is never looked up');
  });

  it('refuses an unlisted host with 403 JSON naming the policy, before any name is resolved', async () => {
    const r = await connectVia(proxy.port, 'evil.example:443', bearer('root-token'));
    assert.equal(r.status, 403);
    assert.match(r.head, /content-type: application\/json/i);
    const body = JSON.parse(r.body) as { error: string; error_description: string };
    assert.equal(body.error, 'access_denied');
    assert.match(body.error_description, /root-persona/);
    assert.deepEqual(proxy.lookups, [], 'the resolver was never asked');
    const rows = await proxy.recorded(1);
    assert.equal(rows.length, 1);
    assert.equal(rows[0].decision, 'deny');
    assert.equal(rows[0].reason, 'egress_not_allowed');
    assert.equal(rows[0].status, 403);
    assert.equal(rows[0].host, 'evil.example');
    assert.match(rows[0].description ?? '', /policy "root-persona"/);
  });

  it('refuses a port the rule does not list with 403, and the target sees nothing', async () => {
    const r = await connectVia(proxy.port, `127.0.0.1:${echo.port + 1}`, bearer('root-token'));
    assert.equal(r.status, 403);
    assert.match(JSON.parse(r.body).error_description, /port/);
    assert.equal(echo.connections, 0);
    const rows = await proxy.recorded(1);
    assert.equal(rows.length, 1);
    assert.equal(rows[0].reason, 'egress_port_not_allowed');
  });

  it('refuses loopback, private, metadata and IPv4-mapped loopback destinations even when the rule lists the name', async () => {
    const cases: Array<[string, string]> = [
      [`localhost:${echo.port}`, 'loopback'],
      ['internal.example:443', 'private'],
      ['metadata.example:80', 'cloudMetadata'],
      ['mapped.example:443', 'loopback'],
      ['mixed.example:443', 'private'],
    ];
    for (const [target, range] of cases) {
      const r = await connectVia(proxy.port, target, bearer('root-token'));
      assert.equal(r.status, 403, target);
      assert.equal(JSON.parse(r.body).error, 'access_denied');
      const row = proxy.rows.at(-1);
      assert.equal(row?.reason, 'refused_address', target);
      assert.equal(row?.decision, 'deny');
      assert.match(JSON.parse(r.body).error_description, new RegExp(range === 'cloudMetadata' ? 'cloudMetadata' : range), target);
    }
    assert.equal(proxy.rows.length, cases.length, 'one row per attempt');
    assert.deepEqual(proxy.lookups, ['internal.example', 'metadata.example', 'mapped.example', 'mixed.example'], 'each name resolved once; localhost never');
    assert.equal(echo.connections, 0);
  });

  it('refuses 127.0.0.1 and ::1 as literals when the policy only lists names for them', async () => {
    await proxy.close();
    const byName = policy('named-persona', [
      { host: 'localhost', ports: [echo.port] },
      { host: 'loopback.example', ports: [echo.port] },
    ]);
    proxy = await startProxy({ 'root-token': principal([byName]) }, { 'loopback.example': ['127.0.0.1'] });
    for (const t of [`127.0.0.1:${echo.port}`, `[::1]:${echo.port}`]) {
      const r = await connectVia(proxy.port, t, bearer('root-token'));
      assert.equal(r.status, 403, t);
    }
    const byAlias = await connectVia(proxy.port, `loopback.example:${echo.port}`, bearer('root-token'));
    assert.equal(byAlias.status, 403);
    await proxy.recorded(3);
    assert.deepEqual(
      proxy.rows.map((row) => row.reason),
      ['egress_not_allowed', 'egress_not_allowed', 'refused_address'],
    );
    assert.equal(echo.connections, 0);
  });

  it('connects to the one address it resolved, never resolving again', async () => {
    const dialled: Array<[string, number]> = [];
    await proxy.close();
    proxy = await startProxy({ 'root-token': principal([root]) }, names, {
      connect: (address, port) => {
        dialled.push([address, port]);
        return connect(echo.port, '127.0.0.1'); // stands in for the public host
      },
    });
    const r = await connectVia(proxy.port, 'public.example:443', bearer('root-token'));
    assert.equal(r.status, 200);
    r.socket.write('x');
    assert.equal(await readBytes(r.socket, 'pong:x'.length), 'pong:x');
    r.socket.end();
    const [row] = await proxy.recorded(1);
    assert.deepEqual(dialled, [['93.184.216.34', 443]]);
    assert.deepEqual(proxy.lookups, ['public.example']);
    assert.equal(row.address, '93.184.216.34');
  });

  it('refuses a sub-agent whose own policy lacks the host, though the root allows it, naming the sub-agent policy', async () => {
    const r = await connectVia(proxy.port, `127.0.0.1:${echo.port}`, bearer('sub-token'));
    assert.equal(r.status, 403);
    assert.match(JSON.parse(r.body).error_description, /sub-persona/);
    assert.equal(echo.connections, 0);
    assert.equal((await proxy.recorded(1)).length, 1);
  });

  it('answers 407 with Proxy-Authenticate without a token, with a dead token or a Basic user other than cordon; accepts Basic cordon:<token>', async () => {
    for (const auth of [undefined, bearer('nope'), basic('admin', 'root-token'), 'Digest abc']) {
      const r = await connectVia(proxy.port, `127.0.0.1:${echo.port}`, auth);
      assert.equal(r.status, 407, String(auth));
      assert.match(r.head, /proxy-authenticate: Bearer realm="cordon"/i);
      assert.match(r.head, /proxy-authenticate: Basic realm="cordon"/i);
      assert.equal(JSON.parse(r.body).error, 'invalid_token');
    }
    assert.equal(proxy.rows.length, 4);
    assert.deepEqual(
      proxy.rows.map((row) => [row.status, row.decision, row.principal]),
      Array.from({ length: 4 }, () => [407, 'deny', undefined]),
    );
    assert.equal(proxy.rows[0].reason, 'no_token');

    const ok = await connectVia(proxy.port, `127.0.0.1:${echo.port}`, basic('cordon', 'root-token'));
    assert.equal(ok.status, 200);
    ok.socket.end();
    await proxy.recorded(5);
    assert.equal(proxy.rows[4].decision, 'allow');
  });

  it('the close passed to track destroys an open tunnel on both sides and records it once', async () => {
    const r = await connectVia(proxy.port, `127.0.0.1:${echo.port}`, bearer('root-token'));
    assert.equal(r.status, 200);
    r.socket.write('a');
    await readBytes(r.socket, 'pong:a'.length);
    assert.equal(proxy.open.size, 1);
    const clientClosed = once(r.socket, 'close');
    const targetClosed = once(echo.sockets.at(-1) as Socket, 'close');
    for (const close of proxy.open) close();
    await Promise.all([clientClosed, targetClosed]);
    const rows = await proxy.recorded(1);
    assert.equal(rows.length, 1);
    assert.equal(rows[0].reason, 'session_closed');
    assert.equal(rows[0].bytesOut, 1);
  });

  it('closes a tunnel when its token expires', async () => {
    await proxy.close();
    proxy = await startProxy({ short: principal([root], Date.now() + 200) });
    const r = await connectVia(proxy.port, `127.0.0.1:${echo.port}`, bearer('short'));
    assert.equal(r.status, 200);
    await once(r.socket, 'close');
    const [row] = await proxy.recorded(1);
    assert.equal(row.reason, 'token_expired');
  });

  it('answers 502 when the destination refuses the connection and 504 when it never answers', async () => {
    const refused = await connectVia(proxy.port, `127.0.0.1:${closedPort}`, bearer('root-token'));
    assert.equal(refused.status, 502);
    assert.equal(JSON.parse(refused.body).error, 'bad_gateway');
    assert.equal((await proxy.recorded(1))[0].reason, 'connect_failed');
    await proxy.close();

    proxy = await startProxy({ 'root-token': principal([root]) }, names, { connectTimeoutMs: 50, connect: () => new Socket() });
    const hung = await connectVia(proxy.port, `127.0.0.1:${echo.port}`, bearer('root-token'));
    assert.equal(hung.status, 504);
    assert.equal((await proxy.recorded(1))[0].reason, 'connect_timeout');
  });

  it('a session closed while the connection is being made abandons it: no answer, status 0, recorded once', async () => {
    await proxy.close();
    const pending: Socket[] = [];
    proxy = await startProxy({ 'root-token': principal([root]) }, names, {
      connect: () => {
        const s = new Socket(); // never connects
        pending.push(s);
        queueMicrotask(() => [...proxy.open].forEach((close) => close()));
        return s;
      },
    });
    const client = connect(proxy.port, '127.0.0.1');
    await once(client, 'connect');
    client.write(`CONNECT 127.0.0.1:${echo.port} HTTP/1.1\r\nProxy-Authorization: Bearer root-token\r\n\r\n`);
    await once(client, 'close');
    const [row] = await proxy.recorded(1);
    assert.deepEqual([row.decision, row.status, row.reason], ['deny', 0, 'session_closed']);
    assert.ok(pending[0].destroyed, 'the pending upstream socket was destroyed');
  });

  it('answers 400 to malformed targets (no port, garbage, userinfo, bad port, numeric shorthand) without echoing them', async () => {
    const targets = ['127.0.0.1', 'exa_mple!!:443', 'user:secret@127.0.0.1:443', '127.0.0.1:99999', '127.0.0.1:0', '[::1:443', '127.1:443', '::1:443'];
    for (const t of targets) {
      const r = await connectVia(proxy.port, t, bearer('root-token'));
      assert.equal(r.status, 400, t);
      assert.equal(JSON.parse(r.body).error, 'invalid_request');
      assert.doesNotMatch(r.body, /secret/);
    }
    assert.equal(proxy.rows.length, targets.length);
    assert.ok(proxy.rows.every((row) => row.status === 400 && row.host === '' && row.reason === 'malformed_target'));
    assert.deepEqual(proxy.lookups, []);
  });

  it('keeps serving after garbage on the wire and a client that vanishes mid-handshake', async () => {
    const junk = connect(proxy.port, '127.0.0.1');
    await once(junk, 'connect');
    junk.write('\x00\x01\x02 not http at all\r\n\r\n');
    const reply = await readReply(junk);
    assert.equal(reply.status, 400);

    const gone = connect(proxy.port, '127.0.0.1');
    await once(gone, 'connect');
    gone.end(`CONNECT 127.0.0.1:${echo.port} HTTP/1.1\r\nProxy-Authorization: Bearer root-token\r\n\r\n`);
    await proxy.recorded(1);

    const r = await connectVia(proxy.port, `127.0.0.1:${echo.port}`, bearer('root-token'));
    assert.equal(r.status, 200);
    r.socket.end();
    await proxy.recorded(2);
    assert.equal(proxy.rows.length, 2);
  });
});
