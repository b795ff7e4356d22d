import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Policy } from '../src/policy/types.ts';
import { bearer, type Proxy, policy, principal, proxyGet, startProxy, startTarget } from './gateway.egress.kit.ts';

describe('gateway egress: absolute-URI requests', () => {
  let target: Awaited<ReturnType<typeof startTarget>>;
  let root: Policy;
  let proxy: Proxy;

  before(async () => {
    target = await startTarget();
    root = policy('web-persona', [{ host: '127.0.0.1', ports: [target.port] }]);
  });
  after(() => target.close());
  beforeEach(async () => {
    target.received.length = 0;
    proxy = await startProxy({ 'root-token': principal([root]) }, {}, { maxBodyBytes: 64 });
  });
  afterEach(async () => {
    assert.equal(proxy.open.size, 0);
    await proxy.close();
  });

  it('forwards to the address with Host kept, without Proxy-Authorization or hop-by-hop headers, and streams the answer back', async () => {
    const uri = `http://127.0.0.1:${target.port}/v1/things?q=1`;
    const r = await proxyGet(proxy.port, uri, {
      method: 'POST',
      headers: {
        'proxy-authorization': bearer('root-token'),
        'x-custom': 'kept',
        connection: 'keep-alive, x-drop',
        'x-drop': 'gone',
        'content-type': 'text/plain',
      },
      body: 'small body',
    });
    assert.equal(r.status, 201);
    assert.equal(r.body, 'hello from /v1/things?q=1');
    assert.equal(r.headers['x-target'], 'yes');
    assert.equal(r.headers['x-hop'], undefined, 'a header the target named in Connection stays behind');
    const [got] = target.received;
    assert.equal(got.method, 'POST');
    assert.equal(got.url, '/v1/things?q=1');
    assert.equal(got.headers.host, `127.0.0.1:${target.port}`);
    assert.equal(got.headers['proxy-authorization'], undefined);
    assert.equal(got.headers['x-drop'], undefined);
    assert.equal(got.headers['x-custom'], 'kept');
    assert.equal(got.body, 'small body');
    const [row] = await proxy.recorded(1);
    assert.equal(row.decision, 'allow');
    assert.equal(row.status, 201);
    assert.ok(row.bytesOut > 0 && row.bytesIn > 0);
  });

  it('caps the request body (declared or chunked) with 413 and sends the target nothing', async () => {
    const uri = `http://127.0.0.1:${target.port}/upload`;
    const auth = { 'proxy-authorization': bearer('root-token') };
    const declared = await proxyGet(proxy.port, uri, { method: 'POST', headers: auth, body: 'x'.repeat(100) });
    assert.equal(declared.status, 413);
    const chunked = await proxyGet(proxy.port, uri, { method: 'POST', headers: auth, body: 'y'.repeat(100), chunked: true });
    assert.equal(chunked.status, 413);
    assert.equal(JSON.parse(chunked.body).error, 'invalid_request');
    await proxy.recorded(2);
    assert.deepEqual(
      proxy.rows.map((row) => [row.status, row.reason]),
      [
        [413, 'body_too_large'],
        [413, 'body_too_large'],
      ],
    );
    assert.ok(
      target.received.every((r) => !r.body.includes('y'.repeat(65))),
      'no capped body reached the target whole',
    );
  });

  it('keeps a chunked body chunked on the way out', async () => {
    const r = await proxyGet(proxy.port, `http://127.0.0.1:${target.port}/c`, {
      method: 'GET',
      headers: { 'proxy-authorization': bearer('root-token') },
      body: 'chunky',
      chunked: true,
    });
    assert.equal(r.status, 201);
    assert.equal(target.received[0].body, 'chunky');
    assert.equal(target.received[0].headers['transfer-encoding'], 'chunked');
    await proxy.recorded(1);
  });

  it('refuses an unlisted host (403), no token (407 with Proxy-Authenticate), https:// and userinfo (400), each recorded once', async () => {
    const auth = { 'proxy-authorization': bearer('root-token') };
    const unlisted = await proxyGet(proxy.port, 'http://evil.example/', { headers: auth });
    assert.equal(unlisted.status, 403);
    assert.match(JSON.parse(unlisted.body).error_description, /web-persona/);
    const anonymous = await proxyGet(proxy.port, `http://127.0.0.1:${target.port}/`);
    assert.equal(anonymous.status, 407);
    assert.match(String(anonymous.headers['proxy-authenticate']), /Bearer realm="cordon".*Basic realm="cordon"/);
    const tls = await proxyGet(proxy.port, `https://127.0.0.1:${target.port}/`, { headers: auth });
    assert.equal(tls.status, 400);
    const userinfo = await proxyGet(proxy.port, `http://u:p@127.0.0.1:${target.port}/`, { headers: auth });
    assert.equal(userinfo.status, 400);
    await proxy.recorded(4);
    assert.deepEqual(
      proxy.rows.map((r) => r.status),
      [403, 407, 400, 400],
    );
    assert.deepEqual(proxy.lookups, []);
    assert.equal(target.received.length, 0);
  });

  it('answers 504 when the target never answers', async () => {
    const hanging = await startTarget({ hang: true });
    await proxy.close();
    proxy = await startProxy(
      { 'root-token': principal([policy('web-persona', [{ host: '127.0.0.1', ports: [hanging.port] }])]) },
      {},
      { responseTimeoutMs: 50 },
    );
    const r = await proxyGet(proxy.port, `http://127.0.0.1:${hanging.port}/slow`, { headers: { 'proxy-authorization': bearer('root-token') } });
    assert.equal(r.status, 504);
    assert.equal(JSON.parse(r.body).error, 'bad_gateway');
    assert.equal((await proxy.recorded(1))[0].reason, 'response_timeout');
    assert.equal(hanging.received.length, 1, 'the request did reach the target');
    await hanging.close();
  });

  describe('a response cut short', () => {
    let streaming: Server;
    let port: number;
    before(async () => {
      // Sends headers and part of the body; /reset then drops the connection, /hold keeps it open.
      streaming = createServer((req, res) => {
        res.writeHead(200, { 'content-length': '1000' });
        res.write('partial');
        if (req.url === '/reset') setImmediate(() => req.socket.destroy());
      });
      streaming.listen(0, '127.0.0.1');
      await once(streaming, 'listening');
      port = (streaming.address() as AddressInfo).port;
    });
    after(async () => {
      streaming.closeAllConnections();
      streaming.close();
      await once(streaming, 'close');
    });
    beforeEach(async () => {
      await proxy.close();
      proxy = await startProxy({ 'root-token': principal([policy('web-persona', [{ host: '127.0.0.1', ports: [port] }])]) });
    });

    it('an upstream reset mid-body cuts the client response and is recorded as upstream_reset', async () => {
      await assert.rejects(proxyGet(proxy.port, `http://127.0.0.1:${port}/reset`, { headers: { 'proxy-authorization': bearer('root-token') } }));
      const [row] = await proxy.recorded(1);
      assert.deepEqual([row.decision, row.status, row.reason], ['allow', 200, 'upstream_reset']);
    });

    it('the close passed to track cuts a streaming response', async () => {
      const reached = once(streaming, 'request');
      const call = proxyGet(proxy.port, `http://127.0.0.1:${port}/hold`, { headers: { 'proxy-authorization': bearer('root-token') } });
      await reached;
      assert.equal(proxy.open.size, 1);
      [...proxy.open].forEach((close) => close());
      await assert.rejects(call);
      const [row] = await proxy.recorded(1);
      assert.equal(row.reason, 'session_closed');
    });
  });
});
