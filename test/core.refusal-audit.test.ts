import assert from 'node:assert/strict';
import { request as httpRequest, Agent as HttpAgent } from 'node:http';
import { connect } from 'node:net';
import { credentialsRoute } from '../src/http/credentials.ts';
import { mountMetrics } from '../src/http/metrics.ts';
import { decodeJwt } from 'jose';
import { verifyAudit } from '../src/audit/verify.ts';
import { revokeSession } from '../src/revocation/revoke.ts';
import { DEFAULT_REFUSAL_LIMITS } from '../src/audit/refusal-limiter.ts';
import { recordRefusal } from '../src/audit/refusals.ts';
import { Attempt } from '../src/audit/attempt.ts';
import { CordonError } from '../src/errors.ts';
import { startTestBroker, postForm, basic, type TestBroker } from './helpers/broker.ts';

const N = DEFAULT_REFUSAL_LIMITS.perWindow;
const WINDOW = DEFAULT_REFUSAL_LIMITS.windowMs;
const METRICS_TOKEN = 'm'.repeat(40);
/** Looks like a token; must never appear in an audit row. */
const TOKEN_TEXT = 'eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJzZWNyZXQtdG9rZW4tdGV4dCJ9.c2lnbmF0dXJlLWJ5dGVz';

interface Raw {
  status: number;
  body: string;
}

/** One request through node:http, so headers can be repeated as an attacker would send them. */
function raw(url: string, opts: { method?: string; headers?: Record<string, string | string[]>; body?: string; agent?: HttpAgent } = {}): Promise<Raw> {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const req = httpRequest(
      {
        host: u.hostname,
        port: u.port,
        path: `${u.pathname}${u.search}`,
        method: opts.method ?? 'POST',
        agent: opts.agent,
        headers: { ...(opts.body !== undefined ? { 'content-length': String(Buffer.byteLength(opts.body)) } : {}), ...opts.headers },
      },
      (res) => {
        let text = '';
        res.on('data', (c) => (text += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
      },
    );
    req.on('error', reject);
    req.end(opts.body);
  });
}

/** Bytes straight onto a socket: what Node's own HTTP parser refuses. */
function rawSocket(url: string, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const s = connect(Number(u.port), u.hostname, () => s.end(text));
    let out = '';
    s.on('data', (d) => (out += d.toString()));
    s.on('end', () => resolve(out));
    s.on('error', reject);
  });
}

/**
 * Every refusal of every endpoint leaves exactly one audit row, HTTP-layer refusals included; and
 * junk that names no known agent cannot flood the chain: beyond the per-address budget it is
 * summarised, while a known agent's refusals are still written one by one.
 */
describe('core: every refusal is audited, once; junk is summarised', () => {
  let t: TestBroker;
  let agent: { id: string; secret: string };

  before(async () => {
    t = await startTestBroker({
      env: { CORDON_METRICS_TOKEN: METRICS_TOKEN },
      ext: { routes: [credentialsRoute], before: [(app, b) => mountMetrics(app, b)] },
    });
    agent = await t.register('summarizer', 'support-summarizer');
  });
  after(async () => {
    await t?.close();
  });

  const maxSeq = async (): Promise<number> => Number((await t.b.db('audit').max({ m: 'seq' }).first())?.m ?? 0);
  const rowsAfter = async (seq: number) => (await t.b.db('audit').where('seq', '>', seq).orderBy('seq')).map((r) => ({ ...r, params: JSON.parse(r.params) }));
  /** A fresh window for the client address, so junk refusals before it do not count against this one. */
  const freshWindow = (): void => t.clock.advance(WINDOW + 1);

  /** Sends, expects a 4xx, and returns the deny rows it left (the grant-error listener writes after replying, so wait for it). */
  async function denyRowsOf(what: string, send: () => Promise<{ status: number }>): Promise<Array<Record<string, any>>> {
    freshWindow();
    const seq = await maxSeq();
    const r = await send();
    assert.ok(r.status >= 400 && r.status < 500, `${what}: status ${r.status}`);
    // A refusal's row is written before its answer, except those of Node's HTTP parser (answered at once, written just after).
    for (let i = 0; i < 200 && !(await rowsAfter(seq)).some((x) => x.decision === 'deny'); i++) await new Promise((res) => setImmediate(res));
    return (await rowsAfter(seq)).filter((x) => x.decision === 'deny' || x.event.startsWith('deny'));
  }

  describe('/credentials refusals made in the HTTP layer', () => {
    const cred = (name: string, headers: Record<string, string | string[]>) => raw(`${t.url}/credentials/${name}`, { headers });

    const cases: Array<[string, () => Promise<Raw>, { reason: RegExp; name?: string }]> = [
      ['no Authorization', () => cred('tickets-db', {}), { reason: /^invalid_token: an access token is required/, name: 'tickets-db' }],
      [
        'a malformed Authorization',
        () => cred('tickets-db', { authorization: `Bearer ${TOKEN_TEXT} extra` }),
        { reason: /^invalid_token: Authorization must be/, name: 'tickets-db' },
      ],
      ['a Basic Authorization', () => cred('tickets-db', { authorization: basic('agt_x', TOKEN_TEXT) }), { reason: /^invalid_token/, name: 'tickets-db' }],
      ['a bad credential name', () => cred('Bad$Name', { authorization: `Bearer ${TOKEN_TEXT}` }), { reason: /^invalid_request: credential name must match/ }],
      ['a name that is a token', () => cred(TOKEN_TEXT, { authorization: `Bearer ${TOKEN_TEXT}` }), { reason: /^invalid_request: credential name must match/ }],
      [
        'two DPoP headers',
        () => cred('tickets-db', { authorization: `DPoP ${TOKEN_TEXT}`, dpop: ['a.b.c', 'd.e.f'] }),
        { reason: /^invalid_request: the dpop header must appear once/, name: 'tickets-db' },
      ],
    ];
    for (const [what, send, expect] of cases) {
      it(`${what}: one deny row, attempted credential.issue, no token text`, async () => {
        const rows = await denyRowsOf(what, send);
        assert.equal(rows.length, 1, `${what}: ${JSON.stringify(rows)}`);
        const [row] = rows;
        assert.equal(row.event, 'deny');
        assert.equal(row.params.attempted, 'credential.issue');
        assert.match(row.reason, expect.reason);
        assert.equal(row.params.name, expect.name, 'the name, when well-formed');
        assert.equal(row.params.path, '/credentials/:name');
        assert.equal(row.params.client_address, '127.0.0.1');
        assert.ok(!JSON.stringify(row).includes(TOKEN_TEXT), `no token text in ${JSON.stringify(row)}`);
      });
    }
  });

  describe('a walk through every endpoint’s refusals: exactly one row each', () => {
    const form = 'application/x-www-form-urlencoded';
    const cases: Array<[string, () => Promise<{ status: number }>, string]> = [
      ['/token wrong content type', () => raw(`${t.url}/token`, { headers: { 'content-type': 'text/plain' }, body: 'x' }), 'token'],
      [
        '/token unknown client',
        () => postForm(`${t.url}/token`, { grant_type: 'client_credentials', scope: 'tickets:read' }, { authorization: basic('agt_nosuchagent', 'x') }),
        'token',
      ],
      [
        '/token a known agent asks too much',
        () => postForm(`${t.url}/token`, { grant_type: 'client_credentials', scope: 'docs:write' }, { authorization: basic(agent.id, agent.secret) }),
        'session.open',
      ],
      ['/token unknown grant type', () => postForm(`${t.url}/token`, { grant_type: 'password' }, { authorization: basic(agent.id, agent.secret) }), 'token'],
      ['/introspect no client authentication', () => postForm(`${t.url}/introspect`, { token: TOKEN_TEXT }), 'introspect'],
      [
        '/introspect a JSON body',
        () => raw(`${t.url}/introspect`, { headers: { 'content-type': 'application/json', authorization: basic(agent.id, agent.secret) }, body: '{}' }),
        'introspect',
      ],
      [
        '/introspect an unknown content encoding',
        () =>
          raw(`${t.url}/introspect`, {
            headers: { 'content-type': form, 'content-encoding': 'x-nope', authorization: basic(agent.id, agent.secret) },
            body: 'token=x',
          }),
        'introspect',
      ],
      ['/revoke a wrong secret', () => postForm(`${t.url}/revoke`, { token: TOKEN_TEXT }, { authorization: basic(agent.id, 'wrong') }), 'revoke'],
      [
        '/revoke two Authorization headers',
        () =>
          raw(`${t.url}/revoke`, {
            headers: { 'content-type': form, authorization: [basic(agent.id, agent.secret), basic('agt_other', 'x')] },
            body: 'token=x',
          }),
        'revoke',
      ],
      ['/revocations a bad since', () => raw(`${t.url}/revocations?since=abc`, { method: 'GET' }), 'revocations'],
      ['/revocations a bad limit', () => raw(`${t.url}/revocations?limit=0`, { method: 'GET' }), 'revocations'],
      ['/revocations an unknown parameter', () => raw(`${t.url}/revocations?cursor=1`, { method: 'GET' }), 'revocations'],
      ['/metrics without its token', () => raw(`${t.url}/metrics`, { method: 'GET' }), 'metrics'],
      ['/metrics with a wrong token', () => raw(`${t.url}/metrics`, { method: 'GET', headers: { authorization: `Bearer ${'x'.repeat(40)}` } }), 'metrics'],
      ['an unknown route', () => raw(`${t.url}/nope`, { method: 'GET' }), 'request'],
      ['a wrong method (405)', () => raw(`${t.url}/token`, { method: 'GET' }), 'token'],
      ['a wrong method at /credentials', () => raw(`${t.url}/credentials/tickets-db`, { method: 'GET' }), 'credential.issue'],
      ['a path that does not decode', () => raw(`${t.url}/credentials/%E0%A4%A`, { headers: { authorization: `Bearer ${TOKEN_TEXT}` } }), 'credential.issue'],
      [
        '/credentials a garbage token (audited by tokens/credentials.ts)',
        () => raw(`${t.url}/credentials/tickets-db`, { headers: { authorization: `Bearer ${TOKEN_TEXT}` } }),
        'credential.issue',
      ],
      ['malformed HTTP', async () => ({ status: Number(/^HTTP\/1\.1 (\d{3})/.exec(await rawSocket(t.url, 'NOT HTTP AT ALL\r\n\r\n'))?.[1]) }), 'request'],
    ];
    for (const [what, send, attempted] of cases) {
      it(`${what}: one deny row, attempted ${attempted}`, async () => {
        const rows = await denyRowsOf(what, send);
        assert.equal(rows.length, 1, `${what}: ${JSON.stringify(rows)}`);
        assert.equal(rows[0].event, 'deny');
        assert.equal(rows[0].params.attempted, attempted);
        if (rows[0].agent_id === null) assert.equal(rows[0].params.client_address, '127.0.0.1', 'a refusal naming nobody names the address');
        assert.ok(!JSON.stringify(rows[0]).includes(TOKEN_TEXT), 'no token text in the row');
      });
    }
  });

  describe('junk naming no known agent is summarised per address', () => {
    it(`10,000 junk refusals from one address write at most ${N} rows plus summaries that account for the rest; the chain verifies and the broker still serves`, async function () {
      this.timeout(60_000);
      freshWindow();
      const seq = await maxSeq();
      const TOTAL = 10_000;
      // A few hundred over HTTP (keep-alive, modest concurrency), three kinds of junk; the rest
      // straight into recordRefusal, the function every refusal goes through, so the test stays fast.
      const OVER_HTTP = 300;
      const pool = new HttpAgent({ keepAlive: true, maxSockets: 8 });
      const junk: Array<{ path: string; method?: string; headers?: Record<string, string>; body?: string }> = [
        { path: '/credentials/tickets-db', headers: { authorization: 'Bearer garbage' } },
        {
          path: '/introspect',
          headers: { authorization: basic('agt_nosuchagent', 'x'), 'content-type': 'application/x-www-form-urlencoded' },
          body: 'token=x',
        },
        { path: '/nope', method: 'GET' },
      ];
      let next = 0;
      const statuses = new Map<number, number>();
      const worker = async (): Promise<void> => {
        while (next < OVER_HTTP) {
          const j = junk[next++ % junk.length];
          const r = await raw(`${t.url}${j.path}`, { method: j.method ?? 'POST', headers: j.headers, body: j.body, agent: pool });
          statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
        }
      };
      await Promise.all(Array.from({ length: 8 }, worker));
      pool.destroy();
      assert.equal(
        [...statuses.entries()].filter(([s]) => s >= 400 && s < 500).reduce((n, [, c]) => n + c, 0),
        OVER_HTTP,
        JSON.stringify([...statuses]),
      );
      for (let i = OVER_HTTP; i < TOTAL; i++) {
        await recordRefusal(
          t.b,
          new Attempt('credential.issue', '127.0.0.1').note({ name: 'tickets-db' }),
          new CordonError('invalid_token', 'token is malformed', { reason: 'token_invalid' }),
        );
      }

      let rows = await rowsAfter(seq);
      assert.equal(rows.length, N, `only the first ${N} junk refusals are written while the window lasts`);
      // The window ends; the next refusal from anywhere writes the summary (and is itself the first of a new window).
      t.clock.advance(WINDOW);
      assert.equal((await raw(`${t.url}/nope`, { method: 'GET' })).status, 404);
      rows = await rowsAfter(seq);
      const summaries = rows.filter((r) => r.event === 'deny.summary');
      assert.ok(rows.length <= N + 1 + 3, `the table grew by ${rows.length} rows`);
      assert.ok(summaries.length >= 1);
      for (const s of summaries) {
        assert.equal(s.decision, 'deny');
        assert.equal(s.params.client_address, '127.0.0.1');
        assert.ok(Date.parse(s.params.window_end) > Date.parse(s.params.window_start));
        assert.equal(
          s.params.reasons.reduce((n: number, r: { count: number }) => n + r.count, 0),
          s.params.count,
          'few kinds of junk: the top reasons cover them all',
        );
      }
      assert.equal(
        summaries.reduce((n, s) => n + s.params.count, 0),
        TOTAL - N,
        'the summaries count every refusal not written one by one',
      );
      const written = rows.filter((r) => r.event === 'deny');
      assert.equal(written.length, N + 1);
      for (const r of written) assert.equal(r.params.client_address, '127.0.0.1');

      const v = await verifyAudit(t.b.db);
      assert.equal(v.ok, true, JSON.stringify(v));
      const good = await postForm(
        `${t.url}/token`,
        { grant_type: 'client_credentials', scope: 'tickets:read' },
        { authorization: basic(agent.id, agent.secret) },
      );
      assert.equal(good.status, 200, JSON.stringify(good.body));
    });

    it(`a known agent’s refusals beyond ${N} are each still written, naming the agent`, async () => {
      freshWindow();
      const tok = await postForm(
        `${t.url}/token`,
        { grant_type: 'client_credentials', scope: 'tickets:read' },
        { authorization: basic(agent.id, agent.secret) },
      );
      assert.equal(tok.status, 200, JSON.stringify(tok.body));
      const seq = await maxSeq();
      const K = N + 15;
      for (let i = 0; i < K; i++) {
        const r = await raw(`${t.url}/credentials/tickets-db`, { headers: { authorization: `Bearer ${tok.body.access_token}` } });
        assert.equal(r.status, 403, r.body);
      }
      // And at /token: a wrong scope, asked by a known agent.
      for (let i = 0; i < K; i++)
        assert.equal(
          (await postForm(`${t.url}/token`, { grant_type: 'client_credentials', scope: 'docs:write' }, { authorization: basic(agent.id, agent.secret) }))
            .status,
          400,
        );
      let rows = await rowsAfter(seq);
      for (let i = 0; i < 50 && rows.length < 2 * K; i++) rows = await rowsAfter(seq);
      assert.equal(rows.length, 2 * K);
      for (const r of rows) {
        assert.equal(r.event, 'deny');
        assert.equal(r.agent_id, agent.id);
      }
      assert.equal(rows.filter((r) => r.params.attempted === 'credential.issue').length, K);
      assert.ok(!rows.some((r) => JSON.stringify(r).includes(tok.body.access_token)));
    });

    it(`a revoked token replayed at /credentials beyond ${N} times: every refusal written, naming its agent and jti`, async () => {
      freshWindow();
      const tok = await postForm(
        `${t.url}/token`,
        { grant_type: 'client_credentials', scope: 'tickets:read cred:tickets-db' },
        { authorization: basic(agent.id, agent.secret) },
      );
      assert.equal(tok.status, 200, JSON.stringify(tok.body));
      await revokeSession(t.b, tok.body.sid, { actor: 'test', via: 'test' });
      const seq = await maxSeq();
      const K = N + 5;
      for (let i = 0; i < K; i++)
        assert.equal((await raw(`${t.url}/credentials/tickets-db`, { headers: { authorization: `Bearer ${tok.body.access_token}` } })).status, 401);
      const rows = await rowsAfter(seq);
      assert.equal(rows.length, K);
      for (const r of rows) {
        assert.equal(r.agent_id, agent.id);
        assert.equal(r.jti, decodeJwt(tok.body.access_token).jti);
        assert.match(r.params.reason_tag, /^token_(session_)?revoked$/);
      }
    });

    it('a refusal claiming an agent id that exists is written one by one; one that does not is junk', async () => {
      freshWindow();
      const seq = await maxSeq();
      for (let i = 0; i < N + 5; i++)
        assert.equal((await postForm(`${t.url}/introspect`, { token: 'x' }, { authorization: basic(agent.id, 'wrong') })).status, 401);
      for (let i = 0; i < N + 5; i++)
        assert.equal((await postForm(`${t.url}/introspect`, { token: 'x' }, { authorization: basic('agt_nosuchagent', 'wrong') })).status, 401);
      const rows = await rowsAfter(seq);
      assert.equal(rows.filter((r) => r.agent_id === agent.id).length, N + 5, 'every guess at a real agent’s secret is on record');
      assert.equal(rows.filter((r) => r.agent_id === 'agt_nosuchagent').length, N, 'the unknown id is junk: its budget, then counted');
    });
  });
});

describe('core: refusals counted at stop are written before the database closes', () => {
  it('a window still open when the server stops is summarised', async () => {
    const t = await startTestBroker();
    try {
      for (let i = 0; i < N + 7; i++) assert.equal((await fetch(`${t.url}/nope`)).status, 404);
      const before = await t.b.db('audit').where({ event: 'deny.summary' });
      assert.equal(before.length, 0, 'still counting');
      await t.server!.close();
      const after = await t.b.db('audit').where({ event: 'deny.summary' });
      assert.equal(after.length, 1);
      assert.equal(JSON.parse(after[0].params).count, 7);
      assert.deepEqual(JSON.parse(after[0].params).reasons, [{ reason: 'no_route', count: 7 }]);
      assert.equal((await verifyAudit(t.b.db)).ok, true);
    } finally {
      await t.close();
    }
  });
});
