import assert from 'node:assert/strict';
import { issueBootstrapToken } from '../src/sessions/bootstrap.ts';
import { sessions } from '../src/store/sessions.ts';
import { startTestBroker, postForm, basic, type TestBroker } from './helpers/broker.ts';

const TE = 'urn:ietf:params:oauth:grant-type:token-exchange';

/** `POST /revoke … end_session=true`: the opener ends its whole session, so nobody can renew it. */
describe('core: ending a session through /revoke', () => {
  let t: TestBroker;
  let planner: { id: string; secret: string };
  let reader: { id: string; secret: string };
  before(async () => {
    t = await startTestBroker();
    planner = await t.register('planner', 'research-planner');
    reader = await t.register('reader', 'doc-reader');
  });
  after(async () => t?.close());

  const open = async () => {
    const r = await postForm(`${t.url}/token`, { grant_type: 'client_credentials', scope: 'docs:read' }, { authorization: basic(planner.id, planner.secret) });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    return r.body as { access_token: string; sid: string };
  };

  it('revoking with end_session=true ends the session: renewal is refused afterwards', async () => {
    const s = await open();
    const plain = await postForm(`${t.url}/revoke`, { token: s.access_token }, { authorization: basic(planner.id, planner.secret) });
    assert.equal(plain.status, 200);
    assert.equal((await sessions.get(t.b.db, s.sid))!.revokedAt, null, 'a plain revoke leaves the session renewable');
    const renewed = await postForm(
      `${t.url}/token`,
      { grant_type: 'client_credentials', scope: 'docs:read', session: s.sid },
      { authorization: basic(planner.id, planner.secret) },
    );
    assert.equal(renewed.status, 200);
    const end = await postForm(
      `${t.url}/revoke`,
      { token: renewed.body.access_token, end_session: 'true' },
      { authorization: basic(planner.id, planner.secret) },
    );
    assert.equal(end.status, 200);
    assert.notEqual((await sessions.get(t.b.db, s.sid))!.revokedAt, null);
    const again = await postForm(
      `${t.url}/token`,
      { grant_type: 'client_credentials', scope: 'docs:read', session: s.sid },
      { authorization: basic(planner.id, planner.secret) },
    );
    assert.equal(again.status, 400);
    assert.equal(again.body.error, 'invalid_grant');
  });

  it('only the opener may end a session; a delegate may not', async () => {
    const s = await open();
    const d = await postForm(
      `${t.url}/token`,
      {
        grant_type: TE,
        subject_token: s.access_token,
        subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
        requested_actor: reader.id,
        scope: 'docs:read',
      },
      { authorization: basic(planner.id, planner.secret) },
    );
    assert.equal(d.status, 200, JSON.stringify(d.body));
    const r = await postForm(`${t.url}/revoke`, { token: d.body.access_token, end_session: 'true' }, { authorization: basic(reader.id, reader.secret) });
    assert.equal(r.status, 400);
    assert.equal(r.body.error, 'unauthorized_client');
    assert.equal((await sessions.get(t.b.db, s.sid))!.revokedAt, null);
  });

  it('end_session must be true or false', async () => {
    const s = await open();
    const r = await postForm(`${t.url}/revoke`, { token: s.access_token, end_session: 'yes' }, { authorization: basic(planner.id, planner.secret) });
    assert.equal(r.status, 400);
    assert.equal(r.body.error, 'invalid_request');
  });

  it('a secretless (bootstrap) agent ends its session as the public workload client; a client_credentials session cannot be revoked that way', async () => {
    const { token } = await issueBootstrapToken(t.b, 'reader', { ttlSec: 300 });
    const s = await postForm(`${t.url}/token`, {
      grant_type: TE,
      client_id: 'cordon-workload',
      subject_token: token,
      subject_token_type: 'urn:cordon:token-type:bootstrap',
      scope: 'docs:read',
    });
    assert.equal(s.status, 200, JSON.stringify(s.body));
    const end = await postForm(`${t.url}/revoke`, { client_id: 'cordon-workload', token: s.body.access_token, end_session: 'true' });
    assert.equal(end.status, 200, JSON.stringify(end.body));
    assert.notEqual((await sessions.get(t.b.db, s.body.sid))!.revokedAt, null);

    const cc = await open();
    const refused = await postForm(`${t.url}/revoke`, { client_id: 'cordon-workload', token: cc.access_token, end_session: 'true' });
    assert.equal(refused.status, 401);
    assert.equal(refused.body.error, 'invalid_client');
    assert.equal((await sessions.get(t.b.db, cc.sid))!.revokedAt, null);
  });
});
