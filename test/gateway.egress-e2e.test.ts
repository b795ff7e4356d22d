import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { connect } from 'node:net';
import { gatewayFixture, type GatewayFixture } from './gateway.kit.ts';
import { auditHead, auditSince, claimsOf, mustDelegate, mustSession } from './delegation.kit.ts';
import { verifyAudit } from '../src/audit/verify.ts';
import { revokeSession } from '../src/revocation/revoke.ts';

/** The egress target listens on a second loopback address; a policy reaches it only by naming that address. */
const TARGET = '127.0.0.2';

/** A CONNECT through the gateway; resolves with the status line's code and, on 200, the open socket. */
function tunnel(gw: string, target: string, token?: string): Promise<{ status: number; socket?: import('node:net').Socket; head: string }> {
  return new Promise((resolve, reject) => {
    const u = new URL(gw);
    const s = connect(Number(u.port), u.hostname, () =>
      s.write(
        `CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\n${token ? `Proxy-Authorization: Basic ${Buffer.from(`cordon:${token}`).toString('base64')}\r\n` : ''}\r\n`,
      ),
    );
    let buf = '';
    const onData = (c: Buffer): void => {
      buf += c.toString('latin1');
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(buf)?.[1] ?? 0);
      s.off('data', onData);
      if (status === 200) resolve({ status, socket: s, head: buf });
      else {
        s.on('data', (more: Buffer) => (buf += more.toString('latin1')));
        s.on('close', () => resolve({ status, head: buf }));
      }
    };
    s.on('data', onData);
    s.on('error', reject);
  });
}

for (const db of ['sqlite', 'postgres'] as const) {
  describe(`gateway egress through the real gateway (${db})`, function () {
    this.timeout(20_000);
    let f: GatewayFixture;
    let target: Server;
    let port: number;
    before(async () => {
      target = createServer((_req, res) => res.end('inside'));
      await new Promise<void>((r) => target.listen(0, TARGET, () => r()));
      port = (target.address() as AddressInfo).port;
      f = await gatewayFixture({
        pg: db === 'postgres',
        // internal.example resolves to a private address: listed by name, refused by address.
        lookup: async (host) => (host === 'internal.example' ? [{ address: '10.0.0.5', family: 4 }] : [{ address: '93.184.215.14', family: 4 }]),
        policies: () => ({
          'egress-root.yaml': `
name: egress-root
description: Reaches one address on another loopback, and names a host that resolves privately.
scopes: [work]
delegation: { max_depth: 1, scopes: [work] }
egress:
  - { host: "${TARGET}", ports: [${port}] }
  - { host: internal.example, ports: [443] }
  - { host: localhost, ports: [${port}] }
`,
          'egress-sub.yaml': `
name: egress-sub
description: A sub-agent whose policy allows no egress at all.
scopes: [work]
`,
        }),
      });
    });
    after(async () => {
      await f?.stop();
      target?.close();
    });

    it('opens a tunnel to a listed address, refuses unlisted hosts and ports, loopback by name, and a listed name that resolves privately; every exchange is a row', async () => {
      const root = await f.tb.register(`egress-root-${db}`, 'egress-root');
      const tok = await mustSession(f.tb, { ...root, name: 'r' }, 'work');
      const head = await auditHead(f.tb.b);

      const ok = await tunnel(f.gw.url, `${TARGET}:${port}`, tok);
      assert.equal(ok.status, 200);
      ok.socket!.write(`GET / HTTP/1.1\r\nHost: ${TARGET}\r\nConnection: close\r\n\r\n`);
      const answer = await new Promise<string>((r) => {
        let t = '';
        ok.socket!.on('data', (c: Buffer) => (t += c.toString()));
        ok.socket!.on('close', () => r(t));
      });
      assert.match(answer, /inside$/);

      assert.equal((await tunnel(f.gw.url, `example.org:443`, tok)).status, 403, 'unlisted host');
      assert.equal((await tunnel(f.gw.url, `${TARGET}:${port + 1}`, tok)).status, 403, 'unlisted port');
      assert.equal((await tunnel(f.gw.url, `127.0.0.1:${port}`, tok)).status, 403, '127.0.0.1 literal, not listed');
      assert.equal((await tunnel(f.gw.url, `localhost:${port}`, tok)).status, 403, 'loopback by name, even listed');
      const priv = await tunnel(f.gw.url, 'internal.example:443', tok);
      assert.equal(priv.status, 403, 'a listed name resolving to a private address');
      assert.equal((await tunnel(f.gw.url, `${TARGET}:${port}`)).status, 407, 'no token');

      await f.gw.context.audit.idle();
      const rows = (await auditSince(f.tb.b, head)).filter((r) => r.event === 'egress.connect' || r.params.attempted === 'egress.connect');
      assert.equal(rows.length, 7);
      const allowed = rows.find((r) => r.decision === 'allow')!;
      assert.equal(allowed.params.address, TARGET);
      assert.ok(allowed.params.bytes_in > 0 && allowed.params.bytes_out > 0);
      assert.equal(rows.filter((r) => r.decision === 'deny').length, 6);
      assert.ok(rows.some((r) => r.params.reason_tag === 'refused_address' && r.params.host === 'internal.example'));
    });

    it('a sub-agent whose policy lists nothing is refused what its root may reach; revoking the session closes an open tunnel', async () => {
      const root = await f.tb.register(`egress-root2-${db}`, 'egress-root');
      const sub = await f.tb.register(`egress-sub-${db}`, 'egress-sub');
      const tok = await mustSession(f.tb, { ...root, name: 'r' }, 'work');
      const child = await mustDelegate(f.tb, { ...root, name: 'r' }, tok, { ...sub, name: 's' }, 'work');
      assert.equal((await tunnel(f.gw.url, `${TARGET}:${port}`, child)).status, 403);

      const open = await tunnel(f.gw.url, `${TARGET}:${port}`, tok);
      assert.equal(open.status, 200);
      const closed = new Promise<void>((r) => open.socket!.on('close', () => r()));
      await revokeSession(f.tb.b, claimsOf(tok).sid, { actor: 'test', via: 'test' });
      await closed;
      await f.gw.context.audit.idle();
      assert.equal((await verifyAudit(f.tb.b.db)).ok, true);
    });
  });
}
