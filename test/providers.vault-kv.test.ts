import assert from 'node:assert/strict';
import pino from 'pino';
import { ManualClock } from '../src/clock.ts';
import { VaultProvider } from '../src/providers/vault.ts';
import { ProviderError, type IssueRequest } from '../src/providers/provider.ts';
import type { CredentialSpec } from '../src/policy/types.ts';
import { VaultDouble } from './doubles/vault.ts';

const log = pino({ level: 'silent' });

/** An issue request for `spec` from a token with `tokenLeft` seconds to live. */
function request(clock: ManualClock, spec: CredentialSpec, tokenLeft = 600): IssueRequest {
  const now = clock.now();
  return {
    credentialId: 'crd_AAAAAAAAAAAAAAAAAAAAAA',
    session: { sid: 'ses_BBBBBBBBBBBBBBBBBBBBBB', agentId: 'agt_CCCCCCCCCCCCCCCCCCCCCC', agentName: 'owner', task: null, expiresAt: now + 3_600_000 },
    claims: {
      iss: 'x',
      sub: 'agt_C',
      aud: 'x',
      iat: 0,
      nbf: 0,
      exp: Math.floor((now + tokenLeft * 1000) / 1000),
      jti: 'jti-1',
      client_id: 'agt_CCCCCCCCCCCCCCCCCCCCCC',
      scope: '',
      sid: 'ses_B',
      cordon_depth: 0,
    },
    holderName: 'owner',
    name: 'tickets-key',
    spec,
    now,
    remainingSec: { token: tokenLeft, session: 3600 },
    tokenExpiresAt: now + tokenLeft * 1000,
  };
}

describe('providers: Vault kv (a KV v2 secret read with the broker’s own login, for the gateway)', () => {
  const v = new VaultDouble('root-token');
  const clock = new ManualClock(Date.now());
  const spec: CredentialSpec = { provider: 'vault', kv: 'secret/data/tickets', deliver: 'gateway', ttl: 300 };
  let p: VaultProvider;
  let brokerToken: string;
  const noCheckpoint = async (): Promise<void> => assert.fail('a kv read creates nothing, so it has nothing to checkpoint');
  const issue = (s: CredentialSpec = spec, tokenLeft?: number) => {
    const req = request(clock, s, tokenLeft);
    return { req, out: p.issue(req, p.plan(req), noCheckpoint) };
  };

  before(async () => {
    await v.start();
    v.now = () => clock.now();
    v.setPolicyPaths('broker', [
      { path: 'auth/token/lookup-self', capabilities: ['read'] },
      { path: 'secret/data/tickets', capabilities: ['read'] },
    ]);
  });
  after(() => v.stop());
  // A Vault without secrets, and a provider logged in with a token holding only the broker policy.
  beforeEach(() => {
    v.reset();
    v.clearState();
    brokerToken = v.mintToken({ policies: ['broker'], addDefault: false, displayName: 'cordon-broker' }).token;
    p = new VaultProvider({ addr: v.url, timeoutMs: 1000, auth: { method: 'token', token: brokerToken } }, { clock, log, clockSkewSec: 30 });
  });

  it('answers the latest version’s fields, static, with the broker’s token and no parent, lease or checkpoint; cached at most ttl', async () => {
    v.putKv('tickets', { api_key: 'k-old' });
    v.putKv('tickets', { api_key: 'k-123', endpoint: 'https://tickets.internal' });
    const { out } = issue();
    const r = await out;
    assert.deepEqual(r.credentials, { api_key: 'k-123', endpoint: 'https://tickets.internal' });
    assert.equal(r.static, true);
    assert.deepEqual(r.handle, { kind: 'static' });
    assert.equal(r.leaseId, undefined);
    assert.equal(r.expiresAt, clock.now() + 300_000);
    assert.deepEqual(r.details, { kv: 'secret/data/tickets', ttl_sec: 300, static: true, version: 2 });
    const reads = v.requestsTo('secret/data/tickets');
    assert.equal(reads.length, 1);
    assert.equal(reads[0].method, 'GET');
    assert.equal(reads[0].token, brokerToken, 'read with the broker’s own login');
    assert.equal(v.requestsTo(/^auth\/token\/create/).length, 0, 'no parent token: nothing is made for a static secret');
    assert.ok(!JSON.stringify(r.details).includes('k-123'), 'the details (audit) never hold the value');
  });

  it('never cached past the token it is read for', async () => {
    v.putKv('tickets', { api_key: 'k-1' });
    const { req, out } = issue(spec, 60);
    const r = await out;
    assert.ok(r.expiresAt <= req.tokenExpiresAt);
    assert.equal(r.expiresAt, clock.now() + 59_000, 'plan: the token’s life less a second');
  });

  it('revoking it asks nothing of Vault and says the value stays valid (not "revoked")', async () => {
    const [r] = await p.revoke([{ id: 'crd_1', sid: 'ses_1', jti: 'j', handle: { kind: 'static' }, expiresAt: clock.now() + 1000 }], {
      now: clock.now(),
      scope: 'session',
      recordDeny: async () => {},
      syncDenies: async () => ({ applied: [], omitted: [] }),
    });
    assert.equal(r.outcome, 'not_revocable');
    assert.match(r.note, /nothing was made for it.*valid until it is rotated in Vault/);
    assert.equal(v.requests.length, 0);
  });

  it('a missing secret, a path the broker may not read, or an answer that is not KV v2: a ProviderError naming the path', async () => {
    await assert.rejects(issue().out, (e: unknown) => e instanceof ProviderError && e.kind === 'not_found' && /secret\/data\/tickets/.test(e.description));
    await assert.rejects(
      issue({ ...spec, kv: 'secret/data/other' }).out,
      (e: unknown) => e instanceof ProviderError && e.kind === 'refused' && e.code === 'bad_gateway' && /secret\/data\/other/.test(e.description),
    );
    // Any Vault answer without data.data and data.metadata (a KV v1 mount, another engine) is refused, not handed on.
    await assert.rejects(
      issue({ ...spec, kv: 'auth/token/lookup-self' }).out,
      (e: unknown) => e instanceof ProviderError && e.kind === 'bad_answer' && /without a KV v2 secret/.test(e.description),
    );
  });
});
