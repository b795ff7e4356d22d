import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { gatewayFixture, type GatewayFixture } from './gateway.kit.ts';
import { auditHead, auditSince, mustSession } from './delegation.kit.ts';
import { verifyAudit } from '../src/audit/verify.ts';

/** Writes raw bytes to the gateway and returns everything it answers until it closes (or 2 s of silence). */
function rawExchange(url: string, bytes: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const s = connect(Number(u.port), u.hostname, () => s.write(bytes));
    let out = '';
    s.on('data', (c: Buffer) => (out += c.toString('latin1')));
    s.setTimeout(2000, () => s.destroy());
    s.on('close', () => resolve(out));
    s.on('error', reject);
  });
}

const statusOf = (raw: string): number => Number(/^HTTP\/1\.1 (\d{3})/.exec(raw)?.[1] ?? 0);
const bodyOf = (raw: string): any => JSON.parse(raw.slice(raw.indexOf('\r\n\r\n') + 4));

describe('gateway: bad input', function () {
  this.timeout(20_000);
  let f: GatewayFixture;
  let tok: string;
  before(async () => {
    f = await gatewayFixture();
    tok = await mustSession(f.tb, f.owner, 'gw:tickets');
  });
  after(async () => {
    await f?.stop();
  });
  beforeEach(() => {
    f.upstream.received.length = 0;
  });

  it('refuses Transfer-Encoding with Content-Length (request smuggling) with a 400 JSON answer, forwarding nothing', async () => {
    const raw = await rawExchange(
      f.gw.url,
      `POST /u/tickets/tickets/1/comments HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${tok}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /u/tickets/admin HTTP/1.1\r\nHost: x\r\n\r\n`,
    );
    assert.equal(statusOf(raw), 400);
    assert.equal(bodyOf(raw).error, 'invalid_request');
    assert.equal(f.upstream.received.length, 0);
  });

  it('refuses a protocol upgrade (Connection: upgrade) with 400 JSON', async () => {
    const raw = await rawExchange(
      f.gw.url,
      `GET /u/tickets/tickets/1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${tok}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n`,
    );
    assert.equal(statusOf(raw), 400);
    assert.match(bodyOf(raw).error_description, /upgrade/);
    assert.equal(f.upstream.received.length, 0);
  });

  it('treats an absolute URI as the forward proxy (407 without proxy credentials), never as reverse mode', async () => {
    const raw = await rawExchange(f.gw.url, `GET ${f.upstream.url}/api/tickets/1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${tok}\r\n\r\n`);
    assert.equal(statusOf(raw), 407);
    assert.match(raw, /proxy-authenticate: /i);
    assert.equal(f.upstream.received.length, 0);
  });

  it('answers malformed HTTP and oversized headers with JSON 400/431, and a garbage token with 401', async () => {
    assert.equal(statusOf(await rawExchange(f.gw.url, 'NOT HTTP AT ALL\r\n\r\n')), 400);
    const big = await rawExchange(f.gw.url, `GET /u/tickets/tickets/1 HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`);
    assert.equal(statusOf(big), 431);
    assert.equal(bodyOf(big).error, 'invalid_request');
    const r = await f.call('/u/tickets/tickets/1', { headers: { authorization: 'Bearer eyJhbGciOiJub25lIn0.e30.' } });
    assert.equal(r.status, 401);
    assert.equal(f.upstream.received.length, 0);
  });

  it('audits each refusal of the front door once: an unknown route, a protocol upgrade, metadata asked with POST', async () => {
    await f.gw.context.audit.idle();
    const head = await auditHead(f.tb.b);
    assert.equal((await f.call('/nowhere')).status, 404);
    assert.equal(statusOf(await rawExchange(f.gw.url, `GET /u/tickets/x HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n`)), 400);
    assert.equal((await f.call('/.well-known/oauth-protected-resource/mcp/x', { method: 'POST' })).status, 405);
    await f.gw.context.audit.idle();
    const rows = (await auditSince(f.tb.b, head)).filter((r) => r.decision === 'deny');
    assert.deepEqual(rows.map((r) => [r.params.attempted, r.params.reason_tag]).sort(), [
      ['gateway.call', 'method_not_allowed'],
      ['gateway.call', 'route_unknown'],
      ['gateway.call', 'upgrade_refused'],
    ]);
  });

  it('never forwards hop-by-hop headers or those Connection names, and never relays the upstream’s', async () => {
    const saved = f.upstream.answer;
    f.upstream.answer = (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json', connection: 'x-private, keep-alive', 'x-private': 'secret-ish', 'keep-alive': 'timeout=5' });
      res.end('{}');
    };
    try {
      const raw = await rawExchange(
        f.gw.url,
        `GET /u/tickets/tickets/1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${tok}\r\nConnection: close, x-drop-me\r\nX-Drop-Me: 1\r\nTE: trailers\r\nProxy-Authorization: Basic abc\r\n\r\n`,
      );
      assert.equal(statusOf(raw), 200);
      assert.doesNotMatch(raw, /x-private/i);
      const sent = f.upstream.received[0].headers;
      assert.equal(sent['x-drop-me'], undefined);
      assert.equal(sent.te, undefined);
      assert.equal(sent['proxy-authorization'], undefined);
    } finally {
      f.upstream.answer = saved;
    }
  });

  it('streams a large answer through (bytes counted in the audit row) and keeps serving', async () => {
    const size = 32 * 1024 * 1024;
    const saved = f.upstream.answer;
    f.upstream.answer = (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      const chunk = Buffer.alloc(1024 * 1024, 97);
      let left = 32;
      const more = (): void => {
        while (left > 0) {
          left--;
          if (!res.write(chunk)) return void res.once('drain', more);
        }
        res.end();
      };
      more();
    };
    try {
      const head = await auditHead(f.tb.b);
      const r = await fetch(`${f.gw.url}/u/tickets/tickets/big`, { headers: { authorization: `Bearer ${tok}` } });
      let n = 0;
      const reader = r.body!.getReader();
      for (let c = await reader.read(); !c.done; c = await reader.read()) n += c.value.length;
      assert.equal(n, size);
      await f.gw.context.audit.idle();
      const row = (await auditSince(f.tb.b, head)).find((x) => x.event === 'gateway.call' && x.params.path === '/tickets/big')!;
      assert.equal(row.params.bytes_out, size);
    } finally {
      f.upstream.answer = saved;
    }
    assert.equal((await f.call('/u/tickets/tickets/1', { token: tok })).status, 200);
    await f.gw.context.audit.idle();
    assert.equal((await verifyAudit(f.tb.b.db)).ok, true);
  });
});
