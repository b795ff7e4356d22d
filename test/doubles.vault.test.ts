import assert from 'node:assert/strict';
import vault from 'node-vault';
import { VaultDouble } from './doubles/vault.ts';

type VaultErr = Error & { response?: { statusCode: number; body: { errors?: string[] } } };

/** Run a node-vault call that must fail; return the error node-vault raised. */
async function rejects(p: Promise<unknown>): Promise<VaultErr> {
  try {
    await p;
  } catch (err) {
    return err as VaultErr;
  }
  assert.fail('expected the Vault call to fail');
}

describe('test double: Vault (through node-vault)', () => {
  const v = new VaultDouble('root-token');
  let endpoint: string;
  let t = Date.UTC(2026, 0, 1);
  const root = (): ReturnType<typeof vault> => vault({ endpoint, token: 'root-token' });
  const as = (token: string): ReturnType<typeof vault> => vault({ endpoint, token });

  before(async () => {
    endpoint = await v.start();
    v.now = () => t;
    v.setPolicyPaths('broker', [
      { path: 'auth/token/create', capabilities: ['create', 'update'] },
      { path: 'auth/token/revoke-accessor', capabilities: ['update'] },
      { path: 'sys/leases/revoke', capabilities: ['update'] },
      { path: 'database/creds/*', capabilities: ['read'] },
    ]);
    v.setPolicyPaths('tickets-read', [{ path: 'database/creds/tickets-ro', capabilities: ['read'] }, 'secret/data/tickets/*']);
    v.addDatabaseRole('tickets-ro', 600);
    v.addAwsRole('reports', 900);
  });
  after(() => v.stop());
  beforeEach(() => {
    v.reset();
    v.clearState();
    t = Date.UTC(2026, 0, 1);
  });

  /** A broker token like the one Cordon holds: an orphan with the broker and tickets policies. */
  async function brokerToken(): Promise<string> {
    const r = await root().write('auth/token/create-orphan', { policies: ['broker', 'tickets-read'], ttl: '1h' });
    return r.auth.client_token;
  }

  it('creates a child token in Vault’s response shape, with default added and policies sorted', async () => {
    const r = await root().write('auth/token/create', {
      policies: ['tickets-read', 'broker'],
      ttl: '10m',
      meta: { agent: 'summarizer', session: 's-1' },
      num_uses: 0,
      display_name: 'cordon agent',
    });
    assert.equal(r.lease_id, '');
    assert.equal(r.renewable, false);
    assert.equal(r.data, null);
    assert.match(r.auth.client_token, /^hvs\./);
    assert.equal(typeof r.auth.accessor, 'string');
    assert.deepEqual(r.auth.policies, ['broker', 'default', 'tickets-read']);
    assert.deepEqual(r.auth.token_policies, ['broker', 'default', 'tickets-read']);
    assert.deepEqual(r.auth.metadata, { agent: 'summarizer', session: 's-1' });
    assert.equal(r.auth.lease_duration, 600);
    assert.equal(r.auth.renewable, true);
    assert.equal(r.auth.token_type, 'service');
    assert.equal(r.auth.orphan, false);
    assert.equal(v.getToken(r.auth.client_token)?.parent, 'root-token');
    assert.equal(v.getToken(r.auth.client_token)?.displayName, 'token-cordon-agent');

    const self = await as(r.auth.client_token).tokenLookupSelf();
    assert.equal(self.data.ttl, 600);
    assert.equal(self.data.expire_time, new Date(t + 600_000).toISOString());
    assert.equal(self.data.accessor, r.auth.accessor);
    assert.deepEqual(self.data.meta, { agent: 'summarizer', session: 's-1' });
  });

  it('accepts ttl as "600s", "10m" or a number of seconds; no_default_policy drops default', async () => {
    for (const ttl of ['600s', '10m', 600, '600']) {
      const r = await root().write('auth/token/create', { policies: ['x'], ttl, no_default_policy: true });
      assert.equal(r.auth.lease_duration, 600, `ttl ${String(ttl)}`);
      assert.deepEqual(r.auth.policies, ['x']);
    }
    const bad = await rejects(root().write('auth/token/create', { ttl: 'ten minutes' }));
    assert.equal(bad.response?.statusCode, 400);
  });

  it('records what was sent: method, path, body, headers including X-Vault-Namespace', async () => {
    await vault({ endpoint, token: 'root-token', namespace: 'team-a' }).write('auth/token/create', { policies: ['x'], ttl: '5m' });
    const [req] = v.requestsTo('auth/token/create');
    assert.equal(req?.method, 'POST');
    assert.equal(req?.path, '/v1/auth/token/create');
    assert.deepEqual(req?.body, { policies: ['x'], ttl: '5m' });
    assert.equal(req?.token, 'root-token');
    assert.equal(req?.namespace, 'team-a');
    assert.equal(req?.headers['x-vault-token'], 'root-token');
    assert.equal(req?.status, 200);
  });

  it('refuses a child whose policies are not a subset of the parent’s (400, Vault’s message)', async () => {
    const broker = await brokerToken();
    const err = await rejects(as(broker).write('auth/token/create', { policies: ['admin'], ttl: '5m' }));
    assert.equal(err.response?.statusCode, 400);
    assert.equal(err.message, 'child policies must be subset of parent');
    // A subset is fine, and default comes along because the parent has it.
    const ok = await as(broker).write('auth/token/create', { policies: ['tickets-read'], ttl: '5m' });
    assert.deepEqual(ok.auth.policies, ['default', 'tickets-read']);
    // Only root/sudo may ask for an orphan.
    const orphan = await rejects(as(broker).write('auth/token/create', { policies: ['tickets-read'], no_parent: true }));
    assert.equal(orphan.response?.statusCode, 400);
    assert.equal(orphan.message, 'root or sudo privileges required to create orphan token');
  });

  it('token roles: auth/token/create/:role_name mints children within allowed_policies, not the caller’s policies (Vault’s checks and messages)', async () => {
    v.setPolicyPaths('minter', [
      { path: 'auth/token/create', capabilities: ['update'] },
      { path: 'auth/token/create/cordon-agents', capabilities: ['update'] },
    ]);
    // Roles are written over HTTP (204, as Vault answers) or with addTokenRole, and read back.
    const written = await root().write('auth/token/roles/cordon-agents', {
      allowed_policies: 'tickets-read,Reports',
      disallowed_policies: ['reports'],
      orphan: false,
      renewable: false,
      token_explicit_max_ttl: '10m',
    });
    assert.ok(!written, '204 No Content');
    const role = await root().read('auth/token/roles/cordon-agents');
    assert.deepEqual(role.data.allowed_policies, ['reports', 'tickets-read']);
    assert.deepEqual(role.data.disallowed_policies, ['reports']);
    assert.equal(role.data.orphan, false);
    assert.equal(role.data.renewable, false);
    assert.equal(role.data.token_explicit_max_ttl, 600);
    const minter = (await root().write('auth/token/create-orphan', { policies: ['minter'], ttl: '1h' })).auth.client_token;

    // Without the role, the subset rule: the minter does not hold tickets-read.
    const plain = await rejects(as(minter).write('auth/token/create', { policies: ['tickets-read'], ttl: '5m', no_default_policy: true }));
    assert.equal(plain.response?.statusCode, 400);
    assert.equal(plain.message, 'child policies must be subset of parent');

    // Through the role: exactly what was asked, a child of the caller, bounded by the role.
    const ok = await as(minter).write('auth/token/create/cordon-agents', { policies: ['tickets-read'], ttl: '1h', renewable: true, no_default_policy: true });
    assert.deepEqual(ok.auth.policies, ['tickets-read']);
    assert.equal(ok.auth.orphan, false);
    assert.equal(ok.auth.renewable, false, 'the role says not renewable');
    assert.equal(ok.auth.lease_duration, 600, 'token_explicit_max_ttl caps the asked ttl');
    const child = v.getToken(ok.auth.client_token)!;
    assert.equal(child.parent, minter);
    assert.equal(child.path, 'auth/token/create/cordon-agents');
    // With a role, default comes along unless no_default_policy (or the role disallows it).
    const withDefault = await as(minter).write('auth/token/create/cordon-agents', { policies: ['tickets-read'], ttl: '5m' });
    assert.deepEqual(withDefault.auth.policies, ['default', 'tickets-read']);

    const outside = await rejects(as(minter).write('auth/token/create/cordon-agents', { policies: ['admin'], no_default_policy: true }));
    assert.equal(outside.response?.statusCode, 400);
    assert.equal(
      outside.message,
      'token policies (["admin"]) must be subset of the role\'s allowed policies (["reports" "tickets-read"]) or glob policies ([])',
    );
    const disallowed = await rejects(as(minter).write('auth/token/create/cordon-agents', { policies: ['reports'], no_default_policy: true }));
    assert.equal(disallowed.response?.statusCode, 400);
    assert.equal(disallowed.message, 'token policy "reports" is disallowed by this role');
    v.setPolicyPaths('minter', [{ path: 'auth/token/create/*', capabilities: ['update'] }]);
    const unknown = await rejects(as(minter).write('auth/token/create/nope', { policies: ['tickets-read'] }));
    assert.equal(unknown.response?.statusCode, 400);
    assert.equal(unknown.message, 'unknown role nope');
    // The role's path is ACL'd like any other: the broker policy grants only auth/token/create.
    const broker = await brokerToken();
    const denied = await rejects(as(broker).write('auth/token/create/cordon-agents', { policies: ['tickets-read'] }));
    assert.equal(denied.response?.statusCode, 403);
    // An orphan role detaches the child; a role never hands out root.
    v.addTokenRole('detached', { allowedPolicies: ['tickets-read', 'root'], orphan: true });
    const orphan = await as(minter).write('auth/token/create/detached', { policies: ['tickets-read'], no_default_policy: true });
    assert.equal(orphan.auth.orphan, true);
    assert.equal(v.getToken(orphan.auth.client_token)?.parent, null);
    const rooted = await rejects(as(minter).write('auth/token/create/detached', { policies: ['root'] }));
    assert.equal(rooted.message, 'root tokens may not be created without parent token being root');
    // Revoking the caller takes its role-made children with it.
    await root().write('auth/token/revoke', { token: minter });
    assert.equal(v.isTokenActive(ok.auth.client_token), false);
    assert.equal(v.isTokenActive(orphan.auth.client_token), true);
  });

  it('denies paths no policy grants with 403 permission denied; a missing token is 400', async () => {
    const broker = await brokerToken();
    const err = await rejects(as(broker).read('secret/data/other'));
    assert.equal(err.response?.statusCode, 403);
    assert.deepEqual(err.response?.body.errors, ['1 error occurred:\n\t* permission denied\n\n']);
    const lookup = await rejects(as(broker).write('auth/token/lookup', { token: 'root-token' }));
    assert.equal(lookup.response?.statusCode, 403, 'auth/token/lookup is for admins');
    const none = await rejects(vault({ endpoint, token: '' }).read('database/creds/tickets-ro'));
    assert.equal(none.response?.statusCode, 400);
    assert.equal(none.message, 'missing client token');
    const bogus = await rejects(as('hvs.nope').read('database/creds/tickets-ro'));
    assert.equal(bogus.response?.statusCode, 403);
  });

  it('issues database and aws dynamic secrets with leases owned by the reading token', async () => {
    const broker = await brokerToken();
    const db = await as(broker).read('database/creds/tickets-ro');
    assert.match(db.lease_id, /^database\/creds\/tickets-ro\/[A-Za-z0-9]+$/);
    assert.equal(db.renewable, true);
    assert.equal(db.lease_duration, 600);
    assert.equal(typeof db.data.username, 'string');
    assert.equal(typeof db.data.password, 'string');
    assert.equal(v.getLease(db.lease_id)?.owner, broker);
    assert.equal(v.isLeaseActive(db.lease_id), true);

    const aws = await root().read('aws/creds/reports');
    assert.match(aws.lease_id, /^aws\/creds\/reports\//);
    assert.deepEqual(Object.keys(aws.data).sort(), ['access_key', 'secret_key', 'security_token']);
    assert.equal(aws.data.security_token, null);

    const unknown = await rejects(root().read('database/creds/nope'));
    assert.equal(unknown.response?.statusCode, 400);
    assert.equal(unknown.message, 'unknown role: nope');
  });

  it('revokes a lease through sys/leases/revoke (204); an unknown lease is a no-op, as in Vault', async () => {
    const broker = await brokerToken();
    const db = await as(broker).read('database/creds/tickets-ro');
    const r = await as(broker).write('sys/leases/revoke', { lease_id: db.lease_id });
    assert.equal(r, '', '204 has no body');
    assert.equal(v.isLeaseActive(db.lease_id), false);
    assert.equal(v.requestsTo('sys/leases/revoke')[0]?.status, 204);
    await root().revoke({ lease_id: 'database/creds/tickets-ro/unknown' }); // PUT, also 204
    const missing = await rejects(root().write('sys/leases/revoke', {}));
    assert.equal(missing.response?.statusCode, 400);
    assert.equal(missing.message, 'lease_id must be specified');
  });

  it('revoking a token revokes its descendants and every lease they created, and nothing above', async () => {
    const broker = await brokerToken();
    const child = (await as(broker).write('auth/token/create', { policies: ['broker', 'tickets-read'], ttl: '10m' })).auth;
    const grandchild = (await as(child.client_token).write('auth/token/create', { policies: ['tickets-read'], ttl: '5m' })).auth;
    const lease = (await as(grandchild.client_token).read('database/creds/tickets-ro')).lease_id;
    const brokerLease = (await as(broker).read('database/creds/tickets-ro')).lease_id;
    assert.deepEqual(v.getToken(child.client_token)?.children, [grandchild.client_token]);

    await as(broker).write('auth/token/revoke-accessor', { accessor: child.accessor });
    assert.equal(v.isTokenActive(child.client_token), false);
    assert.equal(v.isAccessorActive(child.accessor), false);
    assert.equal(v.isTokenActive(grandchild.client_token), false);
    assert.equal(v.isLeaseActive(lease), false);
    assert.equal(v.isTokenActive(broker), true);
    assert.equal(v.isLeaseActive(brokerLease), true);
    const gone = await rejects(as(grandchild.client_token).tokenLookupSelf());
    assert.equal(gone.response?.statusCode, 403);

    const again = await rejects(as(broker).write('auth/token/revoke-accessor', { accessor: child.accessor }));
    assert.equal(again.response?.statusCode, 400);
    assert.equal(again.message, 'invalid accessor');

    await root().write('auth/token/revoke', { token: broker });
    assert.equal(v.isTokenActive(broker), false);
    assert.equal(v.isLeaseActive(brokerLease), false);
  });

  it('create-orphan tokens survive their creator; plain children do not', async () => {
    const admin = (await root().write('auth/token/create', { policies: ['broker', 'tickets-read'], ttl: '1h' })).auth.client_token;
    const orphan = (await root().write('auth/token/create-orphan', { policies: ['tickets-read'], ttl: '1h' })).auth;
    assert.equal(orphan.orphan, true);
    assert.equal(v.getToken(orphan.client_token)?.parent, null);
    const child = (await as(admin).write('auth/token/create', { policies: ['tickets-read'] })).auth.client_token;
    await root().write('auth/token/revoke', { token: admin });
    assert.equal(v.isTokenActive(child), false);
    assert.equal(v.isTokenActive(orphan.client_token), true);
  });

  it('expires tokens and leases on the injected clock; a child dies with its parent even if its own TTL is longer', async () => {
    const parent = (await root().write('auth/token/create', { policies: ['broker', 'tickets-read'], ttl: '60s' })).auth.client_token;
    // Vault does not cap the child's TTL at the parent's: it reports what was asked...
    const child = (await as(parent).write('auth/token/create', { policies: ['tickets-read'], ttl: '10m' })).auth;
    assert.equal(child.lease_duration, 600);
    const lease = (await as(child.client_token).read('database/creds/tickets-ro')).lease_id;
    t += 59_000;
    assert.equal((await as(child.client_token).tokenLookupSelf()).data.ttl, 541);
    t += 1_000; // ...but the parent's expiry revokes the whole tree and its leases.
    assert.equal(v.isTokenActive(parent), false);
    assert.equal(v.getToken(parent)?.state, 'expired');
    assert.equal(v.isTokenActive(child.client_token), false);
    assert.equal(v.isLeaseActive(lease), false);
    const err = await rejects(as(child.client_token).read('database/creds/tickets-ro'));
    assert.equal(err.response?.statusCode, 403);

    // A lease runs out on its own TTL while its token lives.
    const b = await brokerToken();
    const l2 = (await as(b).read('database/creds/tickets-ro')).lease_id;
    t += 600_000;
    assert.equal(v.isLeaseActive(l2), false);
    assert.equal(v.getLease(l2)?.state, 'expired');
    assert.equal(v.isTokenActive(b), true);
  });

  it('explicit_max_ttl and the system max cap a token’s TTL', async () => {
    const r = await root().write('auth/token/create', { policies: ['x'], ttl: '2h', explicit_max_ttl: '30m' });
    assert.equal(r.auth.lease_duration, 1800);
    assert.equal(r.warnings?.length, 1);
    const small = new VaultDouble('r', { maxLeaseTtlSec: 3600 });
    const url = await small.start();
    try {
      const s = await vault({ endpoint: url, token: 'r' }).write('auth/token/create', { policies: ['x'], ttl: '2h' });
      assert.equal(s.auth.lease_duration, 3600);
    } finally {
      await small.stop();
    }
  });

  it('num_uses: a one-use token reading a dynamic secret gets it revoked at once, as Vault does', async () => {
    const broker = await brokerToken();
    const once = (await as(broker).write('auth/token/create', { policies: ['tickets-read'], ttl: '5m', num_uses: 1 })).auth;
    assert.equal(once.num_uses, 1);
    const err = await rejects(as(once.client_token).read('database/creds/tickets-ro'));
    assert.equal(err.response?.statusCode, 400);
    assert.match(err.message, /token had one use left, so leased credentials were immediately revoked/);
    assert.equal(v.isTokenActive(once.client_token), false);
    assert.equal(
      v.listLeases(once.client_token).every((l) => l.state === 'revoked'),
      true,
    );

    const twice = (await as(broker).write('auth/token/create', { policies: ['broker', 'tickets-read'], ttl: '5m', num_uses: 2 })).auth;
    const kept = await as(twice.client_token).read('database/creds/tickets-ro');
    assert.equal(v.isLeaseActive(kept.lease_id), true);
    const cannot = await rejects(as(twice.client_token).write('auth/token/create', { policies: ['tickets-read'] }));
    assert.equal(cannot.response?.statusCode, 400);
    assert.equal(cannot.message, 'restricted use token cannot generate child tokens');
    assert.equal(v.isTokenActive(twice.client_token), false, 'the second use was the last');
    assert.equal(v.isLeaseActive(kept.lease_id), false, 'and its leases go with it');
  });

  it('answers 503 "Vault is sealed" while sealed; node-vault exposes the status code', async () => {
    v.sealed = true;
    const err = await rejects(root().read('database/creds/tickets-ro'));
    assert.equal(err.response?.statusCode, 503);
    assert.equal(err.message, 'Vault is sealed');
    const health = await root().health();
    assert.equal(health.sealed, true);
    v.sealed = false;
    await root().read('database/creds/tickets-ro');
  });

  it('failNext injects one failure (optionally for one path); delayMs slows answers', async () => {
    v.failNext(500, ['internal error'], 'database/creds');
    const broker = await brokerToken(); // not affected: different path
    const err = await rejects(as(broker).read('database/creds/tickets-ro'));
    assert.equal(err.response?.statusCode, 500);
    assert.equal(err.message, 'internal error');
    await as(broker).read('database/creds/tickets-ro');
    v.delayMs = 120;
    const t0 = Date.now();
    await as(broker).tokenLookupSelf();
    assert.ok(Date.now() - t0 >= 100);
  });

  it('logs in with AppRole and JWT (orphan tokens, default added, role metadata)', async () => {
    v.addAppRole('role-1', 'secret-1', ['broker'], { roleName: 'cordon', ttlSec: 1200 });
    v.addJwtRole('cordon', ['broker'], (jwt) => jwt === 'good.jwt.sig');
    const c = vault({ endpoint });
    const a = await c.approleLogin({ role_id: 'role-1', secret_id: 'secret-1' });
    assert.deepEqual(a.auth.policies, ['broker', 'default']);
    assert.deepEqual(a.auth.metadata, { role_name: 'cordon' });
    assert.equal(a.auth.lease_duration, 1200);
    assert.equal(a.auth.orphan, true);
    assert.equal(c.token, a.auth.client_token, 'node-vault switches to the login token');
    await c.read('database/creds/tickets-ro');

    const bad = await rejects(vault({ endpoint }).approleLogin({ role_id: 'role-1', secret_id: 'wrong' }));
    assert.equal(bad.response?.statusCode, 400);
    assert.equal(bad.message, 'invalid role or secret ID');

    const j = await vault({ endpoint }).jwtLogin({ role: 'cordon', jwt: 'good.jwt.sig' });
    assert.deepEqual(j.auth.metadata, { role: 'cordon' });
    assert.equal(j.auth.lease_duration, 768 * 3600);
    const badJwt = await rejects(vault({ endpoint }).jwtLogin({ role: 'cordon', jwt: 'forged' }));
    assert.equal(badJwt.response?.statusCode, 400);
    assert.match(badJwt.message, /^error validating token/);
  });

  it('serves KV v2 reads (lease_duration 0) and 404 {"errors":[]} for a missing secret', async () => {
    v.putKv('tickets/api', { key: 'k1' });
    v.putKv('tickets/api', { key: 'k2' });
    const broker = await brokerToken();
    const r = await as(broker).read('secret/data/tickets/api');
    assert.equal(r.lease_duration, 0);
    assert.deepEqual(r.data.data, { key: 'k2' });
    assert.equal(r.data.metadata.version, 2);
    const old = await as(broker).read('secret/data/tickets/api?version=1');
    assert.deepEqual(old.data.data, { key: 'k1' });
    const missing = await rejects(as(broker).read('secret/data/tickets/none'));
    assert.equal(missing.response?.statusCode, 404);
    assert.deepEqual(missing.response?.body, { errors: [] });
  });

  it('renews leases up to their max TTL and looks tokens up for admins', async () => {
    const broker = await brokerToken();
    const lease = await as(broker).read('database/creds/tickets-ro');
    t += 300_000;
    const renewed = await root().write('sys/leases/renew', { lease_id: lease.lease_id, increment: 600 });
    assert.equal(renewed.lease_duration, 600);
    assert.equal(v.getLease(lease.lease_id)?.expiresAtMs, t + 600_000);
    const info = await root().write('auth/token/lookup', { token: broker });
    assert.deepEqual(info.data.policies, ['broker', 'default', 'tickets-read']);
    assert.equal(info.data.orphan, true);
  });
});
