import assert from 'node:assert/strict';
import { sweepOnce } from '../src/credentials/sweep.ts';
import { claimsOf, mustSession } from './delegation.kit.ts';
import { credFixture, ROLE_ARN, type CredFixture } from './credentials.kit.ts';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const PERMISSION_DENIED = '1 error occurred:\n\t* permission denied\n\n';

/**
 * Backend down, sealed, slow or refusing: the agent gets 503 or 502 with a clear description,
 * nothing is recorded as issued, and nothing the backend created is left alive for anyone.
 */
describe('backend credentials: failures', () => {
  let f: CredFixture;
  let n = 0;
  before(async () => {
    f = await credFixture({ timeoutMs: 300 });
  });
  after(async () => {
    await f?.stop();
  });
  beforeEach(() => {
    f.vault.reset();
    f.sts.reset();
  });

  /** A fresh session holding every credential of the owner policy. */
  async function fresh(): Promise<{ tok: string; sid: string }> {
    const a = await f.agent(`fail-${++n}`, 'creds-owner');
    const tok = await mustSession(f.tb, a, 'cred:vault-token cred:vault-db cred:s3 cred:s3-iam');
    return { tok, sid: claimsOf(tok).sid };
  }

  /** Vault objects an agent could hold: child tokens and leases created since `since` (by the broker's parents). */
  function agentFacingVault(since: number): { tokens: string[]; leases: string[] } {
    const tokens = f.vault.listTokens().filter((t) => t.createdAtMs >= since && t.state === 'active' && t.meta?.cordon === 'credential');
    const leases = f.vault.listLeases().filter((l) => l.issuedAtMs >= since && l.state === 'active');
    return { tokens: tokens.map((t) => t.id), leases: leases.map((l) => l.id) };
  }

  async function assertNothingIssued(sid: string): Promise<void> {
    const rows = await f.rows(sid);
    assert.ok(rows.length >= 1, 'the attempt was recorded');
    for (const r of rows) assert.ok(r.state === 'failed' || r.state === 'revoked', `row ${r.name} is ${r.state}: ${r.note}`);
  }

  describe('Vault', () => {
    it('sealed → 503 temporarily_unavailable, "Vault is sealed"', async () => {
      const { tok, sid } = await fresh();
      const since = f.tb.clock.now();
      f.vault.sealed = true;
      const r = await f.cred('vault-token', tok);
      assert.equal(r.status, 503);
      assert.equal(r.body.error, 'temporarily_unavailable');
      assert.match(r.body.error_description, /Vault is sealed/);
      await assertNothingIssued(sid);
      assert.deepEqual(agentFacingVault(since), { tokens: [], leases: [] });
    });

    it('a policy outside the token role’s allowed_policies → 502 bad_gateway naming the role’s limit; nothing for the agent', async () => {
      const a = await f.agent(`fail-${++n}`, 'creds-owner');
      const tok = await mustSession(f.tb, a, 'cred:vault-admin');
      const since = f.tb.clock.now();
      const r = await f.cred('vault-admin', tok);
      assert.equal(r.status, 502);
      assert.equal(r.body.error, 'bad_gateway');
      assert.match(
        r.body.error_description,
        /Vault rejected auth\/token\/create\/cordon-agents \(400: token policies \(\["tickets-admin"\]\) must be subset of the role's allowed policies \(\["tickets-read"\]\)/,
      );
      await assertNothingIssued(claimsOf(tok).sid);
      assert.deepEqual(agentFacingVault(since), { tokens: [], leases: [] });
    });

    it('refusing (403 on the broker’s first call) → 502 bad_gateway naming the denied call', async () => {
      const { tok, sid } = await fresh();
      f.vault.failNext(403, [PERMISSION_DENIED], 'auth/token/create');
      const r = await f.cred('vault-token', tok);
      assert.equal(r.status, 502);
      assert.equal(r.body.error, 'bad_gateway');
      assert.match(r.body.error_description, /Vault denied the broker auth\/token\/create \(403 permission denied\)/);
      await assertNothingIssued(sid);
    });

    it('refusing the secret read after the parent exists → 502, and the parent is revoked at once', async () => {
      const { tok, sid } = await fresh();
      const since = f.tb.clock.now();
      f.vault.failNext(403, [PERMISSION_DENIED], 'database/creds');
      const r = await f.cred('vault-db', tok);
      assert.equal(r.status, 502);
      assert.match(r.body.error_description, /Vault denied the broker database\/creds\/tickets-ro/);
      const [row] = await f.rows(sid);
      assert.equal(row.state, 'failed');
      assert.match(row.note!, /cleanup: revoked/);
      const parent = f.vault.getToken(row.handle!.parent_accessor)!;
      assert.equal(parent.state, 'revoked', 'the checkpointed parent did not survive');
      assert.deepEqual(agentFacingVault(since), { tokens: [], leases: [] });
    });

    it('404 (no such role or mount) → 502 naming the path', async () => {
      const { tok, sid } = await fresh();
      f.vault.failNext(404, [], 'database/creds');
      const r = await f.cred('vault-db', tok);
      assert.equal(r.status, 502);
      assert.match(r.body.error_description, /Vault has nothing at database\/creds\/tickets-ro \(404\)/);
      await assertNothingIssued(sid);
    });

    it('slow (answers after the timeout) → 503 "did not answer", nothing handed out or left holding a credential', async () => {
      const { tok, sid } = await fresh();
      const since = f.tb.clock.now();
      // Only what this request made counts (the double's clock is the test broker's, which does not move here).
      const existing = new Set(f.vault.listTokens().map((x) => x.id));
      f.vault.delayMs = 600;
      const t0 = Date.now();
      const r = await f.cred('vault-token', tok);
      assert.ok(Date.now() - t0 < 600, 'the broker did not wait for the slow backend');
      assert.equal(r.status, 503);
      assert.equal(r.body.error, 'temporarily_unavailable');
      assert.match(r.body.error_description, /Vault did not answer auth\/token\/create within 300 ms/);
      await assertNothingIssued(sid);
      f.vault.delayMs = 0;
      await sleep(500); // the double finishes the abandoned request
      assert.deepEqual(agentFacingVault(since), { tokens: [], leases: [] });
      // What Vault may still have created is a parent that never left the broker: no children, dead by the token's exp.
      for (const t of f.vault.listTokens().filter((x) => !existing.has(x.id) && x.state === 'active')) {
        assert.equal(t.meta?.cordon, 'parent', JSON.stringify(t));
        assert.deepEqual(t.children, []);
        assert.ok(t.expiresAtMs! <= claimsOf(tok).exp * 1000);
      }
    });
  });

  describe('AWS STS', () => {
    it('refusing (AccessDenied) → 502 naming the role and what its trust policy must allow; no deny is put', async () => {
      const { tok, sid } = await fresh();
      const before = f.sts.issued.size;
      f.sts.failNext(
        403,
        'AccessDenied',
        `User: arn:aws:iam::123456789012:user/cordon-broker is not authorized to perform: sts:AssumeRole on resource: ${ROLE_ARN}`,
        'AssumeRole',
      );
      const r = await f.cred('s3-iam', tok);
      assert.equal(r.status, 502);
      assert.equal(r.body.error, 'bad_gateway');
      assert.match(r.body.error_description, /AWS refused AssumeRole on arn:aws:iam::123456789012:role\/agent-reports \(AccessDenied\).*sts:TagSession/);
      await assertNothingIssued(sid);
      assert.equal(f.sts.issued.size, before);
      assert.equal(f.sts.requests.filter((x) => x.action === 'PutRolePolicy').length, 0, 'a definite refusal issued nothing, so nothing to deny');
    });

    it('throttled → 503', async () => {
      const { tok, sid } = await fresh();
      f.sts.failNext(400, 'Throttling', 'Rate exceeded', 'AssumeRole');
      const r = await f.cred('s3', tok);
      assert.equal(r.status, 503);
      assert.match(r.body.error_description, /throttling AssumeRole/);
      await assertNothingIssued(sid);
    });

    it('slow → 503; what AWS issues after the timeout is denied through IAM (names known before the call), retried until IAM answers', async () => {
      const { tok, sid } = await fresh();
      f.sts.delayMs = 800;
      const r = await f.cred('s3-iam', tok);
      assert.equal(r.status, 503);
      assert.match(r.body.error_description, /AWS AssumeRole did not answer within 300 ms/);
      let [row] = await f.rows(sid);
      assert.ok(row.state === 'revoke_failed' || row.state === 'failed', row.state);
      f.sts.delayMs = 0;
      await sleep(1000); // the double issues the abandoned AssumeRole
      const late = [...f.sts.issued.values()].find((c) => c.sessionName === row.handle!.role_session_name);
      assert.ok(late, 'AWS did issue the credential the broker gave up on');
      if (row.state === 'revoke_failed') {
        f.tb.clock.advance(f.tb.b.config.sweepIntervalSec * 1000);
        await sweepOnce(f.tb.b);
        [row] = await f.rows(sid);
      }
      assert.equal(f.sts.isCredentialDenied(late.accessKeyId), true, 'the late credential is denied');
      assert.notEqual(row.state, 'issued');
      assert.notEqual(row.state, 'pending');
    });

    it('down → 503 "unreachable"', async () => {
      const { tok, sid } = await fresh();
      await f.sts.stop();
      try {
        const r = await f.cred('s3', tok);
        assert.equal(r.status, 503);
        assert.match(r.body.error_description, /AWS STS is unreachable/);
        await assertNothingIssued(sid);
      } finally {
        await f.sts.start();
      }
    });
  });

  // Last: the double does not come back on the same port.
  describe('Vault, last', () => {
    it('down → 503 "unreachable"', async () => {
      const { tok, sid } = await fresh();
      await f.vault.stop();
      const r = await f.cred('vault-db', tok);
      assert.equal(r.status, 503);
      assert.equal(r.body.error, 'temporarily_unavailable');
      assert.match(r.body.error_description, /Vault is unreachable \(ECONNREFUSED\)/);
      await assertNothingIssued(sid);
    });
  });
});
