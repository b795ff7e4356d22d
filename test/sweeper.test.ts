import assert from 'node:assert/strict';
import { orphanGraceMs, startSweeper, sweepOnce } from '../src/tokens/sweeper.ts';
import { providersOf } from '../src/tokens/credentials.ts';
import { revokeSession } from '../src/tokens/revoke.ts';
import { iamDenies } from '../src/store/credentials.ts';
import type { CredentialProvider } from '../src/providers/provider.ts';
import { auditHead, auditSince, claimsOf, mustSession } from './delegation.kit.ts';
import { credFixture, type CredFixture } from './credentials.kit.ts';

/** A request whose answer never comes (the broker "crashed" while serving it): stop waiting after a moment. */
const abandon = (p: Promise<unknown>): Promise<unknown> => Promise.race([p.catch(() => undefined), new Promise((r) => setTimeout(r, 300))]);
const sessionEnd = async (f: CredFixture, sid: string): Promise<number> => Number((await f.tb.b.db('sessions').where({ sid }).first()).expires_at);

describe('sweeper: everything dies with the session', () => {
  let f: CredFixture;
  beforeEach(async () => {
    f = await credFixture({ timeoutMs: 500 });
  });
  afterEach(async () => {
    await f?.stop();
  });

  it('revokes the Vault token and lease of a session that simply expired, marks it swept, and is idempotent', async () => {
    const a = await f.agent('sw-owner', 'creds-owner');
    const tok = await mustSession(f.tb, a, 'cred:vault-token cred:vault-db');
    const sid = claimsOf(tok).sid;
    const vt = (await f.cred('vault-token', tok)).body;
    const db = (await f.cred('vault-db', tok)).body;
    f.tb.clock.set((await sessionEnd(f, sid)) + 1000);
    f.vault.reset();

    const rep = await sweepOnce(f.tb.b);
    assert.equal(rep.sessionsSwept, 1);
    assert.equal(rep.revoked, 2);
    assert.deepEqual(f.vault.requestsTo('sys/leases/revoke').map((x) => x.body.lease_id), [db.lease_id], 'the lease was revoked by id');
    assert.ok(f.vault.requestsTo('auth/token/revoke-accessor').some((x) => x.body.accessor === vt.credentials.accessor), 'the token by accessor');
    assert.equal(f.vault.isLeaseActive(db.lease_id), false);
    assert.equal(f.vault.isTokenActive(vt.credentials.client_token), false);
    for (const r of await f.rows(sid)) assert.equal(r.state, 'revoked', `${r.name}: ${r.note}`);
    assert.ok((await f.tb.b.db('sessions').where({ sid }).first()).swept_at !== null);

    f.vault.reset();
    const again = await sweepOnce(f.tb.b);
    assert.equal(again.sessionsSwept + again.revoked + again.failed + again.orphans, 0, 'nothing left to do');
    assert.equal(f.vault.requests.length, 0);
  });

  it('two sweepers at once (two replicas) revoke each credential exactly once', async () => {
    const a = await f.agent('sw-twice', 'creds-owner');
    const tok = await mustSession(f.tb, a, 'cred:vault-db');
    const sid = claimsOf(tok).sid;
    const db = (await f.cred('vault-db', tok)).body;
    f.tb.clock.set((await sessionEnd(f, sid)) + 1000);
    f.vault.reset();
    const [x, y] = await Promise.all([sweepOnce(f.tb.b), sweepOnce(f.tb.b)]);
    assert.equal(x.revoked + y.revoked, 1);
    assert.equal(f.vault.requestsTo('sys/leases/revoke').filter((r) => r.body.lease_id === db.lease_id).length, 1);
  });

  /** A session with 10 minutes left and an allow_overhang STS credential that outlives it by 5. */
  async function overhanging(name: string): Promise<{ sid: string; end: number; c: any }> {
    const a = await f.agent(name, 'creds-owner');
    let tok = await mustSession(f.tb, a, 'cred:s3-overhang');
    const sid = claimsOf(tok).sid;
    const end = await sessionEnd(f, sid);
    f.tb.clock.set(end - 600_000);
    tok = await mustSession(f.tb, a, 'cred:s3-overhang', { session: sid });
    const c = (await f.cred('s3-overhang', tok)).body;
    assert.ok(Date.parse(c.expires_at) > end, 'outlives the session');
    return { sid, end, c };
  }

  it('a session that simply expired is not a revocation: no IAM deny, and an allow_overhang STS credential lives on (as documented), listed so', async () => {
    const { sid, end, c } = await overhanging('sw-sts-end');
    f.tb.clock.set(end + 1000);
    f.sts.reset();
    const rep = await sweepOnce(f.tb.b);
    assert.equal(rep.sessionsSwept, 1);
    assert.equal(f.sts.requests.filter((x) => x.action === 'PutRolePolicy').length, 0, 'no deny was put on the role');
    assert.deepEqual(await iamDenies.bySession(f.tb.b.db, sid), []);
    assert.equal(f.sts.isCredentialDenied(c.credentials.AccessKeyId), false);
    assert.equal(f.sts.isCredentialUsable(c.credentials.AccessKeyId, { action: 's3:GetObject', resource: 'arn:aws:s3:::reports/x' }), true, 'usable until its expires_at');
    const [row] = await f.rows(sid);
    assert.equal(row.state, 'issued', row.note!);
    assert.match(row.note!, /session ended.*allow_overhang.*not denied/);
    assert.equal((await sweepOnce(f.tb.b)).sessionsSwept, 0, 'swept once');
  });

  it('a revoked session’s allow_overhang STS credential is denied, and the sweeper removes the deny once it has expired', async () => {
    const { sid, end, c } = await overhanging('sw-sts-rev');
    f.tb.clock.set(end - 60_000);
    const head = await auditHead(f.tb.b);
    await revokeSession(f.tb.b, sid, { actor: 'admin', via: 'test' });
    f.tb.clock.set(end + 1000);
    await sweepOnce(f.tb.b);
    assert.equal(f.sts.isCredentialDenied(c.credentials.AccessKeyId), true);
    const [deny] = await iamDenies.bySession(f.tb.b.db, sid);
    assert.ok(deny && deny.removedAt === null);
    assert.ok(Object.keys(f.sts.rolePolicies('agent-reports')).includes(deny.policyName));

    // Not yet: the credential is still alive.
    await sweepOnce(f.tb.b);
    assert.ok(Object.keys(f.sts.rolePolicies('agent-reports')).includes(deny.policyName));
    f.tb.clock.set(deny.removeAfter + 1);
    const rep = await sweepOnce(f.tb.b);
    assert.equal(rep.deniesRemoved, 1);
    assert.deepEqual(f.sts.rolePolicies('agent-reports'), {}, 'the role is clean again');
    assert.ok((await iamDenies.bySession(f.tb.b.db, sid))[0].removedAt !== null);
    const events = (await auditSince(f.tb.b, head)).map((x) => x.event);
    assert.ok(events.includes('credential.iam_deny') && events.includes('credential.iam_deny_removed'));
  });

  it('retries a revocation that failed (Vault sealed) until it succeeds', async () => {
    const a = await f.agent('sw-retry', 'creds-owner');
    const tok = await mustSession(f.tb, a, 'cred:vault-token');
    const sid = claimsOf(tok).sid;
    const vt = (await f.cred('vault-token', tok)).body;
    f.vault.sealed = true;
    await revokeSession(f.tb.b, sid, { actor: 'admin', via: 'test' });
    let [row] = await f.rows(sid);
    assert.equal(row.state, 'revoke_failed');
    assert.match(row.note!, /Vault is sealed/);
    assert.equal(f.vault.isTokenActive(vt.credentials.client_token), true);

    f.vault.sealed = false;
    await sweepOnce(f.tb.b); // too soon: one attempt per interval
    [row] = await f.rows(sid);
    assert.equal(row.state, 'revoke_failed');
    f.tb.clock.advance(f.tb.b.config.sweepIntervalSec * 1000);
    const rep = await sweepOnce(f.tb.b);
    assert.equal(rep.retried, 1);
    [row] = await f.rows(sid);
    assert.equal(row.state, 'revoked');
    assert.equal(f.vault.isTokenActive(vt.credentials.client_token), false);
  });

  describe('orphans: a crash between the backend answering and the broker recording it', () => {
    /** Wraps a provider so that the broker "dies" right after the backend answered: the answer is never recorded. */
    function crashAfterIssue(name: 'vault' | 'aws-sts'): { answers: Array<Record<string, any>>; restore(): void } {
      const map = providersOf(f.tb.b);
      const real = map.get(name)!;
      const answers: Array<Record<string, any>> = [];
      const crashing: CredentialProvider = {
        name: real.name,
        plan: (r) => real.plan(r),
        issue: async (r, p, cp) => {
          answers.push((await real.issue(r, p, cp)).credentials);
          return new Promise(() => {}); // the process is gone
        },
        revoke: (t, c) => real.revoke(t, c),
        health: () => real.health(),
        ...(real.removeDeny ? { removeDeny: (d) => real.removeDeny!(d) } : {}),
      };
      map.set(name, crashing);
      return { answers, restore: () => map.set(name, real) };
    }

    it('start-up recovery revokes a Vault credential whose answer was lost (the intent named its parent)', async () => {
      const a = await f.agent('orphan-v', 'creds-owner');
      const tok = await mustSession(f.tb, a, 'cred:vault-token cred:vault-db');
      const sid = claimsOf(tok).sid;
      const crash = crashAfterIssue('vault');
      await abandon(f.cred('vault-token', tok));
      await abandon(f.cred('vault-db', tok));
      crash.restore();
      const [token] = crash.answers;
      assert.ok(token?.client_token && f.vault.isTokenActive(token.client_token), 'Vault issued a token the broker never recorded');
      assert.ok(f.vault.listLeases().some((l) => l.state === 'active'), 'and a lease');
      let rows = await f.rows(sid);
      assert.ok(rows.every((r) => r.state === 'pending' && r.handle?.parent_accessor), 'intents with their checkpointed parent');

      // Within the grace period an intent may still be in flight: left alone.
      assert.equal((await sweepOnce(f.tb.b)).orphans, 0);
      // After it, the broker starting up recovers them (the sweeper's first run).
      f.tb.clock.advance(orphanGraceMs(f.tb.b) + 1000);
      const head = await auditHead(f.tb.b);
      const s = startSweeper(f.tb.b, 3600);
      await s.stop(); // waits for the first run
      rows = await f.rows(sid);
      for (const r of rows) assert.equal(r.state, 'revoked', `${r.name}: ${r.note}`);
      assert.equal(f.vault.isTokenActive(token.client_token), false, 'the lost child token is revoked (its parent was)');
      assert.ok(f.vault.listLeases().every((l) => l.state !== 'active'), 'and the lost lease');
      const orphanRows = (await auditSince(f.tb.b, head)).filter((x) => x.event === 'credential.orphan');
      assert.equal(orphanRows.length, 2);
    });

    it('recovery denies exactly the lost STS credential through IAM (its names were in the intent)', async () => {
      const a = await f.agent('orphan-s', 'creds-owner');
      const tok = await mustSession(f.tb, a, 'cred:s3-iam');
      const kept = (await f.cred('s3-iam', tok)).body;
      const crash = crashAfterIssue('aws-sts');
      await abandon(f.cred('s3-iam', tok));
      crash.restore();
      const lost = crash.answers[0];
      assert.ok(lost?.AccessKeyId);
      f.tb.clock.advance(orphanGraceMs(f.tb.b) + 1000);
      const rep = await sweepOnce(f.tb.b);
      assert.equal(rep.orphans, 1);
      assert.equal(f.sts.isCredentialDenied(lost.AccessKeyId), true, 'the orphan is denied');
      assert.equal(f.sts.isCredentialDenied(kept.credentials.AccessKeyId), false, 'its recorded sibling in the same session is not');
    });
  });
});
