import assert from 'node:assert/strict';
import { request as httpRequest, Agent as HttpAgent } from 'node:http';
import { connect } from 'node:net';
import { SignJWT, generateKeyPair, base64url } from 'jose';
import { verifyAudit } from '../src/audit/verify.ts';
import { startTestBroker, basic, type TestBroker } from './helpers/broker.ts';

interface Reply {
  status: number;
  text: string;
  body: any;
  headers: Headers;
}

/** Stack frames, source paths or module paths: none may ever reach a caller. */
const LEAK = /\n\s+at |\bat [\w.<>]+ \(|node_modules|\/work\/|\/src\/|\.ts:\d+|\.js:\d+|Error: /;

/**
 * Malformed, oversized, duplicated, mis-encoded and hostile input at every endpoint: each is a
 * clear 4xx (or `active: false` where RFC 7662 says so), nothing is written, the broker keeps serving.
 */
describe('core: bad input', () => {
  let t: TestBroker;
  let agent: { id: string; secret: string };
  let auth: string;
  /** A second agent, for requests that name two callers at once. */
  let other: { id: string; secret: string };
  const replies: Array<{ what: string; r: Reply }> = [];
  /** Good requests made on purpose along the way, each of which opens one session with one token. */
  let goodSessions = 0;

  before(async () => {
    t = await startTestBroker();
    agent = await t.register('summarizer', 'support-summarizer');
    auth = basic(agent.id, agent.secret);
    other = await t.register('summarizer-2', 'support-summarizer');
  });
  after(async () => {
    await t?.close();
  });

  async function send(
    what: string,
    path: string,
    opts: { method?: string; body?: string | Buffer; type?: string; headers?: Record<string, string> } = {},
  ): Promise<Reply> {
    const headers: Record<string, string> = { ...(opts.type ? { 'content-type': opts.type } : {}), ...opts.headers };
    const res = await fetch(`${t.url}${path}`, {
      method: opts.method ?? 'POST',
      headers,
      body: typeof opts.body === 'string' || opts.body === undefined ? opts.body : new Uint8Array(opts.body),
    });
    const text = await res.text();
    let body: any = text;
    try {
      body = JSON.parse(text);
    } catch {
      /* not JSON */
    }
    const r = { status: res.status, text, body, headers: res.headers };
    replies.push({ what, r });
    return r;
  }
  const FORM = 'application/x-www-form-urlencoded';
  const form = (what: string, path: string, body: string | Buffer, headers: Record<string, string> = { authorization: '' }) =>
    send(what, path, { body, type: FORM, headers: headers.authorization === '' ? { authorization: auth } : headers });
  const is4xx = (r: Reply, what: string): void => assert.ok(r.status >= 400 && r.status < 500, `${what}: status ${r.status} ${r.text.slice(0, 200)}`);
  const rfcError = (r: Reply, what: string, code?: string): void => {
    is4xx(r, what);
    assert.equal(typeof r.body, 'object', `${what}: body is JSON: ${r.text.slice(0, 200)}`);
    assert.equal(typeof r.body.error, 'string', `${what}: has error`);
    if (code) assert.equal(r.body.error, code, `${what}: ${r.text.slice(0, 300)}`);
  };
  const counts = async (): Promise<Record<string, number>> => {
    const out: Record<string, number> = {};
    for (const table of ['sessions', 'tokens', 'revocations', 'agents', 'signing_keys'])
      out[table] = Number((await t.b.db(table).count({ n: '*' }).first())?.n);
    return out;
  };

  /** A chunked upload with no content-length, so only a streaming limit can stop it. */
  function chunked(path: string, size: number, headers: Record<string, string>, agent?: HttpAgent): Promise<number> {
    return new Promise((resolve, reject) => {
      const u = new URL(`${t.url}${path}`);
      const req = httpRequest(
        {
          host: u.hostname,
          port: u.port,
          path: u.pathname,
          method: 'POST',
          agent,
          headers: { 'content-type': FORM, 'transfer-encoding': 'chunked', ...headers },
        },
        (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        },
      );
      req.on('error', (e: NodeJS.ErrnoException) => (e.code === 'ECONNRESET' || e.code === 'EPIPE' ? resolve(-1) : reject(e)));
      const chunk = Buffer.from(`scope=${'a'.repeat(1024)}&`);
      let sent = 0;
      const pump = (): void => {
        while (sent < size) {
          sent += chunk.length;
          if (!req.write(chunk)) {
            req.once('drain', pump);
            return;
          }
        }
        req.end();
      };
      pump();
    });
  }

  let before0: Record<string, number>;
  it('(baseline counts)', async () => {
    before0 = await counts();
  });

  describe('oversized bodies (> 64 KiB)', () => {
    const big = `grant_type=client_credentials&scope=tickets:read&task=${'x'.repeat(70 * 1024)}`;
    for (const path of ['/token', '/introspect', '/revoke']) {
      it(`${path}: 413 with content-length`, async () => {
        const r = await form(`oversized ${path}`, path, big);
        assert.equal(r.status, 413, r.text.slice(0, 200));
        rfcError(r, `oversized ${path}`);
      });
      it(`${path}: refused when chunked with no content-length`, async () => {
        const status = await chunked(path, 200 * 1024, { authorization: auth });
        assert.ok(status === -1 || (status >= 400 && status < 500), `status ${status}`);
      });
    }
  });

  it('a refusal sent before the body was read does not wedge the keep-alive connection it came on', async () => {
    const agent = new HttpAgent({ keepAlive: true, maxSockets: 1 });
    const small = (): Promise<number> =>
      new Promise((resolve, reject) => {
        const u = new URL(`${t.url}/token`);
        const body = 'grant_type=client_credentials&scope=tickets:read';
        const req = httpRequest(
          {
            host: u.hostname,
            port: u.port,
            path: u.pathname,
            method: 'POST',
            agent,
            headers: { 'content-type': FORM, 'content-length': String(body.length), authorization: auth },
          },
          (res) => {
            res.resume();
            res.on('end', () => resolve(res.statusCode ?? 0));
          },
        );
        req.setTimeout(5000, () => req.destroy(new Error('the next request on the connection hung')));
        req.on('error', reject);
        req.end(body);
      });
    try {
      for (const path of ['/token', '/introspect', '/revoke']) {
        const status = await chunked(path, 200 * 1024, { authorization: auth }, agent);
        assert.ok(status === -1 || (status >= 400 && status < 500), `${path}: status ${status}`);
        assert.equal(await small(), 200, `a good request after an oversized one at ${path}`);
        goodSessions++;
      }
    } finally {
      agent.destroy();
    }
  });

  describe('content types and malformed bodies', () => {
    for (const path of ['/token', '/introspect', '/revoke']) {
      it(`${path}: JSON body → 400 invalid_request`, async () => {
        rfcError(
          await send(`json ${path}`, path, {
            body: JSON.stringify({ grant_type: 'client_credentials', token: 'x' }),
            type: 'application/json',
            headers: { authorization: auth },
          }),
          `json ${path}`,
          'invalid_request',
        );
      });
      it(`${path}: malformed JSON → 400 invalid_request`, async () => {
        rfcError(
          await send(`bad json ${path}`, path, { body: '{"token": ', type: 'application/json', headers: { authorization: auth } }),
          `bad json ${path}`,
          'invalid_request',
        );
      });
      it(`${path}: text/plain and no content type → 400`, async () => {
        rfcError(
          await send(`text ${path}`, path, { body: 'token=x', type: 'text/plain', headers: { authorization: auth } }),
          `text ${path}`,
          'invalid_request',
        );
        rfcError(await send(`no type ${path}`, path, { body: Buffer.from('token=x'), headers: { authorization: auth } }), `no type ${path}`);
      });
      it(`${path}: broken percent-encoding → 400`, async () => {
        rfcError(await form(`bad escape ${path}`, path, 'grant_type=client_credentials&scope=tickets%zzread&token=a%'), `bad escape ${path}`);
      });
    }

    it('/token: empty body → 400 invalid_request', async () => {
      rfcError(await form('empty token body', '/token', ''), 'empty token body', 'invalid_request');
    });
  });

  describe('grant types and parameters', () => {
    it('unknown grant type → unsupported_grant_type', async () => {
      for (const g of ['password', 'urn:example:nope', 'refresh_token', 'authorization_code']) {
        const r = await form(`grant ${g}`, '/token', `grant_type=${encodeURIComponent(g)}&scope=tickets:read`);
        rfcError(r, `grant ${g}`, 'unsupported_grant_type');
      }
    });

    it('duplicate parameters → invalid_request (scope twice, grant_type twice, token twice)', async () => {
      rfcError(await form('dup scope', '/token', 'grant_type=client_credentials&scope=tickets:read&scope=crm.contacts:read'), 'dup scope', 'invalid_request');
      rfcError(
        await form('dup grant', '/token', 'grant_type=client_credentials&grant_type=client_credentials&scope=tickets:read'),
        'dup grant',
        'invalid_request',
      );
      rfcError(await form('dup task', '/token', 'grant_type=client_credentials&scope=tickets:read&task=a&task=b'), 'dup task', 'invalid_request');
      rfcError(await form('dup token', '/introspect', 'token=a.b.c&token=d.e.f'), 'dup token', 'invalid_request');
      rfcError(await form('dup revoke', '/revoke', 'token=a.b.c&token=d.e.f'), 'dup revoke', 'invalid_request');
    });

    it('two client authentication methods at once → 4xx', async () => {
      const r = await form('two auths', '/introspect', `token=a.b.c&client_id=${agent.id}&client_secret=${agent.secret}`);
      rfcError(r, 'two auths', 'invalid_request');
      const r2 = await form(
        'two auths token',
        '/token',
        `grant_type=client_credentials&scope=tickets:read&client_id=${agent.id}&client_secret=${agent.secret}`,
      );
      rfcError(r2, 'two auths token');
    });

    it('a task over 200 characters or with control characters → invalid_request', async () => {
      rfcError(await form('long task', '/token', `grant_type=client_credentials&scope=tickets:read&task=${'t'.repeat(201)}`), 'long task', 'invalid_request');
      rfcError(await form('ctl task', '/token', 'grant_type=client_credentials&scope=tickets:read&task=a%0Ab'), 'ctl task', 'invalid_request');
    });
  });

  describe('non-UTF-8', () => {
    it('raw non-UTF-8 bytes at /introspect and /revoke → 400', async () => {
      const body = Buffer.concat([Buffer.from('token='), Buffer.from([0xff, 0xfe, 0xc3, 0x28]), Buffer.from('.a.b')]);
      for (const path of ['/introspect', '/revoke']) rfcError(await form(`raw bytes ${path}`, path, body), `raw bytes ${path}`, 'invalid_request');
    });
    it('percent-encoded non-UTF-8 at /introspect → 400', async () => {
      rfcError(await form('pct bytes', '/introspect', 'token=%FF%FE.a.b'), 'pct bytes', 'invalid_request');
    });
    it('non-UTF-8 at /token is refused, never decoded into a scope or task', async () => {
      const raw = Buffer.concat([Buffer.from('grant_type=client_credentials&scope=tickets:read&task='), Buffer.from([0xff, 0xfe])]);
      rfcError(await form('raw bytes token', '/token', raw), 'raw bytes token');
      rfcError(await form('pct bytes token', '/token', 'grant_type=client_credentials&scope=tickets:read%FF'), 'pct bytes token');
      rfcError(await form('pct bytes task', '/token', 'grant_type=client_credentials&scope=tickets:read&task=%C3%28'), 'pct bytes task');
    });
  });

  describe('hostile tokens at /introspect are simply inactive (RFC 7662 §2.2)', () => {
    const payload = () => {
      const now = Math.floor(t.clock.now() / 1000);
      return {
        iss: t.url,
        sub: agent.id,
        client_id: agent.id,
        scope: 'tickets:read',
        sid: 'ses_x',
        jti: 'jti_forged_0001',
        iat: now,
        nbf: now,
        exp: now + 300,
        cordon_depth: 0,
      };
    };
    const introspect = (what: string, token: string) => form(what, '/introspect', `token=${encodeURIComponent(token)}`);

    it('alg: none', async () => {
      const h = base64url.encode(JSON.stringify({ alg: 'none', typ: 'at+jwt', kid: t.b.keys.active().kid }));
      const p = base64url.encode(JSON.stringify(payload()));
      for (const tok of [`${h}.${p}.`, `${h}.${p}.AAAA`]) {
        const r = await introspect('alg none', tok);
        assert.equal(r.status, 200);
        assert.deepEqual(r.body, { active: false });
      }
    });

    it('signed by a foreign key, with our kid or its own', async () => {
      const alg = t.b.keys.active().alg;
      const { privateKey } = await generateKeyPair(alg, { crv: alg === 'EdDSA' ? 'Ed25519' : undefined });
      for (const kid of [t.b.keys.active().kid, 'foreign-kid']) {
        const tok = await new SignJWT(payload()).setProtectedHeader({ alg, typ: 'at+jwt', kid }).sign(privateKey);
        const r = await introspect(`foreign ${kid}`, tok);
        assert.equal(r.status, 200);
        assert.deepEqual(r.body, { active: false });
      }
    });

    it('HS256 with the public key as secret (algorithm confusion)', async () => {
      const pub = t.b.keys.jwks().keys[0];
      const secret = new TextEncoder().encode(JSON.stringify(pub));
      const tok = await new SignJWT(payload()).setProtectedHeader({ alg: 'HS256', typ: 'at+jwt', kid: pub.kid }).sign(secret);
      assert.deepEqual((await introspect('hs256', tok)).body, { active: false });
    });

    it('garbage, overlong and truncated tokens', async () => {
      const good = await form('good for truncation', '/token', 'grant_type=client_credentials&scope=tickets:read');
      assert.equal(good.status, 200);
      goodSessions++;
      const jwt = good.body.access_token as string;
      for (const tok of [
        'not-a-jwt',
        'a.b.c',
        '...',
        jwt.slice(0, -5),
        `${jwt}x`,
        jwt.split('.').slice(0, 2).join('.'),
        'x'.repeat(20000),
        `${jwt.split('.')[0]}.e30.${jwt.split('.')[2]}`,
      ]) {
        const r = await introspect('garbage', tok);
        assert.equal(r.status, 200, tok.slice(0, 40));
        assert.deepEqual(r.body, { active: false }, tok.slice(0, 40));
      }
      // The real token is still fine (the refusals above were about the input, not the broker).
      assert.equal((await introspect('good', jwt)).body.active, true);
    });

    it('/revoke ignores tokens it cannot vouch for with 200 (RFC 7009 §2.2) and writes nothing', async () => {
      const before = await counts();
      const r = await form('revoke garbage', '/revoke', 'token=a.b.c');
      assert.equal(r.status, 200);
      assert.deepEqual(await counts(), before);
    });
  });

  describe('ids shaped like quotes, slashes or paths', () => {
    const hostile = [`ses_a'b`, 'ses_a"b', '../../etc/passwd', 'ses/../x', 'ses\\x', '..', `' OR '1'='1`, 'ses_%00', 'a'.repeat(65), 'ses x'];
    it('as session= → 400 invalid_request; no session or token is written and the deny row names no such sid', async () => {
      const before = await counts();
      const seq0 = Number((await t.b.db('audit').max({ m: 'seq' }).first())?.m);
      for (const sid of hostile) {
        const r = await form(`session ${sid}`, '/token', `grant_type=client_credentials&scope=tickets:read&session=${encodeURIComponent(sid)}`);
        rfcError(r, `session=${sid}`, 'invalid_request');
      }
      assert.deepEqual(await counts(), before);
      const rows = await t.b.db('audit').where('seq', '>', seq0);
      assert.equal(rows.length, hostile.length, 'one deny row per refusal');
      for (const row of rows) {
        assert.equal(row.decision, 'deny');
        assert.equal(row.sid, null, 'a malformed id never lands in the sid column');
      }
    });

    it('as client_id → 401 invalid_client', async () => {
      for (const id of hostile.slice(0, 5)) {
        const r = await send(`client ${id}`, '/introspect', { body: 'token=a.b.c', type: FORM, headers: { authorization: basic(id, 'x') } });
        rfcError(r, `client_id ${id}`, 'invalid_client');
        const r2 = await send(`client ${id}`, '/token', {
          body: 'grant_type=client_credentials&scope=tickets:read',
          type: FORM,
          headers: { authorization: basic(id, 'x') },
        });
        rfcError(r2, `client_id ${id} at /token`, 'invalid_client');
      }
    });

    it('a malformed Authorization header → 4xx', async () => {
      for (const h of [
        'Basic !!!',
        'Basic',
        'Bearer abc',
        `Basic ${Buffer.from('no-colon').toString('base64')}`,
        `Basic ${Buffer.from('%zz:%zz').toString('base64')}`,
      ]) {
        rfcError(await send(`authz ${h}`, '/introspect', { body: 'token=a.b.c', type: FORM, headers: { authorization: h } }), `authz ${h}`);
        rfcError(
          await send(`authz ${h}`, '/token', { body: 'grant_type=client_credentials&scope=tickets:read', type: FORM, headers: { authorization: h } }),
          `authz ${h} /token`,
        );
      }
    });
  });

  describe('revocation feed', () => {
    it('GET /revocations?since=abc (and other bad cursors) → 400 invalid_request', async () => {
      for (const q of [
        'since=abc',
        'since=-1',
        'since=1.5',
        'since=1e3',
        'since=1&since=2',
        'since=99999999999999999999',
        'limit=0',
        'limit=abc',
        'foo=bar',
        'since=%27',
      ]) {
        rfcError(await send(`feed ${q}`, `/revocations?${q}`, { method: 'GET' }), `feed ${q}`, 'invalid_request');
      }
    });
    it('a good cursor works', async () => {
      const r = await send('feed ok', '/revocations?since=0', { method: 'GET' });
      assert.equal(r.status, 200);
      assert.equal(typeof r.body.cursor, 'number');
      assert.ok(Array.isArray(r.body.revoked));
    });
  });

  describe('parser limits, repeated headers and routes', () => {
    it('tens of thousands of repeated keys are refused at once (a linear parser with a parameter cap), and the broker keeps serving meanwhile', async () => {
      const flood = Array.from({ length: 32_000 }, () => 'a').join('&');
      for (const path of ['/introspect', '/revoke']) {
        const [r, health] = await Promise.all([form(`flood ${path}`, path, flood), send('healthz during flood', '/healthz', { method: 'GET' })]);
        rfcError(r, `flood ${path}`, 'invalid_request');
        assert.match(r.body.error_description, /more than 100 parameters/);
        assert.equal(health.status, 200);
      }
      const many = Array.from({ length: 101 }, (_, i) => `p${i}=x`).join('&');
      rfcError(await form('101 params', '/introspect', many), '101 params', 'invalid_request');
    });

    it("what Node's HTTP parser refuses (oversized headers, malformed HTTP) is JSON too, and the broker keeps serving", async () => {
      const raw = (text: string): Promise<string> =>
        new Promise((resolve, reject) => {
          const u = new URL(t.url);
          const s = connect(Number(u.port), u.hostname, () => s.end(text));
          let out = '';
          s.on('data', (d) => (out += d.toString()));
          s.on('end', () => resolve(out));
          s.on('error', reject);
          s.setTimeout(5000, () => s.destroy(new Error('no answer')));
        });
      const cases: Array<[string, string, RegExp]> = [
        ['oversized headers', `GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`, /^HTTP\/1\.1 431 /],
        ['malformed request line', 'NOT HTTP AT ALL\r\n\r\n', /^HTTP\/1\.1 400 /],
        ['bad header', 'GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header Name: y\r\n\r\n', /^HTTP\/1\.1 400 /],
      ];
      for (const [what, text, status] of cases) {
        const reply = await raw(text);
        assert.match(reply, status, what);
        assert.match(reply, /\r\ncontent-type: application\/json\r\n/i, what);
        const body = JSON.parse(reply.slice(reply.indexOf('\r\n\r\n') + 4));
        assert.equal(body.error, 'invalid_request', what);
        assert.doesNotMatch(reply, LEAK, what);
      }
      assert.equal((await send('healthz after parser errors', '/healthz', { method: 'GET' })).status, 200);
    });

    it('an empty form body is an empty form, not a wrong content type', async () => {
      const r = await form('empty introspect', '/introspect', '');
      rfcError(r, 'empty introspect', 'invalid_request');
      assert.match(r.body.error_description, /token is required/);
    });

    it('a repeated Authorization or DPoP header is refused, never resolved to the first copy', async () => {
      const two = [auth, basic(other.id, other.secret)];
      for (const path of ['/token', '/introspect', '/revoke', '/credentials/anything']) {
        // fetch would join repeated headers; node:http sends an array as two lines, as an attacker would.
        const status = await new Promise<{ status: number; body: string }>((resolve, reject) => {
          const u = new URL(`${t.url}${path}`);
          const body = 'grant_type=client_credentials&scope=tickets:read&token=x';
          const req = httpRequest(
            {
              host: u.hostname,
              port: u.port,
              path: u.pathname,
              method: 'POST',
              headers: { 'content-type': FORM, 'content-length': String(body.length), authorization: two } as unknown as Record<string, string>,
            },
            (res) => {
              let text = '';
              res.on('data', (c) => (text += c));
              res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
            },
          );
          req.on('error', reject);
          req.end(body);
        });
        assert.equal(status.status, 400, `${path}: ${status.body}`);
        assert.equal(JSON.parse(status.body).error, 'invalid_request', path);
        assert.match(JSON.parse(status.body).error_description, /authorization header must appear once/);
      }
      const dpop = await new Promise<number>((resolve, reject) => {
        const u = new URL(`${t.url}/token`);
        const body = 'grant_type=client_credentials&scope=tickets:read';
        const req = httpRequest(
          {
            host: u.hostname,
            port: u.port,
            path: u.pathname,
            method: 'POST',
            headers: { 'content-type': FORM, 'content-length': String(body.length), authorization: auth, dpop: ['a.b.c', 'd.e.f'] },
          },
          (res) => {
            res.resume();
            resolve(res.statusCode ?? 0);
          },
        );
        req.on('error', reject);
        req.end(body);
      });
      assert.equal(dpop, 400);
    });

    it('wrong methods get 405 JSON with Allow; unserved paths (oidc-provider’s own included) get 404 JSON and no cookie', async () => {
      for (const [method, path, allow] of [
        ['GET', '/token', 'POST'],
        ['PUT', '/revoke', 'POST'],
        ['GET', '/introspect', 'POST'],
        ['OPTIONS', '/token', 'POST'],
        ['DELETE', '/jwks', 'GET, HEAD'],
        ['POST', '/revocations', 'GET, HEAD'],
      ]) {
        const r = await send(`${method} ${path}`, path, { method });
        assert.equal(r.status, 405, `${method} ${path}: ${r.text}`);
        assert.equal(r.headers.get('allow'), allow, `${method} ${path}`);
        rfcError(r, `${method} ${path}`, 'invalid_request');
      }
      for (const [method, path] of [
        ['GET', '/session/end'],
        ['GET', '/auth?client_id=x&response_type=code'],
        ['POST', '/request'],
        ['POST', '/reg'],
        ['GET', '/me'],
        ['GET', '/nope'],
        ['GET', '/token/../jwks/x'],
      ]) {
        const r = await send(`${method} ${path}`, path, { method });
        assert.equal(r.status, 404, `${method} ${path}: ${r.text.slice(0, 200)}`);
        rfcError(r, `${method} ${path}`, 'not_found');
        assert.equal(r.headers.get('set-cookie'), null, `${method} ${path} sets no cookie`);
      }
      assert.equal((await send('head jwks', '/jwks', { method: 'HEAD' })).status, 200);
    });

    it('/introspect and /revoke answer 413 on the declared length alone (no waiting for the upload), and audit it', async () => {
      for (const path of ['/introspect', '/revoke']) {
        const seq = Number((await t.b.db('audit').max({ m: 'seq' }).first())?.m ?? 0);
        const status = await new Promise<number>((resolve, reject) => {
          const u = new URL(`${t.url}${path}`);
          const req = httpRequest(
            {
              host: u.hostname,
              port: u.port,
              path: u.pathname,
              method: 'POST',
              headers: { 'content-type': FORM, 'content-length': String(10 * 1024 * 1024), authorization: auth },
            },
            (res) => {
              res.resume();
              resolve(res.statusCode ?? 0);
            },
          );
          req.on('error', (e: NodeJS.ErrnoException) => (e.code === 'ECONNRESET' || e.code === 'EPIPE' ? resolve(-1) : reject(e)));
          req.write('token=abc'); // and nothing more: the rest of the 10 MiB never comes
        });
        assert.equal(status, 413, path);
        const rows = await t.b.db('audit').where('seq', '>', seq).andWhere({ decision: 'deny' });
        assert.equal(rows.length, 1, `${path}: one deny row`);
        assert.match(rows[0].reason, /too large/);
        assert.equal(rows[0].agent_id, agent.id, 'the client id the request claimed');
      }
      // And what the parser itself refuses (an encoding it does not know) is audited too.
      const seq = Number((await t.b.db('audit').max({ m: 'seq' }).first())?.m ?? 0);
      const enc = await send('bogus encoding introspect', '/introspect', {
        body: 'token=abc',
        type: FORM,
        headers: { authorization: auth, 'content-encoding': 'bogus' },
      });
      rfcError(enc, 'bogus encoding introspect');
      assert.equal((await t.b.db('audit').where('seq', '>', seq).andWhere({ decision: 'deny' })).length, 1);
    });

    it('a 404 or 405 keeps the connection alive (only a reply that leaves a body unread closes it)', async () => {
      for (const [method, path] of [
        ['GET', '/nope'],
        ['GET', '/token'],
      ]) {
        const r = await send(`${method} ${path} keep-alive`, path, { method });
        assert.ok(r.status === 404 || r.status === 405, `${method} ${path}`);
        assert.notEqual(r.headers.get('connection'), 'close', `${method} ${path}`);
      }
    });

    it('/token refuses encoded bodies (415) and bodies over the provider’s own 56 KiB limit (413), with JSON', async () => {
      const enc = await send('gzip token', '/token', {
        body: 'grant_type=client_credentials&scope=tickets:read',
        type: FORM,
        headers: { authorization: auth, 'content-encoding': 'gzip' },
      });
      assert.equal(enc.status, 415, enc.text);
      rfcError(enc, 'gzip token', 'invalid_request');
      const big = await form('60 KiB token', '/token', `grant_type=client_credentials&scope=tickets:read&task=${'x'.repeat(60 * 1024)}`);
      assert.equal(big.status, 413, big.text);
      rfcError(big, '60 KiB token', 'invalid_request');
    });
  });

  describe('afterwards', () => {
    it('nothing was written by any of it beyond the good requests made on purpose', async () => {
      const now = await counts();
      assert.equal(goodSessions, 4);
      assert.deepEqual({ ...now, sessions: now.sessions - goodSessions, tokens: now.tokens - goodSessions }, before0);
      const v = await verifyAudit(t.b.db);
      assert.equal(v.ok, true, JSON.stringify(v));
    });

    it('the broker still serves a good request', async () => {
      const r = await form('good', '/token', 'grant_type=client_credentials&scope=tickets:read&task=after-the-storm');
      assert.equal(r.status, 200, r.text);
      const i = await form('good introspect', '/introspect', `token=${r.body.access_token}`);
      assert.equal(i.body.active, true);
      const d = await send('discovery', '/.well-known/openid-configuration', { method: 'GET' });
      assert.equal(d.status, 200);
    });

    it('no response carried a stack trace, a file path or an HTML error page', () => {
      assert.ok(replies.length > 50, `only ${replies.length} replies recorded`);
      for (const { what, r } of replies) {
        assert.ok(!LEAK.test(r.text), `${what}: response leaks internals: ${r.text.slice(0, 300)}`);
        assert.ok(!/<html|<pre/i.test(r.text), `${what}: HTML error page: ${r.text.slice(0, 200)}`);
        if (r.status >= 400) assert.match(r.headers.get('content-type') ?? '', /json/, `${what}: error is JSON`);
      }
    });
  });
});
