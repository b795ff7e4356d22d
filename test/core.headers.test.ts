import assert from 'node:assert/strict';
import { credentialsRoute } from '../src/http/credentials.ts';
import { startTestBroker, type TestBroker } from './helpers/broker.ts';

const b64 = (s: string): string => Buffer.from(s).toString('base64url');

/** Error descriptions quote what the caller sent; the challenge header must still be sendable. */
describe('core: WWW-Authenticate with hostile text', () => {
  let t: TestBroker;
  before(async () => {
    t = await startTestBroker({ ext: { routes: [credentialsRoute] } });
  });
  after(async () => t?.close());

  it('a token whose alg is not Latin-1 gets a 401 JSON answer, not a 500 page', async () => {
    const token = `${b64('{"alg":"一","typ":"at+jwt","kid":"x"}')}.${b64('{}')}.${b64('sig')}`;
    const r = await fetch(`${t.url}/credentials/tickets-db`, { method: 'POST', headers: { authorization: `Bearer ${token}` } });
    assert.equal(r.status, 401);
    assert.match(r.headers.get('content-type') ?? '', /application\/json/);
    const body = await r.json();
    assert.equal(body.error, 'invalid_token');
    assert.match(r.headers.get('www-authenticate') ?? '', /^Bearer error="invalid_token"/);
    // And the broker still serves.
    assert.equal((await fetch(`${t.url}/healthz`)).status, 200);
  });
});
