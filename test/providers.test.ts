import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { ManualClock } from '../src/clock.ts';
import { roleSessionNameFor, sourceIdentityFor, tagSafe, StsProvider } from '../src/providers/aws-sts.ts';
import { VaultProvider } from '../src/providers/vault.ts';
import { ProviderError, type IssueRequest, type Handle } from '../src/providers/provider.ts';
import { SessionPolicyError, timeBoundSessionPolicy } from '../src/policy/session-policy.ts';
import type { CredentialSpec } from '../src/policy/types.ts';
import type { VaultConfig } from '../src/config/index.ts';
import { ConfigError } from '../src/errors.ts';
import { startBackendCredentials } from '../src/credentials/sweep.ts';
import { VaultDouble } from './doubles/vault.ts';
import { StsDouble } from './doubles/sts.ts';
import { startTestBroker } from './helpers/broker.ts';

const NAME_RE = /^[\w+=,.@-]{2,64}$/;
const log = pino({ level: 'silent' });

function request(clock: ManualClock, spec: CredentialSpec, o: { tokenLeft?: number; sessionLeft?: number; task?: string } = {}): IssueRequest {
  const now = clock.now();
  return {
    credentialId: 'crd_AAAAAAAAAAAAAAAAAAAAAA',
    session: {
      sid: 'ses_BBBBBBBBBBBBBBBBBBBBBB',
      agentId: 'agt_CCCCCCCCCCCCCCCCCCCCCC',
      agentName: 'owner',
      task: o.task ?? null,
      expiresAt: now + (o.sessionLeft ?? 3600) * 1000,
    },
    claims: {
      iss: 'x',
      sub: 'agt_C',
      aud: 'x',
      iat: 0,
      nbf: 0,
      exp: Math.floor((now + (o.tokenLeft ?? 600) * 1000) / 1000),
      jti: 'jti-1',
      client_id: 'agt_CCCCCCCCCCCCCCCCCCCCCC',
      scope: '',
      sid: 'ses_B',
      cordon_depth: 0,
    },
    holderName: 'owner',
    name: 'x',
    spec,
    now,
    remainingSec: { token: o.tokenLeft ?? 600, session: o.sessionLeft ?? 3600 },
    tokenExpiresAt: now + (o.tokenLeft ?? 600) * 1000,
  };
}

describe('providers: names AWS accepts', () => {
  it('SourceIdentity is <agent>.<session>, within [\\w+=,.@-]{2,64}, whatever the ids look like', () => {
    assert.equal(sourceIdentityFor('agt_abc-DEF_123', 'ses_xyz'), 'agt_abc-DEF_123.xyz');
    for (const [agent, sid] of [
      ['agt_' + 'a'.repeat(60), 'ses_' + 'b'.repeat(22)],
      ['weird agent/ü:1', 'ses_with spaces & "quotes"'],
      ['aws:root', 'ses_x'],
      ['', ''],
    ]) {
      const si = sourceIdentityFor(agent, sid);
      assert.match(si, NAME_RE, si);
      assert.ok(!si.toLowerCase().startsWith('aws:'));
    }
    // Distinct sessions of one agent get distinct identities (so a deny hits one session).
    assert.notEqual(sourceIdentityFor('agt_x', 'ses_1111111111111111111111'), sourceIdentityFor('agt_x', 'ses_2222222222222222222222'));
  });

  it('RoleSessionName is unique per credential and valid', () => {
    const a = roleSessionNameFor('support-summarizer', 'ses_' + 'q'.repeat(22), 'crd_' + 'r'.repeat(22));
    assert.match(a, NAME_RE);
    assert.match(a, /^cordon\.support-summarizer\./);
    const long = roleSessionNameFor('n'.repeat(64), 'ses_1', 'crd_2');
    assert.match(long, NAME_RE);
    assert.notEqual(roleSessionNameFor('x', 'ses_s', 'crd_aaaaaaaaaaaa1'), roleSessionNameFor('x', 'ses_s', 'crd_aaaaaaaaaaaa2'));
  });

  it('tag values keep AWS’s character set and 256-character limit', () => {
    assert.equal(tagSafe('weekly report: Q1/2026 (draft #2) — ok'), 'weekly report: Q1/2026 _draft _2_ _ ok');
    assert.equal(tagSafe('é'.repeat(300)).length, 256);
  });
});

describe('providers: STS lifetime rules (plan)', () => {
  const clock = new ManualClock();
  const sts = new StsProvider({ region: 'us-east-1', endpoint: 'http://127.0.0.1:9', timeoutMs: 200 }, { clock, log, clockSkewSec: 30 });
  const spec = (o: Partial<Extract<CredentialSpec, { provider: 'aws-sts' }>> = {}): CredentialSpec => ({
    provider: 'aws-sts',
    ttl: 1800,
    role_arn: 'arn:aws:iam::123456789012:role/r',
    ...o,
  });
  after(() => sts.close());

  it('the TOKEN’s remaining life capped by the policy ttl (not the session’s)', () => {
    assert.equal(sts.plan(request(clock, spec(), { tokenLeft: 3600, sessionLeft: 3600 })).ttlSec, 1800);
    assert.equal(sts.plan(request(clock, spec(), { tokenLeft: 1000, sessionLeft: 3600 })).ttlSec, 1000);
    assert.equal(sts.plan(request(clock, spec(), { tokenLeft: 1200, sessionLeft: 3000 })).ttlSec, 1200);
  });
  it('never below 900 s: a short policy ttl is raised to 900 when the token allows it', () => {
    assert.equal(sts.plan(request(clock, spec({ ttl: 300 }), { tokenLeft: 3600 })).ttlSec, 900);
  });
  it('under 900 s of token: STS’s 900 s, but the plan’s latest expiry is the token’s exp, with revoke_via_iam or without', () => {
    for (const revoke_via_iam of [undefined, true, false]) {
      const req = request(clock, spec({ revoke_via_iam }), { tokenLeft: 60, sessionLeft: 3000 });
      const p = sts.plan(req);
      assert.equal(p.ttlSec, 900);
      assert.equal(p.expiresAtMax, req.tokenExpiresAt, 'nothing of it outlives the token');
      assert.equal(p.handle!.revoke_via_iam, revoke_via_iam !== false);
    }
  });
  it('whatever the token has left, the plan never lets the keys outlive it', () => {
    for (let left = 1; left <= 4000; left += 7) {
      const req = request(clock, spec({ ttl: 3600 }), { tokenLeft: left, sessionLeft: 4000 });
      const p = sts.plan(req);
      assert.ok(p.expiresAtMax <= req.tokenExpiresAt, `${left} s left`);
      assert.equal(p.ttlSec, Math.max(900, Math.min(3600, left)));
    }
  });
});

describe('providers: the STS session policy’s time bound (policy/session-policy.ts)', () => {
  const exp = Date.UTC(2026, 11, 1, 22, 10, 5, 0);
  const EXP = '2026-12-01T22:10:05Z';
  const bound = (policy: Record<string, unknown> | undefined, at = exp) => timeBoundSessionPolicy(policy, at) as { Version?: string; Statement: any };

  it('without a session_policy: Allow-all until the token’s exp (the role’s own policies still decide what)', () => {
    assert.deepEqual(bound(undefined), {
      Version: '2012-10-17',
      Statement: [{ Effect: 'Allow', Action: '*', Resource: '*', Condition: { DateLessThan: { 'aws:CurrentTime': EXP } } }],
    });
    assert.equal(bound(undefined, exp + 999).Statement[0].Condition.DateLessThan['aws:CurrentTime'], EXP, 'to the second, rounded down');
  });

  it('every Allow statement (NotAction and NotResource ones too) gets the bound beside its own conditions; Deny statements are left alone', () => {
    const deny = { Effect: 'Deny', Action: 's3:DeleteObject', Resource: '*', Condition: { Bool: { 'aws:SecureTransport': 'false' } } };
    const out = bound({
      Version: '2012-10-17',
      Statement: [
        { Sid: 'read', Effect: 'Allow', Action: ['s3:GetObject'], Resource: ['arn:aws:s3:::reports/*'] },
        {
          Effect: 'Allow',
          NotAction: 'iam:*',
          NotResource: 'arn:aws:s3:::secret/*',
          Condition: { StringEquals: { 'aws:RequestedRegion': 'eu-west-1' }, DateLessThan: { 'aws:TokenIssueTime': '2030-01-01T00:00:00Z' } },
        },
        deny,
      ],
    });
    assert.deepEqual(out.Statement[0], {
      Sid: 'read',
      Effect: 'Allow',
      Action: ['s3:GetObject'],
      Resource: ['arn:aws:s3:::reports/*'],
      Condition: { DateLessThan: { 'aws:CurrentTime': EXP } },
    });
    assert.deepEqual(out.Statement[1], {
      Effect: 'Allow',
      NotAction: 'iam:*',
      NotResource: 'arn:aws:s3:::secret/*',
      Condition: {
        StringEquals: { 'aws:RequestedRegion': 'eu-west-1' },
        DateLessThan: { 'aws:TokenIssueTime': '2030-01-01T00:00:00Z', 'aws:CurrentTime': EXP },
      },
    });
    assert.deepEqual(out.Statement[2], deny);
    // A single statement object stays one.
    assert.deepEqual(bound({ Version: '2012-10-17', Statement: { Effect: 'Allow', Action: '*', Resource: '*' } }).Statement, {
      Effect: 'Allow',
      Action: '*',
      Resource: '*',
      Condition: { DateLessThan: { 'aws:CurrentTime': EXP } },
    });
  });

  it('a DateLessThan aws:CurrentTime of the policy’s own: the earlier time wins (any spelling of the key, several values OR-ed)', () => {
    const st = (v: unknown, key = 'aws:CurrentTime') => ({
      Version: '2012-10-17',
      Statement: [{ Effect: 'Allow', Action: '*', Resource: '*', Condition: { DateLessThan: { [key]: v } } }],
    });
    const at = (p: Record<string, unknown>) => bound(p).Statement[0].Condition.DateLessThan;
    assert.deepEqual(at(st('2026-12-01T22:00:00Z')), { 'aws:CurrentTime': '2026-12-01T22:00:00Z' }, 'earlier: kept');
    assert.deepEqual(at(st('2027-01-01T00:00:00Z')), { 'aws:CurrentTime': EXP }, 'later: the token’s exp');
    assert.deepEqual(at(st(String(exp / 1000 - 60))), { 'aws:CurrentTime': '2026-12-01T22:09:05Z' }, 'epoch seconds');
    assert.deepEqual(
      at(st('2026-12-01T22:00:00.900Z', 'aws:currenttime')),
      { 'aws:CurrentTime': '2026-12-01T22:00:00Z' },
      'one key, to the second, never later',
    );
    assert.deepEqual(at(st(['2026-12-01T21:00:00Z', '2027-01-01T00:00:00Z'])), { 'aws:CurrentTime': EXP }, 'OR-ed values end at the latest');
    for (const bad of ['${aws:TokenIssueTime}', 'next tuesday', [], null])
      assert.throws(
        () => bound(st(bad)),
        (e: unknown) => e instanceof SessionPolicyError && /Statement\[0\]: DateLessThan aws:CurrentTime/.test(e.message),
        JSON.stringify(bad),
      );
    assert.throws(() => bound({ Statement: [{ Effect: 'Allow', Action: '*', Resource: '*', Condition: 'x' }] }), SessionPolicyError);
  });

  it('the policy as sent has the same length whatever the date (lint measures it with any)', () => {
    const p = {
      Version: '2012-10-17',
      Statement: [
        { Effect: 'Allow', Action: '*', Resource: '*', Condition: { DateLessThan: { 'aws:CurrentTime': '2026-12-01T22:00:00Z' } } },
        { Effect: 'Allow', Action: 's3:*', Resource: '*' },
      ],
    };
    const lengths = new Set([0, exp, Date.UTC(2026, 0, 1), Date.UTC(9999, 0, 1)].map((t) => JSON.stringify(timeBoundSessionPolicy(p, t)).length));
    assert.equal(lengths.size, 1);
  });
});

describe('providers: STS role chaining (the broker itself runs on role credentials)', () => {
  const ROLE = 'arn:aws:iam::123456789012:role/agent-reports';
  const clock = new ManualClock(Date.now());
  const double = new StsDouble({ now: () => clock.now() });
  const ENV = ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN', 'AWS_PROFILE'] as const;
  const saved: Record<string, string | undefined> = {};
  let sts: StsProvider;
  const spec: CredentialSpec = { provider: 'aws-sts', ttl: 7200, role_arn: ROLE };
  const cp = async (): Promise<void> => {};
  const CHAINING = 'The requested DurationSeconds exceeds the 1 hour session limit for roles assumed by role chaining.';

  before(async () => {
    await double.start();
    double.addRole(ROLE, { maxSessionDuration: 43200 });
    for (const k of ENV) saved[k] = process.env[k];
    process.env.AWS_ACCESS_KEY_ID = double.accessKeyId;
    process.env.AWS_SECRET_ACCESS_KEY = double.secretAccessKey;
    delete process.env.AWS_SESSION_TOKEN;
    delete process.env.AWS_PROFILE;
    sts = new StsProvider({ region: 'us-east-1', endpoint: double.url, iamEndpoint: double.url, timeoutMs: 2000 }, { clock, log, clockSkewSec: 30 });
  });
  after(async () => {
    await sts?.close();
    await double.stop();
    for (const k of ENV) {
      if (saved[k] === undefined) delete process.env[k];
      else process.env[k] = saved[k];
    }
  });

  it('AWS answers "role chaining": capped at 1 hour and asked again', async () => {
    double.failNext(400, 'ValidationError', CHAINING, 'AssumeRole');
    const req = request(clock, spec, { sessionLeft: 7200, tokenLeft: 7200 });
    const out = await sts.issue(req, sts.plan(req), cp);
    assert.equal(out.details.duration_sec, 3600);
    assert.equal(sts.plan(req).ttlSec, 3600, 'and remembered');
  });

  it('a failure of the capped retry is mapped like any other (a ProviderError naming the role), not thrown raw', async () => {
    const fresh = new StsProvider({ region: 'us-east-1', endpoint: double.url, iamEndpoint: double.url, timeoutMs: 2000 }, { clock, log, clockSkewSec: 30 });
    try {
      double.failNext(400, 'ValidationError', CHAINING, 'AssumeRole');
      double.failNext(
        403,
        'AccessDenied',
        `User: arn:aws:iam::123456789012:user/cordon-broker is not authorized to perform: sts:AssumeRole on resource: ${ROLE}`,
        'AssumeRole',
      );
      const req = request(clock, spec, { sessionLeft: 7200, tokenLeft: 7200 });
      await assert.rejects(
        fresh.issue(req, fresh.plan(req), cp),
        (e: unknown) =>
          e instanceof ProviderError &&
          e.kind === 'refused' &&
          e.code === 'bad_gateway' &&
          /AWS refused AssumeRole on arn:aws:iam::123456789012:role\/agent-reports \(AccessDenied\)/.test(e.description),
      );
    } finally {
      await fresh.close();
    }
  });

  it('a token with 60 s left: 900 s at STS, a session policy that ends every Allow at the token’s exp, no IAM call; the keys work until then and not after', async () => {
    for (const revoke_via_iam of [true, false]) {
      const fresh = new StsProvider({ region: 'us-east-1', endpoint: double.url, iamEndpoint: double.url, timeoutMs: 2000 }, { clock, log, clockSkewSec: 30 });
      try {
        double.reset();
        const own = {
          Version: '2012-10-17',
          Statement: [
            { Effect: 'Allow', Action: 's3:GetObject', Resource: 'arn:aws:s3:::reports/*' },
            { Effect: 'Deny', Action: 's3:GetObject', Resource: 'arn:aws:s3:::reports/secret' },
          ],
        };
        const req = request(clock, { provider: 'aws-sts', ttl: 1800, role_arn: ROLE, session_policy: own, revoke_via_iam }, { tokenLeft: 60 });
        const exp = req.tokenExpiresAt;
        const out = await fresh.issue(req, fresh.plan(req), cp);
        const [sent] = double.assumeRoleRequests();
        assert.equal(sent.DurationSeconds, 900);
        const policy = JSON.parse(sent.Policy!);
        const until = new Date(Math.floor(exp / 1000) * 1000).toISOString().replace('.000Z', 'Z');
        assert.deepEqual(policy.Statement[0].Condition, { DateLessThan: { 'aws:CurrentTime': until } });
        assert.deepEqual(policy.Statement[1], own.Statement[1], 'the Deny as it was');
        assert.deepEqual(
          double.requests.map((r) => r.action),
          ['AssumeRole'],
          'nothing but AssumeRole: no IAM write',
        );
        assert.equal(out.expiresAt, Math.floor(exp / 1000) * 1000);
        assert.equal(out.credentials.Expiration, new Date(out.expiresAt).toISOString());
        assert.equal(out.details.time_bound, until);
        const key = String(out.credentials.AccessKeyId);
        const get = { action: 's3:GetObject', resource: 'arn:aws:s3:::reports/x' };
        assert.ok(double.getCredential(key)!.expiresAtMs > exp + 800_000, 'STS itself would let them live 900 s');
        assert.equal(double.isCredentialUsable(key, { ...get, atMs: exp - 1000 }), true, 'usable while the token lives');
        assert.equal(double.isCredentialUsable(key, { ...get, atMs: exp + 1000 }), false, 'useless once it is dead');
      } finally {
        await fresh.close();
      }
    }
  });

  it('a session_policy that cannot carry the bound (a DateLessThan aws:CurrentTime that is no date): refused before AssumeRole', async () => {
    double.reset();
    const bad = {
      Version: '2012-10-17',
      Statement: [{ Effect: 'Allow', Action: '*', Resource: '*', Condition: { DateLessThan: { 'aws:CurrentTime': '${aws:TokenIssueTime}' } } }],
    };
    const req = request(clock, { provider: 'aws-sts', ttl: 1800, role_arn: ROLE, session_policy: bad }, { tokenLeft: 600 });
    await assert.rejects(
      sts.issue(req, sts.plan(req), cp),
      (e: unknown) =>
        e instanceof ProviderError && e.kind === 'misconfigured' && /session_policy of credential x cannot carry the time bound/.test(e.description),
    );
    assert.equal(double.requests.length, 0);
  });
});

describe('providers: Vault broker login (AppRole, JWT) through node-vault', () => {
  const v = new VaultDouble('root-token');
  const clock = new ManualClock(Date.now());
  const deps = { clock, log, clockSkewSec: 30 };
  const spec: CredentialSpec = { provider: 'vault', ttl: 300, vault_policies: ['tickets-read'] };
  let addr: string;
  const checkpoints: Handle[] = [];
  const cp = async (h: Handle): Promise<void> => {
    checkpoints.push(h);
  };

  before(async () => {
    addr = await v.start();
    v.now = () => clock.now();
    v.setPolicyPaths('broker', [
      { path: 'auth/token/create', capabilities: ['update'] },
      { path: 'auth/token/revoke-accessor', capabilities: ['update'] },
    ]);
    v.setPolicyPaths('tickets-read', ['secret/data/tickets/*']);
  });
  after(() => v.stop());
  beforeEach(() => v.reset());

  it('AppRole: logs in, issues under its login token, caps credentials at the login token’s life', async () => {
    v.addAppRole('role-1', 'secret-1', ['broker', 'tickets-read'], { ttlSec: 120 });
    const p = new VaultProvider({ addr, timeoutMs: 1000, auth: { method: 'approle', roleId: 'role-1', secretId: 'secret-1', mount: 'approle' } }, deps);
    const req = request(clock, spec);
    const out = await p.issue(req, p.plan(req), cp);
    const login = v.requestsTo('auth/approle/login');
    assert.equal(login.length, 1);
    assert.equal(login[0].body.role_id, 'role-1');
    const child = v.getToken(String(out.credentials.client_token))!;
    const parent = v.getToken(child.parent!)!;
    assert.equal(v.getToken(parent.parent!)!.path, 'auth/approle/login', 'the parent hangs under the broker’s login token');
    assert.ok(child.ttlSec <= 120, `a child never outlives the broker token it hangs under (ttl ${child.ttlSec})`);
    assert.ok(out.expiresAt <= clock.now() + 120_000);
    assert.deepEqual(checkpoints.at(-1), { kind: 'token', parent_accessor: parent.accessor });
    // Renewal: past two thirds of its life the broker renews (or logs in again) before issuing.
    clock.advance(90_000);
    await p.issue(request(clock, spec), p.plan(request(clock, spec)), cp);
    assert.ok(v.requestsTo('auth/token/renew-self').length + v.requestsTo('auth/approle/login').length >= 2);
  });

  it('AppRole with a bad secret: a clear, secret-free error naming the variables', async () => {
    const p = new VaultProvider({ addr, timeoutMs: 1000, auth: { method: 'approle', roleId: 'role-1', secretId: 'wrong', mount: 'approle' } }, deps);
    const req = request(clock, spec);
    await assert.rejects(
      p.issue(req, p.plan(req), cp),
      (e: unknown) =>
        e instanceof ProviderError && e.code === 'bad_gateway' && /VAULT_ROLE_ID\/VAULT_SECRET_ID/.test(e.description) && !e.description.includes('wrong'),
    );
  });

  it('JWT auth: reads the JWT file (re-read on each login) and logs in with the role', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'cordon-jwt-'));
    const file = join(dir, 'token');
    writeFileSync(file, 'header.payload.sig\n');
    v.addJwtRole('cordon', ['broker', 'tickets-read'], (jwt) => jwt === 'header.payload.sig');
    const p = new VaultProvider({ addr, timeoutMs: 1000, auth: { method: 'jwt', role: 'cordon', jwtFile: file, mount: 'jwt' } }, deps);
    const h = await p.health();
    assert.equal(h.ok, true, h.detail);
    const [login] = v.requestsTo('auth/jwt/login');
    assert.deepEqual(login.body, { role: 'cordon', jwt: 'header.payload.sig' });
  });

  it('plan: ttl = min(policy ttl, token life, explicit_max_ttl); refuses a token about to expire', () => {
    const p = new VaultProvider({ addr, timeoutMs: 1000, auth: { method: 'token', token: 'root-token' } }, deps);
    assert.equal(p.plan(request(clock, spec, { tokenLeft: 600 })).ttlSec, 300);
    assert.equal(p.plan(request(clock, spec, { tokenLeft: 100 })).ttlSec, 99);
    assert.equal(p.plan(request(clock, { ...spec, explicit_max_ttl: 60 }, { tokenLeft: 600 })).ttlSec, 60);
    assert.throws(() => p.plan(request(clock, spec, { tokenLeft: 1 })), /expires in less than 2 seconds/);
  });
});

describe('providers: Vault least privilege (children hold only vault_policies, token roles, no root broker token)', () => {
  const v = new VaultDouble('root-token');
  const clock = new ManualClock(Date.now());
  const deps = { clock, log, clockSkewSec: 30 };
  const spec: CredentialSpec = { provider: 'vault', ttl: 300, vault_policies: ['tickets-read'] };
  const cp = async (): Promise<void> => {};
  let addr: string;
  const cfg = (token: string, extra: Partial<VaultConfig> = {}): VaultConfig => ({ addr, timeoutMs: 1000, auth: { method: 'token', token }, ...extra });
  /** A broker token that holds only the broker policy (not the policies it hands out). */
  const brokerToken = (): string => v.mintToken({ policies: ['broker'], displayName: 'cordon-broker' }).token;
  const issue = async (p: VaultProvider, s: CredentialSpec = spec) => {
    const req = request(clock, s);
    return p.issue(req, p.plan(req), cp);
  };

  before(async () => {
    addr = await v.start();
    v.now = () => clock.now();
    v.setPolicyPaths('broker', [
      { path: 'auth/token/create', capabilities: ['update'] },
      { path: 'auth/token/create/cordon-agents', capabilities: ['update'] },
      { path: 'auth/token/revoke-accessor', capabilities: ['update'] },
    ]);
    v.setPolicyPaths('tickets-read', ['secret/data/tickets/*']);
    v.addTokenRole('cordon-agents', { allowedPolicies: ['tickets-read'], orphan: false, renewable: false });
  });
  after(() => v.stop());
  beforeEach(() => v.reset());

  it('the child holds exactly the policy’s vault_policies (no default) unless default_policy: true', async () => {
    const p = new VaultProvider(cfg(brokerToken(), { tokenRole: 'cordon-agents' }), deps);
    const out = await issue(p);
    assert.deepEqual(v.getToken(String(out.credentials.client_token))!.policies, ['tickets-read']);
    assert.deepEqual(out.credentials.policies, ['tickets-read']);
    assert.equal(v.requestsTo('auth/token/create/cordon-agents')[0].body.no_default_policy, true);
    const withDefault = await issue(p, { ...spec, default_policy: true });
    assert.deepEqual(v.getToken(String(withDefault.credentials.client_token))!.policies, ['default', 'tickets-read']);
  });

  it('a broker token without the child’s policies: refused by Vault’s subset rule, issued through VAULT_TOKEN_ROLE under the per-credential parent', async () => {
    const token = brokerToken();
    const plain = new VaultProvider(cfg(token), deps);
    await assert.rejects(
      issue(plain),
      (e: unknown) => e instanceof ProviderError && e.kind === 'refused' && /child policies must be subset of parent/.test(e.description),
    );
    const withRole = new VaultProvider(cfg(token, { tokenRole: 'cordon-agents' }), deps);
    const out = await issue(withRole);
    const child = v.getToken(String(out.credentials.client_token))!;
    assert.deepEqual(child.policies, ['tickets-read']);
    assert.equal(child.path, 'auth/token/create/cordon-agents');
    const parent = v.getToken(child.parent!)!;
    assert.equal(parent.parent, token, 'the parent hangs under the broker token, the child under the parent');
    assert.equal(parent.meta?.cordon, 'parent');
    const [create] = v.requestsTo('auth/token/create/cordon-agents');
    assert.equal(create.token, parent.id, 'the child is created BY the parent');
    assert.deepEqual(out.handle, { kind: 'token', parent_accessor: parent.accessor, accessor: child.accessor });
  });

  it('a policy outside the role’s allowed_policies: 502 bad_gateway naming the role’s limit', async () => {
    const p = new VaultProvider(cfg(brokerToken(), { tokenRole: 'cordon-agents' }), deps);
    await assert.rejects(
      issue(p, { ...spec, vault_policies: ['tickets-admin'] }),
      (e: unknown) =>
        e instanceof ProviderError &&
        e.code === 'bad_gateway' &&
        e.status === 502 &&
        /auth\/token\/create\/cordon-agents.*must be subset of the role's allowed policies/.test(e.description),
    );
  });

  it('a token role that makes orphans is refused (misconfigured) and the orphan it made is revoked', async () => {
    v.addTokenRole('detached', { allowedPolicies: ['tickets-read'], orphan: true });
    v.setPolicyPaths('broker-detached', [
      { path: 'auth/token/create', capabilities: ['update'] },
      { path: 'auth/token/create/detached', capabilities: ['update'] },
      { path: 'auth/token/revoke-accessor', capabilities: ['update'] },
    ]);
    const token = v.mintToken({ policies: ['broker-detached'] }).token;
    const p = new VaultProvider(cfg(token, { tokenRole: 'detached' }), deps);
    await assert.rejects(issue(p), (e: unknown) => e instanceof ProviderError && e.kind === 'misconfigured' && /orphan=false/.test(e.description));
    const made = v.listTokens().filter((t) => t.path === 'auth/token/create/detached');
    assert.equal(made.length, 1);
    assert.equal(made[0].orphan, true);
    assert.equal(made[0].state, 'revoked', 'the orphan never outlives the refusal');
  });

  it('start-up refuses a root VAULT_TOKEN (one line naming VAULT_TOKEN and CORDON_VAULT_ALLOW_ROOT) unless allowed', async () => {
    await assert.rejects(
      new VaultProvider(cfg('root-token'), deps).start(),
      (e: unknown) =>
        e instanceof ConfigError &&
        e.variable === 'VAULT_TOKEN' &&
        /CORDON_VAULT_ALLOW_ROOT=1/.test(e.message) &&
        !e.message.includes('\n') &&
        !e.message.includes('root-token'),
    );
    const allowed = new VaultProvider(cfg('root-token', { allowRoot: true }), deps);
    await allowed.start();
    const out = await issue(allowed);
    assert.deepEqual(v.getToken(String(out.credentials.client_token))!.policies, ['tickets-read']);
    await new VaultProvider(cfg(brokerToken()), deps).start();
  });

  it('Vault unreachable at start, then the login turns out root: start passes, issuing is refused (misconfigured), logged once', async () => {
    const lines: string[] = [];
    const captured = pino({ level: 'info' }, { write: (s: string) => void lines.push(s) });
    const p = new VaultProvider(cfg('root-token'), { ...deps, log: captured });
    v.failNext(503, ['Vault is unavailable'], 'auth/token/lookup-self');
    await p.start();
    for (let i = 0; i < 2; i++)
      await assert.rejects(
        issue(p),
        (e: unknown) =>
          e instanceof ProviderError && e.kind === 'misconfigured' && /VAULT_TOKEN/.test(e.description) && /CORDON_VAULT_ALLOW_ROOT/.test(e.description),
      );
    assert.equal(v.requestsTo(/^auth\/token\/create/).length, 0, 'nothing was created with the root token');
    assert.equal(lines.filter((l) => /CORDON_VAULT_ALLOW_ROOT/.test(l)).length, 1, lines.join(''));
    assert.equal((await p.health()).ok, false);
  });

  it('startBackendCredentials: a root VAULT_TOKEN stops start-up with the config error; CORDON_VAULT_ALLOW_ROOT=1 lets it start', async () => {
    const refused = await startTestBroker({ http: false, env: { VAULT_ADDR: addr, VAULT_TOKEN: 'root-token' } });
    try {
      await assert.rejects(
        startBackendCredentials(refused.b, { sweep: false }),
        (e: unknown) => e instanceof ConfigError && /CORDON_VAULT_ALLOW_ROOT/.test(e.message),
      );
      assert.equal(refused.b.providers.size, 0, 'no provider left attached');
    } finally {
      await refused.close();
    }
    const allowed = await startTestBroker({ http: false, env: { VAULT_ADDR: addr, VAULT_TOKEN: 'root-token', CORDON_VAULT_ALLOW_ROOT: '1' } });
    try {
      const sub = await startBackendCredentials(allowed.b, { sweep: false });
      assert.equal(allowed.b.providers.has('vault'), true);
      await sub.stop();
    } finally {
      await allowed.close();
    }
  });
});
