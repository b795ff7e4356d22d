import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { credentialsRoute } from '../src/http/credentials.ts';
import { revokeSession } from '../src/revocation/revoke.ts';
import { setAgentEnabled } from '../src/agents/registry.ts';
import { iamDenies } from '../src/store/iam-denies.ts';
import { verifyAudit } from '../src/audit/verify.ts';
import type { IssuanceWriter } from '../src/store/issuance-writer.ts';
import { timeBoundSessionPolicy } from '../src/policy/session-policy.ts';
import { startTestBroker, basic, postForm } from './helpers/broker.ts';
import { auditHead, auditSince, claimsOf, delegateReq, dpopKey, dpopProof, mustDelegate, mustSession, policyDir, register, session } from './delegation.kit.ts';
import { credFixture, rowIdOf, POLICIES, ROLE_ARN, ROLE_ARN_RO, RS_AUDIENCE, SESSION_POLICY, type CredFixture } from './credentials.kit.ts';

/** AWS states Expiration in whole seconds. */
const awsSec = (ms: number): number => Math.floor(ms / 1000) * 1000;

const NAME_RE = /^[\w+=,.@-]{2,64}$/;

describe('backend credentials: POST /credentials/:name through node-vault and the AWS SDK', () => {
  let f: CredFixture;
  before(async () => {
    f = await credFixture();
  });
  after(async () => {
    await f?.stop();
  });
  beforeEach(() => {
    f.vault.reset();
    f.sts.reset();
  });

  describe('Vault', () => {
    it('issues a child token with the policy’s Vault policies, ttl capped by the policy and the token, metadata naming agent and session', async () => {
      const a = await f.agent('vt-owner', 'creds-owner');
      const tok = await mustSession(f.tb, a, 'work:read cred:vault-token', { task: 'weekly-report' });
      const c = claimsOf(tok);
      const head = await auditHead(f.tb.b);
      const r = await f.cred('vault-token', tok);
      assert.equal(r.status, 200, JSON.stringify(r.body));
      assert.equal(r.headers.get('cache-control'), 'no-store');
      assert.equal(r.body.name, 'vault-token');
      assert.equal(r.body.provider, 'vault');
      assert.ok(Date.parse(r.body.expires_at) <= c.exp * 1000, 'expires_at never after the token exp');
      const child = f.vault.getToken(r.body.credentials.client_token)!;
      assert.ok(child, 'the double knows the token');
      assert.equal(child.state, 'active');
      assert.deepEqual(child.policies, ['tickets-read'], 'exactly the policy’s vault_policies: not even default');
      assert.equal(child.path, 'auth/token/create/cordon-agents', 'created through the token role');
      assert.equal(child.ttlSec, 300, 'policy ttl 5m < 30m token');
      assert.equal(child.explicitMaxTtlSec, 300, 'explicit_max_ttl pins the life');
      assert.equal(child.renewable, false);
      assert.equal(child.meta?.agent, a.id);
      assert.equal(child.meta?.session, c.sid);
      assert.equal(child.meta?.task, 'weekly-report');
      assert.equal(child.meta?.jti, c.jti);
      assert.equal(r.body.credentials.accessor, child.accessor);
      assert.deepEqual(r.body.credentials.policies, ['tickets-read']);
      // It hangs under a per-credential parent, a child of the broker's token, which never left the broker.
      const parent = f.vault.getToken(child.parent!)!;
      assert.equal(parent.parent, f.brokerVaultToken);
      assert.deepEqual(parent.policies, ['broker'], 'the broker token’s own policies, which do not include the agent’s');
      assert.equal(parent.meta?.cordon, 'parent');
      const creates = f.vault.requestsTo(/^auth\/token\/create/);
      assert.equal(creates.length, 2);
      assert.equal(creates[0].vaultPath, 'auth/token/create');
      assert.equal(creates[0].token, f.brokerVaultToken);
      assert.equal(creates[1].vaultPath, 'auth/token/create/cordon-agents');
      assert.equal(creates[1].token, child.parent, 'the child is created by the per-credential parent');
      assert.deepEqual(creates[1].body.policies, ['tickets-read']);
      assert.equal(creates[1].body.no_default_policy, true);
      assert.equal(creates[1].body.ttl, '300s');
      assert.equal(creates[1].body.explicit_max_ttl, '300s');
      assert.ok(!JSON.stringify(r.body).includes(f.brokerVaultToken), 'the broker token never reaches the agent');

      // Recorded: issued, handle with accessors and no secret; audit row without the token.
      const id = await rowIdOf(f, r.body, c.sid);
      const row = await f.row(id);
      assert.equal(row.state, 'issued');
      assert.equal(row.provider, 'vault');
      assert.equal(row.jti, c.jti);
      assert.equal(row.handle?.accessor, child.accessor);
      assert.equal(row.handle?.parent_accessor, parent.accessor);
      assert.ok(!JSON.stringify(row.handle).includes(r.body.credentials.client_token));
      const audit = await auditSince(f.tb.b, head);
      const issue = audit.find((x) => x.event === 'credential.issue')!;
      assert.equal(issue.decision, 'allow');
      assert.equal(issue.params.credential_id, id);
      assert.deepEqual(issue.params.vault_policies, ['tickets-read']);
      assert.ok(!JSON.stringify(audit).includes(r.body.credentials.client_token), 'no secret in the audit log');
    });

    it('caps the Vault ttl at what is left of the token', async () => {
      const a = await f.agent('vt-late', 'creds-owner');
      const tok = await mustSession(f.tb, a, 'cred:vault-token');
      const exp = claimsOf(tok).exp * 1000;
      f.tb.clock.advance(28 * 60_000); // 2 minutes left on a 30-minute token
      const r = await f.cred('vault-token', tok);
      assert.equal(r.status, 200, JSON.stringify(r.body));
      const child = f.vault.getToken(r.body.credentials.client_token)!;
      assert.ok(child.ttlSec <= 120 && child.ttlSec >= 115, `ttl ${child.ttlSec}`);
      assert.ok(child.expiresAtMs! <= exp);
      assert.ok(Date.parse(r.body.expires_at) <= exp);
    });

    it('reads a database lease with a parent token whose life bounds the lease; the lease is recorded', async () => {
      const a = await f.agent('db-owner', 'creds-owner');
      const tok = await mustSession(f.tb, a, 'cred:vault-db');
      const c = claimsOf(tok);
      const r = await f.cred('vault-db', tok);
      assert.equal(r.status, 200, JSON.stringify(r.body));
      assert.match(r.body.lease_id, /^database\/creds\/tickets-ro\//);
      assert.ok(r.body.credentials.username && r.body.credentials.password);
      const lease = f.vault.getLease(r.body.lease_id)!;
      assert.equal(lease.state, 'active');
      assert.equal(lease.ttlSec, 3600, "the role's own TTL (Vault does not let a reader ask for less)");
      const owner = f.vault.getToken(lease.owner)!;
      assert.equal(owner.parent, f.brokerVaultToken, 'read by a per-credential parent, not by the broker token');
      assert.ok(owner.expiresAtMs! <= c.exp * 1000, 'the parent dies no later than the agent token, and takes the lease with it');
      assert.equal(Date.parse(r.body.expires_at), owner.expiresAtMs, 'expires_at is when Vault revokes the lease (its owner expires)');
      const row = await f.row(await rowIdOf(f, r.body, c.sid));
      assert.equal(row.handle?.lease_id, r.body.lease_id);
      assert.equal(row.handle?.parent_accessor, owner.accessor);
      assert.ok(!JSON.stringify(row.handle).includes(r.body.credentials.password));
      // The lease really dies with its owner, at Vault, without the broker.
      f.tb.clock.advance(Date.parse(r.body.expires_at) - f.tb.clock.now() + 1);
      assert.equal(f.vault.isLeaseActive(r.body.lease_id), false);
    });

    it('reads a KV v2 secret (static: expires_at is advice, nothing to revoke but the reader)', async () => {
      const a = await f.agent('kv-owner', 'creds-owner');
      const tok = await mustSession(f.tb, a, 'cred:vault-kv');
      const r = await f.cred('vault-kv', tok);
      assert.equal(r.status, 200, JSON.stringify(r.body));
      assert.deepEqual(r.body.credentials, { api_key: 'k-123', endpoint: 'https://tickets.internal' });
      assert.equal(r.body.lease_id, undefined);
      assert.ok(Date.parse(r.body.expires_at) <= claimsOf(tok).exp * 1000);
      assert.equal(r.body.static, true, 'the answer says the value is static');
    });

    it('revoking a session that read a KV secret revokes the reader and records the value as not revocable (never "revoked")', async () => {
      const a = await f.agent('kv-revoke', 'creds-owner');
      const tok = await mustSession(f.tb, a, 'cred:vault-kv');
      const sid = claimsOf(tok).sid;
      const r = await f.cred('vault-kv', tok);
      assert.equal(r.status, 200, JSON.stringify(r.body));
      await revokeSession(f.tb.b, sid, { actor: 'admin', via: 'test' });
      const [row] = await f.rows(sid);
      assert.equal(f.vault.isAccessorActive(row.handle!.parent_accessor), false, 'the token that read it is revoked');
      assert.notEqual(row.state, 'revoked', row.note!);
      assert.equal(row.state, 'issued');
      assert.ok(row.revokedAt !== null, 'the revocation is recorded');
      assert.match(row.note!, /static \(KV\) secret cannot be revoked.*stays valid until it is rotated/);
    });
  });

  describe('AWS STS', () => {
    it('assumes the role with the session policy, SourceIdentity, tags and a duration within the session', async () => {
      const a = await f.agent('sts-owner', 'creds-owner');
      const tok = await mustSession(f.tb, a, 'cred:s3', { task: 'weekly report: Q1/2026 (draft #2)' });
      const c = claimsOf(tok);
      const sessionEnd = Number((await f.tb.b.db('sessions').where({ sid: c.sid }).first()).expires_at);
      const r = await f.cred('s3', tok);
      assert.equal(r.status, 200, JSON.stringify(r.body));
      assert.equal(r.body.provider, 'aws-sts');
      const [sent] = f.sts.assumeRoleRequests();
      assert.equal(sent.RoleArn, ROLE_ARN_RO);
      assert.equal(
        sent.Policy,
        JSON.stringify(timeBoundSessionPolicy(SESSION_POLICY, c.exp * 1000)),
        'the inline session policy downscopes the role, until the token’s exp',
      );
      assert.ok(
        sent.DurationSeconds === 1799 || sent.DurationSeconds === 1800,
        `policy ttl 30m, the token has 30m left (whole seconds): ${sent.DurationSeconds}`,
      );
      assert.match(sent.SourceIdentity!, NAME_RE);
      assert.equal(sent.SourceIdentity, `${a.id}.${c.sid.replace(/^ses_/, '')}`, 'agent and session');
      assert.match(sent.RoleSessionName!, NAME_RE);
      assert.match(sent.RoleSessionName!, /^cordon\.sts-owner\./);
      const tags = Object.fromEntries(sent.Tags.map((t) => [t.Key, t.Value]));
      assert.deepEqual(Object.keys(tags), ['agent', 'session', 'task', 'depth']);
      assert.equal(tags.agent, a.id);
      assert.equal(tags.session, c.sid);
      assert.equal(tags.task, 'weekly report: Q1/2026 _draft _2_', 'sanitised to the tag character set');
      assert.equal(tags.depth, '0');
      const issued = f.sts.getCredential(r.body.credentials.AccessKeyId)!;
      assert.equal(issued.secretAccessKey, r.body.credentials.SecretAccessKey);
      assert.equal(issued.sessionToken, r.body.credentials.SessionToken);
      assert.equal(Date.parse(r.body.expires_at), awsSec(issued.expiresAtMs), 'what AWS says');
      assert.equal(r.body.credentials.Expiration, new Date(awsSec(issued.expiresAtMs)).toISOString());
      assert.ok(issued.expiresAtMs <= sessionEnd, 'never past the session');
      const row = await f.row(await rowIdOf(f, r.body, c.sid));
      assert.equal(row.handle?.source_identity, sent.SourceIdentity);
      assert.equal(row.handle?.role_session_name, sent.RoleSessionName);
      assert.ok(!JSON.stringify(row.handle).includes(issued.secretAccessKey) && !JSON.stringify(row.handle).includes(issued.sessionToken));
    });

    /** `aws:CurrentTime` as the session policy states it: the token's exp, to the second. */
    const isoSec = (ms: number): string => new Date(ms).toISOString().replace('.000Z', 'Z');

    it('a token with 20 minutes left: DurationSeconds is its remaining life (not the policy ttl, not the session’s), bounded by the session policy too, no IAM call', async () => {
      const a = await f.agent('sts-20m', 'creds-owner');
      const tok = await mustSession(f.tb, a, 'cred:s3-iam');
      const c = claimsOf(tok);
      f.tb.clock.advance(10 * 60_000); // 20 of the token's 30 minutes left, 50 of the session's 60, policy ttl 30m
      const r = await f.cred('s3-iam', tok);
      assert.equal(r.status, 200, JSON.stringify(r.body));
      const sent = f.sts.assumeRoleRequests().at(-1)!;
      assert.ok(sent.DurationSeconds === 1199 || sent.DurationSeconds === 1200, `the token's remaining life in whole seconds: ${sent.DurationSeconds}`);
      assert.equal(JSON.parse(sent.Policy!).Statement[0].Condition.DateLessThan['aws:CurrentTime'], isoSec(c.exp * 1000));
      assert.ok(Date.parse(r.body.expires_at) <= c.exp * 1000, 'never past the token');
      assert.deepEqual(
        f.sts.requests.map((x) => x.action),
        ['AssumeRole'],
        'no IAM call',
      );
      assert.deepEqual(await iamDenies.bySession(f.tb.b.db, c.sid), []);
    });

    it('a token with 60 s left (its credential has no session_policy): 900 s at STS, an Allow-all session policy that ends at the token’s exp, no IAM call; usable at exp − 1 s, refused at exp + 1 s', async () => {
      const a = await f.agent('exp-all', 'creds-owner');
      const tok = await mustSession(f.tb, a, 'cred:s3-all');
      const c = claimsOf(tok);
      const exp = c.exp * 1000;
      f.tb.clock.set(exp - 60_000);
      const head = await auditHead(f.tb.b);
      const r = await f.cred('s3-all', tok);
      assert.equal(r.status, 200, JSON.stringify(r.body));

      // STS: its floor, and the time bound in the session policy; IAM is never asked.
      const sent = f.sts.assumeRoleRequests();
      assert.equal(sent.length, 1);
      assert.equal(sent[0].DurationSeconds, 900);
      assert.deepEqual(JSON.parse(sent[0].Policy!), {
        Version: '2012-10-17',
        Statement: [{ Effect: 'Allow', Action: '*', Resource: '*', Condition: { DateLessThan: { 'aws:CurrentTime': isoSec(exp) } } }],
      });
      assert.deepEqual(
        f.sts.requests.map((x) => x.action),
        ['AssumeRole'],
        'no IAM call',
      );
      assert.deepEqual(await iamDenies.bySession(f.tb.b.db, c.sid), [], 'nothing recorded to clean up');

      // The answer ends with the token, and says so (SDKs refresh by Expiration).
      assert.equal(r.body.expires_at, new Date(exp).toISOString());
      assert.equal(r.body.credentials.Expiration, new Date(exp).toISOString());
      const key = r.body.credentials.AccessKeyId;
      assert.ok(f.sts.getCredential(key)!.expiresAtMs > exp, 'STS itself would have let the keys live on');
      const get = { action: 's3:GetObject', resource: 'arn:aws:s3:::reports/x' };
      assert.equal(f.sts.isCredentialUsable(key, { ...get, atMs: exp - 1000 }), true, 'usable while the token lives');
      assert.equal(f.sts.isCredentialUsable(key, { ...get, atMs: exp + 1000 }), false, 'refused once the token is dead');
      f.tb.clock.set(exp + 1000);
      assert.equal(f.sts.isCredentialUsable(key, get), false, 'on the double’s own clock');

      const row = await f.row(await rowIdOf(f, r.body, c.sid));
      assert.equal(row.expiresAt, exp);
      assert.equal(row.jti, c.jti);
      const audit = await auditSince(f.tb.b, head);
      const issue = audit.find((x) => x.event === 'credential.issue')!;
      assert.equal(issue.decision, 'allow');
      assert.equal(issue.params.time_bound, isoSec(exp));
      assert.equal(issue.params.sts_expires_at, isoSec(f.sts.getCredential(key)!.expiresAtMs));
      assert.equal(issue.params.duration_sec, 900);
      assert.equal(issue.params.expiry_deny, undefined);
      assert.equal(audit.filter((x) => x.event === 'credential.iam_deny').length, 0);
    });

    it('with revoke_via_iam: false a token with 60 s left is served the same way: its session_policy’s Allow ends at the token’s exp', async () => {
      const a = await f.agent('exp-noiam', 'creds-owner');
      const tok = await mustSession(f.tb, a, 'cred:s3');
      const c = claimsOf(tok);
      const exp = c.exp * 1000;
      f.tb.clock.set(exp - 60_000);
      const r = await f.cred('s3', tok);
      assert.equal(r.status, 200, JSON.stringify(r.body));
      const [sent] = f.sts.assumeRoleRequests();
      assert.equal(sent.RoleArn, ROLE_ARN_RO);
      assert.equal(sent.DurationSeconds, 900);
      assert.deepEqual(JSON.parse(sent.Policy!).Statement, [
        { ...SESSION_POLICY.Statement[0], Condition: { DateLessThan: { 'aws:CurrentTime': isoSec(exp) } } },
      ]);
      assert.deepEqual(
        f.sts.requests.map((x) => x.action),
        ['AssumeRole'],
        'no IAM call',
      );
      assert.equal(r.body.expires_at, new Date(exp).toISOString());
      const key = r.body.credentials.AccessKeyId;
      const get = { action: 's3:GetObject', resource: 'arn:aws:s3:::reports/x' };
      assert.equal(f.sts.isCredentialUsable(key, { ...get, atMs: exp - 1000 }), true);
      assert.equal(f.sts.isCredentialUsable(key, { ...get, atMs: exp + 1000 }), false);
      assert.equal(
        f.sts.isCredentialUsable(key, { action: 's3:PutObject', resource: 'arn:aws:s3:::reports/x', atMs: exp - 1000 }),
        false,
        'and only what the session policy allows',
      );
      assert.equal((await f.rows(c.sid))[0].state, 'issued');
    });

    it('whatever the token has left, expires_at is never past its exp, and the keys are dead after it', async () => {
      const a = await f.agent('exp-prop', 'creds-owner');
      for (const left of [2, 30, 60, 299, 600, 899, 900, 901, 1200, 1799]) {
        f.sts.reset();
        const tok = await mustSession(f.tb, a, 'cred:s3-iam');
        const exp = claimsOf(tok).exp * 1000;
        f.tb.clock.set(exp - left * 1000);
        const r = await f.cred('s3-iam', tok);
        assert.equal(r.status, 200, `${left} s left: ${JSON.stringify(r.body)}`);
        assert.ok(Date.parse(r.body.expires_at) <= exp, `${left} s left: expires_at ${r.body.expires_at} after the token's exp`);
        assert.ok(Date.parse(r.body.credentials.Expiration) <= exp, `${left} s left: Expiration`);
        const key = r.body.credentials.AccessKeyId;
        assert.equal(f.sts.isCredentialUsable(key, { atMs: exp + 1000 }), false, `${left} s left: the keys outlive the token`);
        assert.equal(f.sts.isCredentialUsable(key, { atMs: Math.min(exp, Date.parse(r.body.expires_at)) - 1000 }), true, `${left} s left: dead too early`);
        assert.equal(f.sts.assumeRoleRequests()[0].DurationSeconds, Math.max(900, left));
      }
    });
  });

  describe('delegation', () => {
    it('a sub-agent gets only the cred: grants its chain passed down', async () => {
      const orch = await f.agent('orch-1', 'creds-owner');
      const worker = await f.agent('worker-1', 'creds-worker');
      const tok = await mustSession(f.tb, orch, 'work:read cred:vault-token cred:vault-db cred:s3-iam');
      // The orchestrator's policy does not hand cred:vault-db down.
      const refused = await delegateReq(f.tb, orch, tok, worker.id, 'work:read cred:vault-db');
      assert.equal(refused.status, 400);
      assert.equal(refused.body.error, 'invalid_scope');
      const sub = await mustDelegate(f.tb, orch, tok, worker, 'work:read cred:vault-token cred:s3-iam');

      const head = await auditHead(f.tb.b);
      let r = await f.cred('vault-db', sub);
      assert.equal(r.status, 403);
      assert.equal(r.body.error, 'insufficient_scope');
      assert.match(r.body.error_description, /cred:vault-db/);
      assert.match(r.headers.get('www-authenticate') ?? '', /^Bearer error="insufficient_scope"/);
      const denial = (await auditSince(f.tb.b, head)).filter((x) => x.decision === 'deny');
      assert.equal(denial.length, 1);
      assert.deepEqual(denial[0].chain, [orch.id, worker.id]);
      assert.equal(f.vault.requestsTo(/./).length, 0, 'Vault was not asked');

      r = await f.cred('vault-token', sub);
      assert.equal(r.status, 200, JSON.stringify(r.body));
      const child = f.vault.getToken(r.body.credentials.client_token)!;
      assert.equal(child.meta?.agent, orch.id, 'session owner');
      assert.equal(child.meta?.holder, worker.id, 'current holder');
      r = await f.cred('s3-iam', sub);
      assert.equal(r.status, 200, JSON.stringify(r.body));
      const sent = f.sts.assumeRoleRequests().at(-1)!;
      assert.equal(sent.SourceIdentity, `${orch.id}.${claimsOf(tok).sid.replace(/^ses_/, '')}`, 'one source identity per session, whoever holds the token');
      assert.equal(Object.fromEntries(sent.Tags.map((t) => [t.Key, t.Value])).depth, '1');
      assert.match(sent.RoleSessionName!, /^cordon\.worker-1\./);
    });
  });

  describe('revocation reaches the backends', () => {
    it('revoking the session revokes the Vault token and lease, denies STS via IAM, and records what AWS cannot revoke', async () => {
      const a = await f.agent('rv-owner', 'creds-owner');
      const tok = await mustSession(f.tb, a, 'cred:vault-token cred:vault-db cred:s3 cred:s3-iam');
      const sid = claimsOf(tok).sid;
      const vt = (await f.cred('vault-token', tok)).body;
      const db = (await f.cred('vault-db', tok)).body;
      const plain = (await f.cred('s3', tok)).body;
      const viaIam = (await f.cred('s3-iam', tok)).body;
      assert.ok(vt.credentials && db.lease_id && plain.credentials && viaIam.credentials);
      assert.equal(f.sts.isCredentialDenied(viaIam.credentials.AccessKeyId), false);
      f.vault.reset();
      f.sts.reset();
      const head = await auditHead(f.tb.b);

      await revokeSession(f.tb.b, sid, { actor: 'admin', via: 'test' });

      // Vault saw the calls and the objects are gone.
      const accessors = f.vault.requestsTo('auth/token/revoke-accessor').map((x) => x.body.accessor);
      assert.ok(accessors.includes(vt.credentials.accessor), 'revoke-accessor on the child token');
      assert.deepEqual(
        f.vault.requestsTo('sys/leases/revoke').map((x) => x.body.lease_id),
        [db.lease_id],
      );
      assert.equal(f.vault.isTokenActive(vt.credentials.client_token), false);
      assert.equal(f.vault.isLeaseActive(db.lease_id), false);
      // STS with revoke_via_iam: the role's one revocation policy, listing this session's source identity.
      const put = f.sts.requests.filter((x) => x.action === 'PutRolePolicy');
      assert.equal(put.length, 1);
      assert.equal(put[0].params.PolicyName, 'cordon-revocations');
      assert.deepEqual(Object.keys(f.sts.rolePolicies('agent-reports')), ['cordon-revocations']);
      const doc = JSON.parse(put[0].params.PolicyDocument);
      const st = doc.Statement.filter((x: { Sid: string }) => x.Sid === 'CordonRevokedSessions');
      assert.equal(st.length, 1);
      assert.equal(st[0].Effect, 'Deny');
      assert.deepEqual(st[0].Condition.StringEquals['aws:SourceIdentity'], [`${a.id}.${sid.replace(/^ses_/, '')}`]);
      assert.ok(st[0].Condition.DateLessThan['aws:TokenIssueTime']);
      assert.equal(f.sts.isCredentialDenied(viaIam.credentials.AccessKeyId), true, 'the revoked session is denied');
      assert.equal(f.sts.isCredentialDenied(viaIam.credentials.AccessKeyId, { action: 's3:GetObject', resource: 'arn:aws:s3:::reports/x' }), true);
      // Without revoke_via_iam AWS cannot revoke: recorded, and listed alive until expiry.
      assert.equal(f.sts.isCredentialDenied(plain.credentials.AccessKeyId), false);

      const rows = await f.rows(sid);
      const by = (name: string) => rows.find((x) => x.name === name)!;
      assert.equal(by('vault-token').state, 'revoked');
      assert.equal(by('vault-db').state, 'revoked');
      assert.equal(by('s3-iam').state, 'revoked');
      assert.equal(by('s3').state, 'issued');
      assert.ok(by('s3').revokedAt !== null, 'revocation recorded');
      assert.match(by('s3').note!, /AWS cannot revoke STS credentials one by one.*valid until/);
      const [deny] = await iamDenies.bySession(f.tb.b.db, sid);
      assert.equal(deny.roleArn, ROLE_ARN);
      assert.equal(deny.policyName, put[0].params.PolicyName);
      assert.equal(deny.kind, 'session');
      assert.equal(deny.subject, `${a.id}.${sid.replace(/^ses_/, '')}`);
      assert.equal(deny.removeAfter, Date.parse(viaIam.expires_at) + f.tb.b.config.clockSkewSec * 1000, 'kept until every denied credential has expired');
      const audit = await auditSince(f.tb.b, head);
      assert.equal(audit.filter((x) => x.event === 'credential.revoke').length, 4);
      assert.equal(audit.filter((x) => x.event === 'credential.iam_deny').length, 1);

      // A new session of the same agent is not caught by the old deny.
      const tok2 = await mustSession(f.tb, a, 'cred:s3-iam');
      const fresh = (await f.cred('s3-iam', tok2)).body;
      assert.equal(f.sts.isCredentialDenied(fresh.credentials.AccessKeyId), false);
      // And a revoked session's token gets nothing more.
      const again = await f.cred('vault-token', tok);
      assert.equal(again.status, 401);
      assert.equal(again.body.error, 'invalid_token');
    });

    it('Vault refusing the lease revocation (403) does not leave the parent alive: the parent goes, and the lease with it', async () => {
      const a = await f.agent('rv-403', 'creds-owner');
      const tok = await mustSession(f.tb, a, 'cred:vault-db');
      const sid = claimsOf(tok).sid;
      const r = await f.cred('vault-db', tok);
      assert.equal(r.status, 200, JSON.stringify(r.body));
      f.vault.failNext(403, ['permission denied'], 'sys/leases/revoke');
      await revokeSession(f.tb.b, sid, { actor: 'admin', via: 'test' });
      const [row] = await f.rows(sid);
      assert.equal(f.vault.isAccessorActive(row.handle!.parent_accessor), false, 'the per-credential parent was revoked all the same');
      assert.equal(f.vault.isLeaseActive(r.body.lease_id), false, 'and the lease it owns with it');
      assert.equal(row.state, 'revoked', row.note!);
      assert.match(row.note!, /revoked parent.*lease: Vault denied the broker sys\/leases\/revoke/);
    });

    it('a session that ends while the backend is answering: the fresh credential is revoked, never returned', async () => {
      const a = await f.agent('end-race', 'creds-owner');
      let tok = await mustSession(f.tb, a, 'cred:s3-iam');
      const sid = claimsOf(tok).sid;
      const end = Number((await f.tb.b.db('sessions').where({ sid }).first()).expires_at);
      f.tb.clock.set(end - 600_000); // 10 minutes left: STS issues 15, ended by the session policy at the token's exp
      tok = await mustSession(f.tb, a, 'cred:s3-iam', { session: sid });
      const providers = f.tb.b.providers;
      const real = providers.get('aws-sts')!;
      let issued: Record<string, any> | undefined;
      providers.set('aws-sts', {
        name: real.name,
        plan: (r) => real.plan(r),
        issue: async (r, p, cp) => {
          const out = await real.issue(r, p, cp);
          issued = out.credentials;
          f.tb.clock.set(end + 2000); // the session ends while AWS answers
          return out;
        },
        revoke: (t, c) => real.revoke(t, c),
        health: () => real.health(),
        reconcile: (c) => real.reconcile!(c),
      });
      try {
        const r = await f.cred('s3-iam', tok);
        assert.equal(r.status, 401, JSON.stringify(r.body));
        assert.equal(r.body.error, 'invalid_token');
      } finally {
        providers.set('aws-sts', real);
      }
      assert.ok(issued?.AccessKeyId);
      assert.equal(f.sts.isCredentialDenied(issued.AccessKeyId), true, 'the credential AWS issued after the session ended is denied');
      const [row] = await f.rows(sid);
      assert.equal(row.state, 'revoked', row.note!);
    });

    it('revoking one delegated token kills only the credentials of that subtree', async () => {
      const orch = await f.agent('orch-2', 'creds-owner');
      const worker = await f.agent('worker-2', 'creds-worker');
      const tok = await mustSession(f.tb, orch, 'work:read cred:vault-token cred:s3-iam');
      const sub = await mustDelegate(f.tb, orch, tok, worker, 'work:read cred:vault-token cred:s3-iam');
      const mineV = (await f.cred('vault-token', tok)).body;
      const mineS = (await f.cred('s3-iam', tok)).body;
      const subV = (await f.cred('vault-token', sub)).body;
      const subS = (await f.cred('s3-iam', sub)).body;
      // The orchestrator revokes what it handed down (RFC 7009 at /revoke).
      const rv = await postForm(`${f.tb.url}/revoke`, { token: sub }, { authorization: basic(orch.id, orch.secret) });
      assert.equal(rv.status, 200);
      assert.equal(f.vault.isTokenActive(subV.credentials.client_token), false);
      assert.equal(f.vault.isTokenActive(mineV.credentials.client_token), true);
      assert.equal(f.sts.isCredentialDenied(subS.credentials.AccessKeyId), true, 'the sub-agent’s STS credential is denied');
      assert.equal(f.sts.isCredentialDenied(mineS.credentials.AccessKeyId), false, 'the orchestrator’s, same session, is not');
      const put = f.sts.requests.filter((x) => x.action === 'PutRolePolicy').at(-1)!;
      assert.equal(put.params.PolicyName, 'cordon-revocations');
      const stmts = JSON.parse(put.params.PolicyDocument).Statement;
      assert.deepEqual(
        stmts.map((x: any) => x.Sid),
        ['CordonRevokedCredentials'],
        'a token-level revocation names credentials, not the session',
      );
      assert.deepEqual(Object.keys(stmts[0].Condition), ['StringLike']);
      const userids: string[] = stmts[0].Condition.StringLike['aws:userid'];
      assert.ok(userids.includes(`AROA*:${f.sts.getCredential(subS.credentials.AccessKeyId)!.sessionName}`));
      assert.ok(!userids.includes(`AROA*:${f.sts.getCredential(mineS.credentials.AccessKeyId)!.sessionName}`));
    });

    it('a revocation that lands while Vault is still answering: the fresh credential is revoked, never returned', async () => {
      const a = await f.agent('race-owner', 'creds-owner');
      const tok = await mustSession(f.tb, a, 'cred:vault-token');
      const sid = claimsOf(tok).sid;
      f.vault.delayMs = 150;
      const pending = f.cred('vault-token', tok);
      await new Promise((r) => setTimeout(r, 60));
      await revokeSession(f.tb.b, sid, { actor: 'admin', via: 'test' });
      const r = await pending;
      f.vault.delayMs = 0;
      assert.equal(r.status, 401, JSON.stringify(r.body));
      assert.equal(r.body.error, 'invalid_token');
      assert.match(r.body.error_description, /while the credential was being issued/);
      const [row] = await f.rows(sid);
      assert.equal(row.state, 'revoked');
      const child = f.vault.getToken(row.handle!.accessor);
      assert.equal(child?.state, 'revoked');
    });
    for (const who of ['holder', 'root'] as const) {
      it(`disabling the ${who} while Vault is still answering: the issue does not commit, the fresh credential is revoked`, async () => {
        const owner = await f.agent(`disable-race-owner-${who}`, 'creds-owner');
        const worker = await f.agent(`disable-race-worker-${who}`, 'creds-worker');
        const root = await mustSession(f.tb, owner, 'work:read cred:vault-token');
        const tok = who === 'root' ? root : await mustDelegate(f.tb, owner, root, worker, 'work:read cred:vault-token');
        const sid = claimsOf(tok).sid;
        f.vault.delayMs = 150;
        const pending = f.cred('vault-token', tok);
        // The intent row is written before the backend is called: then the issue is in flight.
        for (let i = 0; i < 200 && (await f.rows(sid)).length < 1; i++) await new Promise((r) => setTimeout(r, 5));
        await setAgentEnabled(f.tb.b, (who === 'root' ? owner : worker).id, false, 'test');
        const r = await pending;
        f.vault.delayMs = 0;
        assert.equal(r.status, 401, JSON.stringify(r.body));
        assert.equal(r.body.error, 'invalid_token');
        assert.equal(r.body.credentials, undefined);
        const [row] = await f.rows(sid);
        assert.equal(row.state, 'revoked');
        assert.equal(f.vault.getToken(row.handle!.accessor)?.state, 'revoked');
      });
    }
  });

  describe('concurrent issues (recorded by group commit)', () => {
    it('30 issues at once, two of them for a token revoked meanwhile: each live one is recorded with its own audit row, the others are revoked, and the chain verifies', async () => {
      const a = await f.agent('burst-owner', 'creds-owner');
      const live = await mustSession(f.tb, a, 'cred:vault-token');
      const doomed = await mustSession(f.tb, a, 'cred:vault-token');
      const head = await auditHead(f.tb.b);
      f.vault.delayMs = 100;
      const pending = [...Array(28)].map(() => f.cred('vault-token', live)).concat([f.cred('vault-token', doomed), f.cred('vault-token', doomed)]);
      // Revoke once both doomed intents are written: their backend calls are under way.
      for (let i = 0; i < 200 && (await f.rows(claimsOf(doomed).sid)).length < 2; i++) await new Promise((r) => setTimeout(r, 5));
      await revokeSession(f.tb.b, claimsOf(doomed).sid, { actor: 'admin', via: 'test' });
      const answers = await Promise.all(pending);
      f.vault.delayMs = 0;
      assert.deepEqual(
        answers.slice(0, 28).map((r) => r.status),
        Array(28).fill(200),
      );
      assert.deepEqual(
        answers.slice(28).map((r) => r.body.error),
        ['invalid_token', 'invalid_token'],
      );
      const liveRows = await f.rows(claimsOf(live).sid);
      assert.equal(liveRows.length, 28);
      assert.ok(liveRows.every((r) => r.state === 'issued'));
      assert.deepEqual(
        new Set(answers.slice(0, 28).map((r) => f.vault.getToken(r.body.credentials.client_token)?.accessor)),
        new Set(liveRows.map((r) => r.handle!.accessor)),
        'every answer is the credential its row names',
      );
      const doomedRows = await f.rows(claimsOf(doomed).sid);
      assert.deepEqual(
        doomedRows.map((r) => r.state),
        ['revoked', 'revoked'],
      );
      for (const r of doomedRows) assert.equal(f.vault.getToken(r.handle!.accessor)?.state, 'revoked');
      const rows = (await auditSince(f.tb.b, head)).filter((r) => r.event === 'credential.issue');
      assert.equal(rows.filter((r) => r.decision === 'allow').length, 28, 'one allow row per live credential');
      assert.equal(
        rows.filter((r) => r.decision === 'info' && r.sid === claimsOf(doomed).sid).length,
        2,
        'recorded (they existed at the backend), not returned',
      );
      assert.equal((await verifyAudit(f.tb.b.db)).ok, true);
    });

    it('an intent that orphan recovery claimed before the answer was recorded: 503, nothing recorded as issued, the credential revoked at Vault', async () => {
      const a = await f.agent('late-owner', 'creds-owner');
      const tok = await mustSession(f.tb, a, 'cred:vault-token');
      const sid = claimsOf(tok).sid;
      f.vault.delayMs = 150;
      const pending = f.cred('vault-token', tok);
      // Once the intent names the parent (checkpoint), the child token is being created: claim the
      // intent then, as the sweeper does to one older than the grace period.
      let claimed = 0;
      for (let i = 0; i < 200 && !claimed; i++) {
        await new Promise((r) => setTimeout(r, 5));
        claimed = await f.tb.b
          .db('credentials')
          .where({ sid, state: 'pending' })
          .whereNotNull('handle')
          .update({ state: 'failed', note: 'claimed by the test' });
      }
      assert.equal(claimed, 1);
      const r = await pending;
      f.vault.delayMs = 0;
      assert.equal(r.status, 503, JSON.stringify(r.body));
      assert.match(r.body.error_description, /answered too late/);
      const [row] = await f.rows(sid);
      assert.equal(row.state, 'failed');
      const issued = f.vault.listTokens().filter((t) => t.meta?.session === sid);
      assert.ok(issued.length >= 1, 'Vault did issue');
      assert.ok(
        issued.every((t) => t.state === 'revoked'),
        'what Vault issued for the session is revoked',
      );
    });
  });

  describe('the database failing at the record', () => {
    /** One credential request while the writer's record step behaves as `record` says; the session's row and audit rows after it. */
    async function issueWith(
      name: string,
      record: (
        original: IssuanceWriter['recordCredential'],
        r: Parameters<IssuanceWriter['recordCredential']>[0],
      ) => ReturnType<IssuanceWriter['recordCredential']>,
    ) {
      const a = await f.agent(name, 'creds-owner');
      const tok = await mustSession(f.tb, a, 'cred:vault-token');
      const sid = claimsOf(tok).sid;
      const head = await auditHead(f.tb.b);
      const writer = f.tb.b.issuance;
      // eslint-disable-next-line @typescript-eslint/unbound-method -- bound below, and put back as it was
      const original = writer.recordCredential;
      writer.recordCredential = (r) => record(original.bind(writer), r);
      let res;
      try {
        res = await f.cred('vault-token', tok);
      } finally {
        writer.recordCredential = original;
      }
      const [row] = await f.rows(sid);
      const issued = f.vault.listTokens().filter((t) => t.meta?.session === sid);
      assert.ok(issued.length >= 1 && issued.every((t) => t.state === 'revoked'), 'what Vault issued is revoked');
      return { res, row, audit: await auditSince(f.tb.b, head) };
    }

    it('the backend issued but the record could not be written: 503, the credential revoked at Vault, the row failed with a deny audit row', async () => {
      const { res, row, audit } = await issueWith('unrecorded-owner', async () => {
        throw new Error('insert into `audit` values (…) - SQLITE_IOERR: disk I/O error');
      });
      assert.equal(res.status, 503, JSON.stringify(res.body));
      assert.equal(res.body.error, 'temporarily_unavailable');
      assert.match(res.body.error_description, /could not record the credential, so it was revoked/);
      assert.ok(!JSON.stringify(res.body).includes('SQLITE'), 'no driver detail to the client');
      assert.equal(row.state, 'failed');
      const denies = audit.filter((x) => x.decision === 'deny');
      assert.equal(denies.length, 1);
      assert.equal(denies[0].params.credential_id, row.id);
      assert.equal(denies[0].params.reason_tag, 'record_failed');
      assert.match(denies[0].reason ?? '', /^temporarily_unavailable: /);
    });

    it('the record committed but its reply was lost: not handed out, and the issued row is revoked with its audit row', async () => {
      const { res, row, audit } = await issueWith('lost-reply-owner', async (original, r) => {
        await original(r);
        throw new Error('Connection terminated unexpectedly');
      });
      assert.equal(res.status, 503, JSON.stringify(res.body));
      assert.equal(row.state, 'revoked');
      assert.deepEqual(
        audit.filter((x) => x.params.credential_id === row.id || (x.params.credentials ?? []).includes?.(row.id)).map((x) => x.event),
        ['credential.issue', 'credential.revoke'],
      );
    });
  });

  describe('HTTP surface', () => {
    it('401 with a challenge without a token, 400 for a malformed name, 403 without the cred: scope', async () => {
      let r = await fetch(`${f.tb.url}/credentials/vault-token`, { method: 'POST' });
      assert.equal(r.status, 401);
      assert.match(r.headers.get('www-authenticate') ?? '', /^Bearer /);
      assert.equal(((await r.json()) as { error: string }).error, 'invalid_token');

      const a = await f.agent('http-none', 'creds-none');
      const tok = await mustSession(f.tb, a, 'work:read');
      let c = await f.cred('Bad_Name', tok);
      assert.equal(c.status, 400);
      assert.equal(c.body.error, 'invalid_request');
      c = await f.cred('vault-token', tok);
      assert.equal(c.status, 403);
      assert.equal(c.body.error, 'insufficient_scope');

      r = await fetch(`${f.tb.url}/credentials/vault-token`, { method: 'POST', headers: { authorization: 'Bearer not-a-jwt' } });
      assert.equal(r.status, 401);
      assert.match(r.headers.get('www-authenticate') ?? '', /error="invalid_token"/);
    });

    it('refuses a token made for a resource server (its audience is not the broker): that server cannot trade it for credentials', async () => {
      const a = await f.agent('http-aud', 'creds-owner');
      const forRs = await mustSession(f.tb, a, 'cred:vault-token', { resource: RS_AUDIENCE });
      assert.deepEqual(claimsOf(forRs).aud, RS_AUDIENCE);
      const seq = await auditHead(f.tb.b);
      const vaultCalls = f.vault.requests.length;
      const c = await f.cred('vault-token', forRs);
      assert.equal(c.status, 401, JSON.stringify(c.body));
      assert.equal(c.body.error, 'invalid_token');
      assert.match(c.body.error_description, /audience does not include this broker/);
      assert.equal(f.vault.requests.length, vaultCalls, 'Vault was never asked');
      const denies = (await auditSince(f.tb.b, seq)).filter((r) => r.decision === 'deny');
      assert.equal(denies.length, 1);
      assert.equal(denies[0].params.reason_tag, 'audience_not_broker');
      assert.equal(denies[0].jti, claimsOf(forRs).jti);

      // The agent itself may ask for the broker as an audience, in a new session or in this one.
      const both = await mustSession(f.tb, a, 'cred:vault-token', { resource: [RS_AUDIENCE, f.tb.url] });
      assert.equal((await f.cred('vault-token', both)).status, 200);
      const mine = await mustSession(f.tb, a, 'cred:vault-token', { session: claimsOf(forRs).sid, audience: f.tb.url });
      assert.equal(claimsOf(mine).aud, f.tb.url);
      assert.equal(claimsOf(mine).sid, claimsOf(forRs).sid);
      assert.equal((await f.cred('vault-token', mine)).status, 200);
    });

    it('ignores a request body; an expired token is 401', async () => {
      const a = await f.agent('http-body', 'creds-owner');
      const tok = await mustSession(f.tb, a, 'cred:vault-kv');
      const c = await f.cred('vault-kv', tok, { 'content-type': 'application/json' }, JSON.stringify({ ttl: '99h' }));
      assert.equal(c.status, 200, JSON.stringify(c.body));
      f.tb.clock.advance(31 * 60_000);
      const late = await f.cred('vault-kv', tok);
      assert.equal(late.status, 401);
      assert.equal(late.body.error, 'invalid_token');
    });

    it('a DPoP-bound token needs Authorization: DPoP and a fresh proof for this URL and token', async () => {
      const a = await f.agent('http-dpop', 'creds-owner');
      const k = await dpopKey();
      const iat = () => Math.floor(f.tb.clock.now() / 1000);
      const s = await session(f.tb, a, 'cred:vault-kv', {}, { dpop: await dpopProof(k, 'POST', `${f.tb.url}/token`, { iat: iat() }) });
      assert.equal(s.status, 200, JSON.stringify(s.body));
      assert.equal(s.body.token_type, 'DPoP');
      const tok = s.body.access_token as string;
      const url = `${f.tb.url}/credentials/vault-kv`;
      const ath = createHash('sha256').update(tok).digest('base64url');

      let r = await f.cred('vault-kv', tok);
      assert.equal(r.status, 401, 'Bearer is refused for a bound token');
      r = await f.cred('vault-kv', tok, { authorization: `DPoP ${tok}` });
      assert.equal(r.status, 401, 'a proof is required');
      const k2 = await dpopKey();
      r = await f.cred('vault-kv', tok, { authorization: `DPoP ${tok}`, dpop: await dpopProof(k2, 'POST', url, { iat: iat(), ath }) });
      assert.equal(r.status, 401, 'a proof made with another key');
      const good = await dpopProof(k, 'POST', url, { iat: iat(), ath });
      r = await f.cred('vault-kv', tok, { authorization: `DPoP ${tok}`, dpop: good });
      assert.equal(r.status, 200, JSON.stringify(r.body));
      r = await f.cred('vault-kv', tok, { authorization: `DPoP ${tok}`, dpop: good });
      assert.equal(r.status, 401, 'a replayed proof');
      assert.equal(r.body.error, 'invalid_dpop_proof');
      assert.match(r.headers.get('www-authenticate') ?? '', /^DPoP /);
    });
  });
});

describe('backend credentials: a provider that is not configured', () => {
  it('answers 503 naming the variable that turns it on', async () => {
    const tb = await startTestBroker({ policyDir: policyDir(POLICIES), ext: { routes: [credentialsRoute] } });
    try {
      const a = await register(tb, 'off-owner', 'creds-owner');
      const tok = await mustSession(tb, a, 'cred:vault-token cred:s3');
      for (const [name, variable] of [
        ['vault-token', 'VAULT_ADDR'],
        ['s3', 'AWS_REGION'],
      ]) {
        const r = await fetch(`${tb.url}/credentials/${name}`, { method: 'POST', headers: { authorization: `Bearer ${tok}` } });
        const body = (await r.json()) as { error: string; error_description: string };
        assert.equal(r.status, 503);
        assert.equal(body.error, 'temporarily_unavailable');
        assert.match(body.error_description, new RegExp(`${variable} is unset`));
      }
      assert.equal((await tb.b.db('credentials').count({ n: '*' }).first())?.n, 0);
    } finally {
      await tb.close();
    }
  });
});
