import assert from 'node:assert/strict';
import { main } from '../src/cli/main.ts';
import type { Io } from '../src/cli/output.ts';
import { claimsOf, mustSession } from './delegation.kit.ts';
import { credFixture, rowIdOf, type CredFixture } from './credentials.kit.ts';

/** `cordon revoke` from an admin's shell reaches Vault itself, without waiting for a broker's sweep. */
describe('cli: revoke reaches backend credentials', () => {
  let f: CredFixture;
  const saved: Record<string, string | undefined> = {};
  const ENV = [
    'DATABASE_URL',
    'CORDON_KEY_DIR',
    'CORDON_POLICY_DIR',
    'VAULT_ADDR',
    'VAULT_TOKEN',
    'AWS_REGION',
    'AWS_ENDPOINT_URL_STS',
    'AWS_ENDPOINT_URL_IAM',
    'CORDON_LOG_LEVEL',
  ];

  before(async () => {
    // The test broker has no revocation hooks: only the CLI can reach Vault here.
    f = await credFixture({ providers: true });
    for (const k of ENV) saved[k] = process.env[k];
    const c = f.tb.b.config;
    Object.assign(process.env, {
      DATABASE_URL: c.databaseUrl,
      CORDON_KEY_DIR: c.keyDir,
      CORDON_POLICY_DIR: c.policyDir,
      VAULT_ADDR: c.vault!.addr,
      VAULT_TOKEN: (c.vault!.auth as { token: string }).token,
      CORDON_LOG_LEVEL: 'silent',
    });
    delete process.env.AWS_REGION;
  });
  after(async () => {
    for (const k of ENV) {
      if (saved[k] === undefined) delete process.env[k];
      else process.env[k] = saved[k];
    }
    await f?.stop();
  });

  it('revoke --session revokes the Vault lease and marks the record revoked', async () => {
    const a = await f.agent('cli-db', 'creds-owner');
    const tok = await mustSession(f.tb, a, 'cred:vault-db');
    const r = await f.cred('vault-db', tok);
    assert.equal(r.status, 200, JSON.stringify(r.body));
    const sid = claimsOf(tok).sid;
    // Detach the test broker's own hook so that only the CLI process can do the backend work.
    f.tb.b.hooks.onRevoked.length = 0;
    assert.equal(f.vault.isLeaseActive(r.body.lease_id), true);
    const out: string[] = [];
    const err: string[] = [];
    const io: Io = { out: (s) => void out.push(s), err: (s) => void err.push(s) };
    const code = await main(['revoke', '--session', sid], io);
    assert.equal(code, 0, err.join(''));
    assert.match(out.join(''), /Backend credentials were revoked/);
    assert.equal(f.vault.isLeaseActive(r.body.lease_id), false, 'the lease is gone at Vault');
    assert.ok(f.vault.requestsTo('sys/leases/revoke').length >= 1);
    const row = await f.row(await rowIdOf(f, r.body, sid));
    assert.equal(row.state, 'revoked');
  });

  it('a provider that refuses to start (a root VAULT_TOKEN) does not stop the revocation: it is recorded, with a warning', async () => {
    const a = await f.agent('cli-root', 'creds-owner');
    const tok = await mustSession(f.tb, a, 'work:read');
    const sid = claimsOf(tok).sid;
    const saved = process.env.VAULT_TOKEN;
    process.env.VAULT_TOKEN = f.vault.rootToken;
    try {
      const out: string[] = [];
      const err: string[] = [];
      const code = await main(['revoke', '--session', sid], { out: (s) => void out.push(s), err: (s) => void err.push(s) });
      assert.equal(code, 0, err.join(''));
      assert.match(err.join(''), /warning: backend providers are off.*CORDON_VAULT_ALLOW_ROOT/);
      assert.match(out.join(''), /revoked session/);
      assert.notEqual((await f.tb.b.db('sessions').where({ sid }).first()).revoked_at, null);
    } finally {
      process.env.VAULT_TOKEN = saved;
    }
  });
});
