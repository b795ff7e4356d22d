import assert from 'node:assert/strict';
import { orphanGraceMs, startSweeper, sweepOnce } from '../src/credentials/sweep.ts';
import { revokeSession, revokeTokenChain } from '../src/revocation/revoke.ts';
import { iamDenies } from '../src/store/iam-denies.ts';
import type { CredentialProvider } from '../src/providers/provider.ts';
import { auditHead, auditSince, claimsOf, mustDelegate, mustSession } from './delegation.kit.ts';
import { credFixture, ROLE_ARN, type CredFixture } from './credentials.kit.ts';

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
    assert.deepEqual(
      f.vault.requestsTo('sys/leases/revoke').map((x) => x.body.lease_id),
      [db.lease_id],
      'the lease was revoked by id',
    );
    assert.ok(
      f.vault.requestsTo('auth/token/revoke-accessor').some((x) => x.body.accessor === vt.credentials.accessor),
      'the token by accessor',
    );
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

  /** A session with 10 minutes left and an STS credential (900 s at STS) that its session policy ends with its token, at the session's end. */
  async function shortLived(name: string): Promise<{ sid: string; end: number; c: any }> {
    const a = await f.agent(name, 'creds-owner');
    let tok = await mustSession(f.tb, a, 'cred:s3-iam');
    const sid = claimsOf(tok).sid;
    const end = await sessionEnd(f, sid);
    f.tb.clock.set(end - 600_000);
    tok = await mustSession(f.tb, a, 'cred:s3-iam', { session: sid });
    const c = (await f.cred('s3-iam', tok)).body;
    assert.ok(Date.parse(c.expires_at) <= end, 'ends with its token, so with the session');
    assert.ok(f.sts.getCredential(c.credentials.AccessKeyId)!.expiresAtMs > end, 'although STS would let it live on');
    return { sid, end, c };
  }
  const get = { action: 's3:GetObject', resource: 'arn:aws:s3:::reports/x' };

  it('a session that simply expired is not a revocation: no IAM deny at all, its STS credential ended with its token (the session policy’s time bound)', async () => {
    const { sid, end, c } = await shortLived('sw-sts-end');
    f.tb.clock.set(end + 1000);
    const rep = await sweepOnce(f.tb.b);
    assert.equal(rep.sessionsSwept, 1);
    assert.deepEqual(await iamDenies.bySession(f.tb.b.db, sid), [], 'nothing recorded, at issue or since');
    assert.equal(f.sts.requests.filter((x) => x.action === 'PutRolePolicy').length, 0, 'IAM never written');
    assert.equal(f.sts.isCredentialExpired(c.credentials.AccessKeyId), false, 'alive at STS');
    assert.equal(f.sts.isCredentialUsable(c.credentials.AccessKeyId, get), false, 'but dead since its token died');
    assert.equal(f.sts.isCredentialUsable(c.credentials.AccessKeyId, { ...get, atMs: end - 1000 }), true, 'alive until then');
    const [row] = await f.rows(sid);
    assert.equal(row.state, 'revoked', row.note!);
    assert.match(row.note!, /expired at/);
    assert.equal((await sweepOnce(f.tb.b)).sessionsSwept, 0, 'swept once');
  });

  it('a revoked session’s STS credential is denied; the sweeper removes the deny once it is due, and the time bound still holds the keys STS would let live', async () => {
    const { sid, end, c } = await shortLived('sw-sts-rev');
    f.tb.clock.set(end - 60_000);
    const head = await auditHead(f.tb.b);
    await revokeSession(f.tb.b, sid, { actor: 'admin', via: 'test' });
    f.tb.clock.set(end - 30_000);
    await sweepOnce(f.tb.b);
    assert.equal(f.sts.isCredentialDenied(c.credentials.AccessKeyId), true);
    const entries = await iamDenies.bySession(f.tb.b.db, sid);
    assert.deepEqual(
      entries.map((x) => x.kind),
      ['session'],
    );
    const [deny] = entries;
    assert.ok(deny.removedAt === null);
    assert.ok(Object.keys(f.sts.rolePolicies('agent-reports')).includes(deny.policyName));

    // Not yet: the credential is still alive.
    await sweepOnce(f.tb.b);
    assert.ok(Object.keys(f.sts.rolePolicies('agent-reports')).includes(deny.policyName));
    // The revocation goes once the credential it denied has expired (for the broker: at its token's exp).
    f.tb.clock.set(deny.removeAfter + 1);
    const rep = await sweepOnce(f.tb.b);
    assert.equal(rep.deniesRemoved, 1);
    assert.deepEqual(f.sts.rolePolicies('agent-reports'), {}, 'the role is clean again');
    assert.ok((await iamDenies.bySession(f.tb.b.db, sid))[0].removedAt !== null);
    assert.equal(f.sts.isCredentialExpired(c.credentials.AccessKeyId), false, 'STS would still take the keys');
    assert.equal(f.sts.isCredentialUsable(c.credentials.AccessKeyId, get), false, 'their session policy does not');
    const events = (await auditSince(f.tb.b, head)).map((x) => x.event);
    assert.ok(events.includes('credential.iam_deny') && events.includes('credential.iam_deny_removed'));
  });

  it('legacy `expiry` entries (an earlier build’s deny at a token’s exp) are left out of the rebuilt policy and dropped once due', async () => {
    const { sid } = await shortLived('sw-legacy');
    const now = f.tb.clock.now();
    const legacy = {
      roleArn: ROLE_ARN,
      policyName: 'cordon-revocations',
      sid: 'ses_legacy',
      kind: 'expiry' as const,
      subject: 'AROA*:cordon.old.xxxxxxxxxx.yyyyyyyyyyyy',
      revokedAt: now + 60_000,
      createdAt: now,
      removeAfter: now + 960_000,
    };
    await iamDenies.insert(f.tb.b.db, { id: 'iamd_000000000000_legacy', ...legacy });
    // A revocation beside it: the policy is rebuilt from the role's entries.
    await revokeSession(f.tb.b, sid, { actor: 'admin', via: 'test' });
    const sids = () => JSON.parse(f.sts.rolePolicies('agent-reports')['cordon-revocations'] ?? '{"Statement":[]}').Statement.map((x: { Sid: string }) => x.Sid);
    assert.deepEqual(sids(), ['CordonRevokedSessions']);
    await sweepOnce(f.tb.b);
    assert.deepEqual(sids(), ['CordonRevokedSessions'], 'the sweep rebuilds without it');
    assert.equal((await iamDenies.bySession(f.tb.b.db, 'ses_legacy'))[0].removedAt, null, 'not due yet');
    f.tb.clock.set(now + 960_001);
    const rep = await sweepOnce(f.tb.b);
    assert.ok(rep.deniesRemoved >= 1);
    assert.notEqual((await iamDenies.bySession(f.tb.b.db, 'ses_legacy'))[0].removedAt, null, 'dropped once due');
  });

  it('revokes the credentials of a revoked token in a live session when the after-commit hook never ran (failed, or the broker stopped)', async () => {
    const orch = await f.agent('sw-hookless-o', 'creds-owner');
    const worker = await f.agent('sw-hookless-w', 'creds-worker');
    const tok = await mustSession(f.tb, orch, 'work:read cred:vault-token');
    const sub = await mustDelegate(f.tb, orch, tok, worker, 'work:read cred:vault-token');
    const mine = (await f.cred('vault-token', tok)).body;
    const theirs = (await f.cred('vault-token', sub)).body;
    const hooks = f.tb.b.hooks.onRevoked.splice(0);
    f.tb.b.hooks.onRevoked.push(async () => {
      throw new Error('the broker stopped right after the commit');
    });
    try {
      await revokeTokenChain(f.tb.b, claimsOf(sub).jti, { actor: 'admin', via: 'test' });
    } finally {
      f.tb.b.hooks.onRevoked.splice(0, Infinity, ...hooks);
    }
    assert.equal(f.vault.isTokenActive(theirs.credentials.client_token), true, 'the hook did not run');

    const rep = await sweepOnce(f.tb.b);
    assert.equal(rep.revoked, 1);
    assert.equal(f.vault.isTokenActive(theirs.credentials.client_token), false, "the revoked sub-agent's Vault token is dead");
    assert.equal(f.vault.isTokenActive(mine.credentials.client_token), true, "the orchestrator's own credential is untouched");
    const rows = await f.rows(claimsOf(tok).sid);
    assert.deepEqual(
      rows.map((r) => [r.jti, r.state]).sort(),
      [
        [claimsOf(sub).jti, 'revoked'],
        [claimsOf(tok).jti, 'issued'],
      ].sort(),
    );
    const again = await sweepOnce(f.tb.b);
    assert.equal(again.revoked + again.failed, 0, 'and only once');
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
      const map = f.tb.b.providers;
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
        ...(real.reconcile ? { reconcile: (c) => real.reconcile!(c) } : {}),
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
      assert.ok(
        f.vault.listLeases().some((l) => l.state === 'active'),
        'and a lease',
      );
      let rows = await f.rows(sid);
      assert.ok(
        rows.every((r) => r.state === 'pending' && r.handle?.parent_accessor),
        'intents with their checkpointed parent',
      );

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
      assert.ok(
        f.vault.listLeases().every((l) => l.state !== 'active'),
        'and the lost lease',
      );
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

describe('IAM revocations: one consolidated policy per role', () => {
  let f: CredFixture;
  beforeEach(async () => {
    f = await credFixture();
  });
  afterEach(async () => {
    await f?.stop();
  });

  const ROLE = 'agent-reports';
  const policies = (): Record<string, string> => f.sts.rolePolicies(ROLE);
  const inlineChars = (): number => Object.values(policies()).reduce((n, d) => n + d.replace(/\s/g, '').length, 0);

  it('60 revoked sessions on one role are all denied by a single inline policy under 10,240 characters; other sessions are not; the sweeper drops entries as they expire, then the policy', async () => {
    const a = await f.agent('many-revoked', 'creds-owner');
    // A bystander session with a credential issued before any revocation: never denied.
    const bystanderTok = await mustSession(f.tb, a, 'cred:s3-iam');
    const bystander = (await f.cred('s3-iam', bystanderTok)).body;
    const t0 = f.tb.clock.now();
    const revoked: Array<{ sid: string; key: string; expiresAt: number }> = [];
    for (let i = 0; i < 60; i++) {
      if (i === 30) f.tb.clock.advance(10 * 60_000); // the second half expires 10 minutes later
      const tok = await mustSession(f.tb, a, 'cred:s3-iam');
      const c = (await f.cred('s3-iam', tok)).body;
      assert.ok(c.credentials?.AccessKeyId, JSON.stringify(c));
      revoked.push({ sid: claimsOf(tok).sid, key: c.credentials.AccessKeyId, expiresAt: Date.parse(c.expires_at) });
    }
    f.sts.reset();
    for (const r of revoked) {
      f.tb.clock.advance(1000);
      await revokeSession(f.tb.b, r.sid, { actor: 'admin', via: 'test' });
    }
    for (const r of revoked) {
      const [row] = await f.rows(r.sid);
      assert.equal(row.state, 'revoked', row.note!);
      assert.match(row.note!, /denied by inline policy cordon-revocations on role agent-reports \(aws:SourceIdentity /);
      assert.equal(f.sts.isCredentialDenied(r.key), true, `session ${r.sid} is denied`);
    }
    const puts = f.sts.requests.filter((x) => x.action === 'PutRolePolicy');
    assert.equal(puts.length, 60, 'one rebuild per revocation');
    assert.ok(
      puts.every((x) => x.params.PolicyName === 'cordon-revocations' && !x.errorCode),
      'never refused by IAM (one policy per revocation would have hit LimitExceeded after ~30)',
    );
    assert.deepEqual(Object.keys(policies()), ['cordon-revocations'], 'a single inline policy');
    assert.ok(inlineChars() < 10_240, `${inlineChars()} characters`);
    const doc = JSON.parse(policies()['cordon-revocations']);
    assert.equal(doc.Statement.length, 1);
    assert.equal(doc.Statement[0].Condition.StringEquals['aws:SourceIdentity'].length, 60);
    assert.equal((await iamDenies.active(f.tb.b.db)).length, 60);

    // Not denied: the bystander (same agent, same role, issued before the revocations) and later sessions.
    assert.equal(f.sts.isCredentialDenied(bystander.credentials.AccessKeyId), false, 'a live session’s earlier credential');
    const laterTok = await mustSession(f.tb, a, 'cred:s3-iam');
    const later = (await f.cred('s3-iam', laterTok)).body;
    assert.equal(f.sts.isCredentialDenied(later.credentials.AccessKeyId), false, 'a later session’s credential');
    const bystanderTok2 = await mustSession(f.tb, a, 'cred:s3-iam', { session: claimsOf(bystanderTok).sid });
    assert.equal(
      f.sts.isCredentialDenied((await f.cred('s3-iam', bystanderTok2)).body.credentials.AccessKeyId),
      false,
      'a later credential of the live session',
    );

    // Sweeping before anything expired changes nothing (the rebuild is idempotent).
    const first = await sweepOnce(f.tb.b);
    assert.equal(first.deniesRemoved, 0);
    assert.equal(JSON.parse(policies()['cordon-revocations']).Statement[0].Condition.StringEquals['aws:SourceIdentity'].length, 60);

    // The first 30 credentials expired: their entries go, the others stay denied.
    const skew = f.tb.b.config.clockSkewSec * 1000;
    f.tb.clock.set(Math.max(...revoked.slice(0, 30).map((r) => r.expiresAt)) + skew + 1);
    assert.ok(f.tb.clock.now() < Math.min(...revoked.slice(30).map((r) => r.expiresAt)));
    const mid = await sweepOnce(f.tb.b);
    assert.equal(mid.deniesRemoved, 30);
    const sis = JSON.parse(policies()['cordon-revocations']).Statement[0].Condition.StringEquals['aws:SourceIdentity'];
    assert.equal(sis.length, 30);
    for (const r of revoked.slice(30)) assert.equal(f.sts.isCredentialDenied(r.key), true, 'still denied while alive');
    assert.equal((await iamDenies.active(f.tb.b.db)).length, 30);

    // All expired: the policy is deleted, every entry marked removed.
    f.tb.clock.set(Math.max(...revoked.map((r) => r.expiresAt)) + skew + 1);
    const last = await sweepOnce(f.tb.b);
    assert.equal(last.deniesRemoved, 30);
    assert.deepEqual(policies(), {}, 'the role is clean again');
    assert.deepEqual(await iamDenies.active(f.tb.b.db), []);
    f.sts.reset();
    await sweepOnce(f.tb.b);
    assert.equal(f.sts.requests.filter((x) => x.action === 'PutRolePolicy' || x.action === 'DeleteRolePolicy').length, 0, 'no role left to reconcile');
    assert.ok(t0 > 0);
  });

  it('a token-level revocation and a session revocation share the one policy, as two statements', async () => {
    const orch = await f.agent('mix-orch', 'creds-owner');
    const worker = await f.agent('mix-worker', 'creds-worker');
    const tok = await mustSession(f.tb, orch, 'work:read cred:s3-iam');
    const sub = await mustDelegate(f.tb, orch, tok, worker, 'work:read cred:s3-iam');
    const mine = (await f.cred('s3-iam', tok)).body;
    const theirs = (await f.cred('s3-iam', sub)).body;
    await revokeTokenChain(f.tb.b, claimsOf(sub).jti, { actor: 'admin', via: 'test' });
    assert.equal(f.sts.isCredentialDenied(theirs.credentials.AccessKeyId), true);
    assert.equal(f.sts.isCredentialDenied(mine.credentials.AccessKeyId), false);
    const other = await mustSession(f.tb, orch, 'cred:s3-iam');
    const otherC = (await f.cred('s3-iam', other)).body;
    await revokeSession(f.tb.b, claimsOf(other).sid, { actor: 'admin', via: 'test' });
    assert.deepEqual(Object.keys(policies()), ['cordon-revocations']);
    const doc = JSON.parse(policies()['cordon-revocations']);
    assert.deepEqual(doc.Statement.map((s: any) => s.Sid).sort(), ['CordonRevokedCredentials', 'CordonRevokedSessions']);
    assert.equal(f.sts.isCredentialDenied(theirs.credentials.AccessKeyId), true, 'the earlier token-level deny survived the rebuild');
    assert.equal(f.sts.isCredentialDenied(otherC.credentials.AccessKeyId), true);
    assert.equal(f.sts.isCredentialDenied(mine.credentials.AccessKeyId), false);
  });

  it('the sweeper repairs a policy a racing replica overwrote with a stale document (or deleted)', async () => {
    const a = await f.agent('stale-put', 'creds-owner');
    const toks = [await mustSession(f.tb, a, 'cred:s3-iam'), await mustSession(f.tb, a, 'cred:s3-iam')];
    const keys = [];
    for (const t of toks) keys.push((await f.cred('s3-iam', t)).body.credentials.AccessKeyId);
    await revokeSession(f.tb.b, claimsOf(toks[0]).sid, { actor: 'admin', via: 'test' });
    const stale = policies()['cordon-revocations'];
    await revokeSession(f.tb.b, claimsOf(toks[1]).sid, { actor: 'admin', via: 'test' });
    // A replica that read the entries before the second revocation committed PUTs last.
    f.sts.putRolePolicy(ROLE, 'cordon-revocations', stale);
    assert.equal(f.sts.isCredentialDenied(keys[1]), false, 'the lost update');
    await sweepOnce(f.tb.b);
    assert.equal(f.sts.isCredentialDenied(keys[0]), true);
    assert.equal(f.sts.isCredentialDenied(keys[1]), true, 'repaired within one sweep');
    f.sts.clearState();
    f.sts.putRolePolicy(ROLE, 'unrelated', { Version: '2012-10-17', Statement: [{ Effect: 'Allow', Action: 's3:GetObject', Resource: '*' }] });
    await sweepOnce(f.tb.b);
    assert.deepEqual(Object.keys(policies()).sort(), ['cordon-revocations', 'unrelated'], 'rebuilt; other inline policies untouched');
  });

  it('a revocation that does not fit is revoke_failed with a note (never dropped silently), and the denies already in place stay', async () => {
    // 180 older revocations on the role, in the database (say from sessions of other brokers' agents).
    const now = f.tb.clock.now();
    const a = await f.agent('full-role', 'creds-owner');
    const tok = await mustSession(f.tb, a, 'cred:s3-iam');
    const c = (await f.cred('s3-iam', tok)).body;
    const sid = claimsOf(tok).sid;
    for (let i = 0; i < 180; i++)
      await iamDenies.insert(f.tb.b.db, {
        id: `iamd_000000000${String(i).padStart(4, '0')}_old`,
        roleArn: ROLE_ARN,
        policyName: 'cordon-revocations',
        sid,
        kind: 'session',
        subject: `agt_old${String(i).padStart(3, '0')}.${'x'.repeat(50)}`,
        revokedAt: now - 1000,
        createdAt: now - 1000,
        removeAfter: now + 60_000,
      });
    await revokeSession(f.tb.b, sid, { actor: 'admin', via: 'test' });
    const [row] = await f.rows(sid);
    assert.equal(row.state, 'revoke_failed', row.note!);
    assert.match(
      row.note!,
      /does not fit on role agent-reports: inline policy cordon-revocations is full \(\d+ active revocations; IAM allows 10240 characters/,
    );
    assert.equal(f.sts.isCredentialDenied(c.credentials.AccessKeyId), false, 'truthfully: not denied');
    assert.ok(inlineChars() <= 10_240, `${inlineChars()} characters`);
    const sis: string[] = JSON.parse(policies()['cordon-revocations']).Statement[0].Condition.StringEquals['aws:SourceIdentity'];
    assert.ok(sis.length > 100 && sis.every((s) => s.startsWith('agt_old')), 'the oldest revocations keep their place');
    assert.equal(
      (await iamDenies.bySession(f.tb.b.db, sid)).filter((d) => d.kind !== null && d.removedAt === null && !d.id.endsWith('_old')).length,
      0,
      'the entry that did not fit was withdrawn',
    );

    // Once room is made (the old ones expired), the sweeper's retry denies it.
    f.tb.clock.advance(60_000 + 1);
    const rep = await sweepOnce(f.tb.b);
    assert.equal(rep.retried, 1);
    assert.equal(rep.deniesRemoved, 180);
    const [after] = await f.rows(sid);
    assert.equal(after.state, 'revoked', after.note!);
    assert.equal(f.sts.isCredentialDenied(c.credentials.AccessKeyId), true);
    assert.deepEqual(
      JSON.parse(policies()['cordon-revocations']).Statement.map((s: any) => s.Sid),
      ['CordonRevokedCredentials'],
      'retried as that credential alone',
    );
  });
});
