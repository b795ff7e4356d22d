import assert from 'node:assert/strict';
import { AssumeRoleCommand, GetCallerIdentityCommand, STSClient, type AssumeRoleCommandInput } from '@aws-sdk/client-sts';
import { DeleteRolePolicyCommand, GetRolePolicyCommand, IAMClient, ListRolePoliciesCommand, PutRolePolicyCommand } from '@aws-sdk/client-iam';
import http from 'node:http';
import { createHash, createHmac, type Hash, type Hmac } from 'node:crypto';
import { SignatureV4 } from '@smithy/signature-v4';
import { StsDouble } from './doubles/sts.ts';

type Bytes = string | ArrayBuffer | ArrayBufferView;
const buf = (d: Bytes): Buffer =>
  typeof d === 'string' ? Buffer.from(d) : ArrayBuffer.isView(d) ? Buffer.from(d.buffer, d.byteOffset, d.byteLength) : Buffer.from(d);
/** node:crypto as the SDK's ChecksumConstructor, so the reference signer needs no extra package. */
class NodeSha256 {
  #h: Hash | Hmac;
  constructor(secret?: Bytes) {
    this.#h = secret === undefined ? createHash('sha256') : createHmac('sha256', buf(secret));
  }
  update(d: Bytes): void {
    this.#h.update(buf(d));
  }
  async digest(): Promise<Uint8Array> {
    return new Uint8Array(this.#h.digest());
  }
  reset(): void {}
}

/** Send a raw request; answer status and body. */
function raw(url: string, method: string, path: string, headers: Record<string, string>, body = ''): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(url + path, { method, headers }, (res) => {
      let text = '';
      res.on('data', (c: Buffer) => (text += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

const ROLE = 'arn:aws:iam::123456789012:role/agent-reports';
const SESSION_POLICY = JSON.stringify({
  Version: '2012-10-17',
  Statement: [{ Effect: 'Allow', Action: ['s3:GetObject'], Resource: ['arn:aws:s3:::reports/*'] }],
});

/** Run an SDK call that must fail; return the error. */
async function rejects(p: Promise<unknown>): Promise<Error & { $metadata?: { httpStatusCode?: number } }> {
  try {
    await p;
  } catch (err) {
    return err as Error;
  }
  assert.fail('expected the AWS call to fail');
}

describe('test double: STS + IAM (through the AWS SDK v3)', () => {
  const s = new StsDouble();
  let endpoint: string;
  let t = Date.UTC(2026, 0, 1, 12);
  const credentials = { accessKeyId: 'AKIDTEST', secretAccessKey: 'test-secret' };
  const sts = (creds: { accessKeyId: string; secretAccessKey: string; sessionToken?: string } = credentials): STSClient =>
    new STSClient({ region: 'us-east-1', endpoint, credentials: creds, maxAttempts: 1 });
  const iam = (): IAMClient => new IAMClient({ region: 'us-east-1', endpoint, credentials, maxAttempts: 1 });
  const assume = (input: Partial<AssumeRoleCommandInput> = {}) =>
    sts().send(new AssumeRoleCommand({ RoleArn: ROLE, RoleSessionName: 'agent-summarizer.s-1', ...input }));

  before(async () => {
    endpoint = await s.start();
    s.now = () => t;
    s.addRole(ROLE, { maxSessionDuration: 7200 });
    s.addRole('arn:aws:iam::123456789012:role/partner', { externalId: 'ext-123' });
  });
  after(() => s.stop());
  beforeEach(() => {
    s.reset();
    s.clearState();
    t = Date.UTC(2026, 0, 1, 12);
  });

  it('assumes a role with tags, session policy and source identity; the SDK parses the XML', async () => {
    const out = await assume({
      DurationSeconds: 900,
      Policy: SESSION_POLICY,
      SourceIdentity: 'agent-summarizer',
      Tags: [
        { Key: 'agent', Value: 'summarizer' },
        { Key: 'session', Value: 's-1' },
        { Key: 'task', Value: 'weekly report: Q1/2026' },
        { Key: 'depth', Value: '0' },
      ],
      TransitiveTagKeys: ['session'],
      PolicyArns: [{ arn: 'arn:aws:iam::aws:policy/ReadOnlyAccess' }],
    });
    const c = out.Credentials!;
    assert.match(c.AccessKeyId!, /^ASIA[A-Z2-7]{16}$/);
    assert.ok(c.SecretAccessKey && c.SessionToken);
    assert.ok(c.Expiration instanceof Date);
    assert.equal(c.Expiration.getTime(), t + 900_000);
    assert.equal(out.SourceIdentity, 'agent-summarizer');
    assert.equal(out.AssumedRoleUser?.Arn, 'arn:aws:sts::123456789012:assumed-role/agent-reports/agent-summarizer.s-1');
    assert.match(out.AssumedRoleUser.AssumedRoleId!, /^AROA[A-Z2-7]{17}:agent-summarizer\.s-1$/);
    assert.ok(out.PackedPolicySize! > 0 && out.PackedPolicySize! <= 100);

    // What the broker sent, as the double recorded it.
    const [sent] = s.assumeRoleRequests();
    assert.equal(sent?.DurationSeconds, 900);
    assert.equal(sent?.SourceIdentity, 'agent-summarizer');
    assert.deepEqual(
      sent?.Tags.map((x) => x.Key),
      ['agent', 'session', 'task', 'depth'],
    );
    assert.deepEqual(sent?.TransitiveTagKeys, ['session']);
    assert.deepEqual(sent?.PolicyArns, ['arn:aws:iam::aws:policy/ReadOnlyAccess']);
    assert.deepEqual(JSON.parse(sent.Policy!), JSON.parse(SESSION_POLICY));
    assert.equal(s.requests[0]?.params.Action, 'AssumeRole');
    assert.equal(s.requests[0]?.params['Tags.member.3.Value'], 'weekly report: Q1/2026');
    assert.match(String(s.requests[0]?.headers.authorization), /^AWS4-HMAC-SHA256 Credential=AKIDTEST\/\d{8}\/us-east-1\/sts\/aws4_request/);

    // And what it remembers about the credential.
    const issued = s.getCredential(c.AccessKeyId!)!;
    assert.equal(issued.sessionName, 'agent-summarizer.s-1');
    assert.deepEqual(issued.tags, { agent: 'summarizer', session: 's-1', task: 'weekly report: Q1/2026', depth: '0' });
    assert.equal(issued.issuedAtMs, t);
    assert.equal(s.isCredentialExpired(c.AccessKeyId!), false);
    t += 900_000;
    assert.equal(s.isCredentialExpired(c.AccessKeyId!), true);
  });

  it('defaults DurationSeconds to 3600 and omits SourceIdentity and PackedPolicySize when not asked', async () => {
    const out = await assume();
    assert.equal(out.Credentials!.Expiration!.getTime(), t + 3600_000);
    assert.equal(out.SourceIdentity, undefined);
    assert.equal(out.PackedPolicySize, undefined);
  });

  it('rejects DurationSeconds outside 900–43200 and above the role’s max with ValidationError', async () => {
    const low = await rejects(assume({ DurationSeconds: 899 }));
    assert.equal(low.name, 'ValidationError');
    assert.equal(low.$metadata?.httpStatusCode, 400);
    assert.equal(
      low.message,
      "1 validation error detected: Value '899' at 'durationSeconds' failed to satisfy constraint: Member must have value greater than or equal to 900",
    );
    const high = await rejects(assume({ DurationSeconds: 43201 }));
    assert.equal(high.name, 'ValidationError');
    const overRole = await rejects(assume({ DurationSeconds: 7201 }));
    assert.equal(overRole.name, 'ValidationError');
    assert.match(overRole.message, /exceeds the MaxSessionDuration/);
    await assume({ DurationSeconds: 7200 });
  });

  it('enforces the session name, source identity, tag and ARN-count limits', async () => {
    for (const RoleSessionName of ['a', 'x'.repeat(65), 'has space', 'semi;colon']) {
      const e = await rejects(assume({ RoleSessionName }));
      assert.equal(e.name, 'ValidationError', RoleSessionName);
      assert.match(e.message, /roleSessionName/);
    }
    for (const SourceIdentity of ['a', 'x'.repeat(65), 'no spaces', 'aws:agent']) {
      const e = await rejects(assume({ SourceIdentity }));
      assert.equal(e.name, 'ValidationError', SourceIdentity);
    }
    const tooMany = Array.from({ length: 51 }, (_, i) => ({ Key: `k${i}`, Value: 'v' }));
    assert.equal((await rejects(assume({ Tags: tooMany }))).name, 'ValidationError');
    assert.equal((await rejects(assume({ Tags: [{ Key: 'k'.repeat(129), Value: 'v' }] }))).name, 'ValidationError');
    assert.equal((await rejects(assume({ Tags: [{ Key: 'k', Value: 'v'.repeat(257) }] }))).name, 'ValidationError');
    assert.equal((await rejects(assume({ Tags: [{ Key: 'k', Value: 'semi;colon' }] }))).name, 'ValidationError');
    assert.equal(
      (
        await rejects(
          assume({
            Tags: [
              { Key: 'A', Value: '1' },
              { Key: 'a', Value: '2' },
            ],
          }),
        )
      ).name,
      'ValidationError',
    );
    assert.equal((await rejects(assume({ Tags: [{ Key: 'a', Value: '1' }], TransitiveTagKeys: ['b'] }))).name, 'ValidationError');
    const arns = Array.from({ length: 11 }, (_, i) => ({ arn: `arn:aws:iam::123456789012:policy/p${i}` }));
    assert.equal((await rejects(assume({ PolicyArns: arns }))).name, 'ValidationError');
    // Unicode letters and the allowed punctuation are fine.
    await assume({ Tags: [{ Key: 'tâche', Value: 'résumé 2026-01-01T00:00:00Z +=.@/' }] });
  });

  it('checks the session policy: length, JSON grammar, packed size', async () => {
    const long = JSON.stringify({
      Version: '2012-10-17',
      Statement: [{ Effect: 'Allow', Action: 's3:GetObject', Resource: `arn:aws:s3:::${'x'.repeat(2100)}` }],
    });
    const tooLong = await rejects(assume({ Policy: long }));
    assert.equal(tooLong.name, 'ValidationError');
    assert.match(tooLong.message, /at 'policy' failed to satisfy constraint: Member must have length less than or equal to 2048/);
    const notJson = await rejects(assume({ Policy: '{"Version":"2012-10-17",' }));
    assert.equal(notJson.name, 'MalformedPolicyDocumentException');
    assert.equal(notJson.$metadata?.httpStatusCode, 400);
    const noStatement = await rejects(assume({ Policy: '{"Version":"2012-10-17"}' }));
    assert.equal(noStatement.name, 'MalformedPolicyDocumentException');
    const noVersion = await rejects(assume({ Policy: '{"Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}' }));
    assert.equal(noVersion.name, 'MalformedPolicyDocumentException');

    // 50 maximal tags do not fit in the packed budget.
    const bigTags = Array.from({ length: 50 }, (_, i) => ({ Key: `k${i}`.padEnd(128, 'k'), Value: 'v'.repeat(256) }));
    const packed = await rejects(assume({ Tags: bigTags }));
    assert.equal(packed.name, 'PackedPolicyTooLargeException');
    assert.match(packed.message, /^Packed policy consumes \d+% of allotted space/);
  });

  it('refuses unknown roles, wrong ExternalId (AccessDenied, 403); accepts the right one', async () => {
    const unknown = await rejects(assume({ RoleArn: 'arn:aws:iam::123456789012:role/nope' }));
    assert.equal(unknown.name, 'AccessDenied');
    assert.equal(unknown.$metadata?.httpStatusCode, 403);
    assert.match(unknown.message, /is not authorized to perform: sts:AssumeRole on resource: arn:aws:iam::123456789012:role\/nope/);
    const partner = 'arn:aws:iam::123456789012:role/partner';
    assert.equal((await rejects(assume({ RoleArn: partner }))).name, 'AccessDenied');
    assert.equal((await rejects(assume({ RoleArn: partner, ExternalId: 'ext-999' }))).name, 'AccessDenied');
    await assume({ RoleArn: partner, ExternalId: 'ext-123' });
  });

  it('verifies SigV4: a wrong secret is SignatureDoesNotMatch, an unknown key InvalidClientTokenId', async () => {
    const bad = await rejects(sts({ accessKeyId: 'AKIDTEST', secretAccessKey: 'wrong' }).send(new AssumeRoleCommand({ RoleArn: ROLE, RoleSessionName: 'x1' })));
    assert.equal(bad.name, 'SignatureDoesNotMatch');
    assert.equal(bad.$metadata?.httpStatusCode, 403);
    const unknown = await rejects(
      sts({ accessKeyId: 'AKIDOTHER', secretAccessKey: 'x' }).send(new AssumeRoleCommand({ RoleArn: ROLE, RoleSessionName: 'x1' })),
    );
    assert.equal(unknown.name, 'InvalidClientTokenId');
    const wrongRegion = await rejects(new STSClient({ region: 'eu-west-1', endpoint, credentials, maxAttempts: 1 }).send(new GetCallerIdentityCommand({})));
    assert.equal(wrongRegion.name, 'SignatureDoesNotMatch');
    assert.equal(s.issued.size, 0);
    const me = await sts().send(new GetCallerIdentityCommand({}));
    assert.equal(me.Arn, 'arn:aws:iam::123456789012:user/cordon-broker');
    assert.equal(me.Account, '123456789012');
  });

  it('agrees with the reference SigV4 signer on a query-string GET, and notices tampering', async () => {
    const { host, port } = new URL(endpoint);
    const signer = new SignatureV4({ service: 'sts', region: 'us-east-1', credentials, sha256: NodeSha256 });
    const query = { Action: 'GetCallerIdentity', Version: '2011-06-15', Note: "a b*(c)/é'!" };
    const signed = await signer.sign({
      method: 'GET',
      protocol: 'http:',
      hostname: '127.0.0.1',
      port: Number(port),
      path: '/',
      query,
      headers: { host, 'x-custom': '  spaced   value ' },
    });
    const qs = Object.entries(query)
      .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`)
      .join('&');
    const headers = signed.headers as Record<string, string>;
    const ok = await raw(endpoint, 'GET', `/?${qs}`, headers);
    assert.equal(ok.status, 200, ok.body);
    assert.match(ok.body, /<GetCallerIdentityResult>/);
    const tamperedQuery = await raw(endpoint, 'GET', `/?${qs}x`, headers);
    assert.equal(tamperedQuery.status, 403);
    assert.match(tamperedQuery.body, /<Code>SignatureDoesNotMatch<\/Code>/);
    const tamperedHeader = await raw(endpoint, 'GET', `/?${qs}`, { ...headers, 'x-custom': 'other' });
    assert.equal(tamperedHeader.status, 403);
    const stale = await new SignatureV4({ service: 'sts', region: 'us-east-1', credentials, sha256: NodeSha256 }).sign(
      { method: 'GET', protocol: 'http:', hostname: '127.0.0.1', port: Number(port), path: '/', query, headers: { host } },
      { signingDate: new Date(Date.now() - 20 * 60_000) },
    );
    const old = await raw(endpoint, 'GET', `/?${qs}`, stale.headers);
    assert.equal(old.status, 403);
    assert.match(old.body, /Signature expired/);
  });

  it('lets issued credentials sign (role chaining, capped at 1 h); expired ones get ExpiredToken', async () => {
    const first = (await assume({ Tags: [{ Key: 'session', Value: 's-1' }], TransitiveTagKeys: ['session'] })).Credentials!;
    const chained = sts({ accessKeyId: first.AccessKeyId!, secretAccessKey: first.SecretAccessKey!, sessionToken: first.SessionToken! });
    const me = await chained.send(new GetCallerIdentityCommand({}));
    assert.equal(me.Arn, 'arn:aws:sts::123456789012:assumed-role/agent-reports/agent-summarizer.s-1');
    const tooLong = await rejects(chained.send(new AssumeRoleCommand({ RoleArn: ROLE, RoleSessionName: 'sub', DurationSeconds: 3601 })));
    assert.equal(tooLong.name, 'ValidationError');
    const sub = (await chained.send(new AssumeRoleCommand({ RoleArn: ROLE, RoleSessionName: 'sub' }))).Credentials!;
    assert.deepEqual(s.getCredential(sub.AccessKeyId!)?.tags, { session: 's-1' }, 'transitive tags carry over');
    t += 3600_000;
    const expired = await rejects(chained.send(new GetCallerIdentityCommand({})));
    assert.equal(expired.name, 'ExpiredToken');
  });

  it('failNext and delayMs', async () => {
    s.failNext(400, 'RegionDisabledException', 'STS is not activated in this region for account:123456789012.');
    const e = await rejects(assume());
    assert.equal(e.name, 'RegionDisabledException');
    s.failNext(503, 'ServiceUnavailable', 'Service unavailable', 'AssumeRole');
    await sts().send(new GetCallerIdentityCommand({})); // not the targeted action
    assert.equal((await rejects(assume())).name, 'ServiceUnavailable');
    s.delayMs = 120;
    const t0 = Date.now();
    await assume();
    assert.ok(Date.now() - t0 >= 100);
  });

  it('IAM: put/get/list/delete inline role policies in IAM’s XML shapes', async () => {
    const doc = JSON.stringify({ Version: '2012-10-17', Statement: [{ Effect: 'Deny', Action: '*', Resource: '*' }] });
    await iam().send(new PutRolePolicyCommand({ RoleName: 'agent-reports', PolicyName: 'cordon-revoke', PolicyDocument: doc }));
    assert.deepEqual(s.rolePolicies('agent-reports'), { 'cordon-revoke': doc });
    const got = await iam().send(new GetRolePolicyCommand({ RoleName: 'agent-reports', PolicyName: 'cordon-revoke' }));
    assert.equal(got.RoleName, 'agent-reports');
    assert.equal(decodeURIComponent(got.PolicyDocument!), doc, 'IAM returns the document URL-encoded');
    const list = await iam().send(new ListRolePoliciesCommand({ RoleName: 'agent-reports' }));
    assert.deepEqual(list.PolicyNames, ['cordon-revoke']);
    assert.equal(list.IsTruncated, false);
    await iam().send(new DeleteRolePolicyCommand({ RoleName: 'agent-reports', PolicyName: 'cordon-revoke' }));
    const gone = await rejects(iam().send(new GetRolePolicyCommand({ RoleName: 'agent-reports', PolicyName: 'cordon-revoke' })));
    assert.equal(gone.name, 'NoSuchEntityException');
    assert.equal(gone.$metadata?.httpStatusCode, 404);
    const noRole = await rejects(iam().send(new PutRolePolicyCommand({ RoleName: 'nope', PolicyName: 'p', PolicyDocument: doc })));
    assert.equal(noRole.name, 'NoSuchEntityException');
    const malformed = await rejects(
      iam().send(new PutRolePolicyCommand({ RoleName: 'agent-reports', PolicyName: 'p', PolicyDocument: '{"Version":"2012-10-17"' })),
    );
    assert.equal(malformed.name, 'MalformedPolicyDocumentException');
    assert.equal(s.requests.at(-1)?.headers.authorization?.includes('/us-east-1/iam/aws4_request'), true);
  });

  it('revoking older sessions (DateLessThan aws:TokenIssueTime) denies sessions issued before the cut-off only', async () => {
    const before = (await assume({ RoleSessionName: 'before', SourceIdentity: 'agent-a' })).Credentials!.AccessKeyId!;
    t += 60_000;
    const cutoff = new Date(t).toISOString();
    t += 1_000;
    const after = (await assume({ RoleSessionName: 'after', SourceIdentity: 'agent-a' })).Credentials!.AccessKeyId!;
    assert.equal(s.isCredentialDenied(before), false);

    await iam().send(
      new PutRolePolicyCommand({
        RoleName: 'agent-reports',
        PolicyName: 'AWSRevokeOlderSessions',
        PolicyDocument: JSON.stringify({
          Version: '2012-10-17',
          Statement: [{ Effect: 'Deny', Action: ['*'], Resource: ['*'], Condition: { DateLessThan: { 'aws:TokenIssueTime': cutoff } } }],
        }),
      }),
    );
    assert.equal(s.isCredentialDenied(before), true);
    assert.equal(s.isCredentialDenied(before, { action: 's3:GetObject', resource: 'arn:aws:s3:::reports/x' }), true);
    assert.equal(s.isCredentialDenied(after), false);
    assert.equal(s.isCredentialUsable(after), true);
  });

  it('denies by source identity or session tag (StringEquals / StringLike), leaving other agents alone', async () => {
    const a = (await assume({ RoleSessionName: 'a-s1', SourceIdentity: 'agent-a', Tags: [{ Key: 'session', Value: 's-1' }] })).Credentials!.AccessKeyId!;
    const b = (await assume({ RoleSessionName: 'b-s2', SourceIdentity: 'agent-b', Tags: [{ Key: 'session', Value: 's-2' }] })).Credentials!.AccessKeyId!;
    const deny = (Condition: object): PutRolePolicyCommand =>
      new PutRolePolicyCommand({
        RoleName: 'agent-reports',
        PolicyName: 'cordon-deny',
        PolicyDocument: JSON.stringify({ Version: '2012-10-17', Statement: [{ Effect: 'Deny', Action: '*', Resource: '*', Condition }] }),
      });
    await iam().send(deny({ StringEquals: { 'aws:SourceIdentity': ['agent-a'] } }));
    assert.equal(s.isCredentialDenied(a), true);
    assert.equal(s.isCredentialDenied(b), false);
    await iam().send(deny({ StringLike: { 'aws:PrincipalTag/session': 's-2*' } }));
    assert.equal(s.isCredentialDenied(a), false);
    assert.equal(s.isCredentialDenied(b), true);
    // A deny on one action only does not deny "everything".
    s.putRolePolicy('agent-reports', 'cordon-deny', {
      Version: '2012-10-17',
      Statement: [{ Effect: 'Deny', Action: 's3:PutObject', Resource: '*', Condition: { StringEquals: { 'aws:SourceIdentity': 'agent-a' } } }],
    });
    assert.equal(s.isCredentialDenied(a), false);
    assert.equal(s.isCredentialDenied(a, { action: 's3:PutObject' }), true);
    assert.equal(s.isCredentialDenied(a, { action: 's3:GetObject' }), false);
  });

  it('a session policy grants only what its Allow statements allow, conditions included: a DateLessThan aws:CurrentTime bound ends the keys on the double’s clock', async () => {
    const until = t + 120_000;
    const Policy = JSON.stringify({
      Version: '2012-10-17',
      Statement: [
        {
          Effect: 'Allow',
          Action: 's3:GetObject',
          Resource: 'arn:aws:s3:::reports/*',
          Condition: { DateLessThan: { 'aws:CurrentTime': new Date(until).toISOString() } },
        },
        { Effect: 'Deny', Action: 's3:GetObject', Resource: 'arn:aws:s3:::reports/secret' },
      ],
    });
    const c = (await assume({ RoleSessionName: 'bounded', DurationSeconds: 900, Policy })).Credentials!.AccessKeyId!;
    const get = { action: 's3:GetObject', resource: 'arn:aws:s3:::reports/x' };
    assert.equal(s.isCredentialUsable(c, { ...get, atMs: until - 1000 }), true);
    assert.equal(s.isCredentialUsable(c, { atMs: until - 1000 }), true, 'with nothing asked: can it do anything at all');
    assert.equal(
      s.isCredentialDenied(c, { action: 's3:PutObject', resource: 'arn:aws:s3:::reports/x', atMs: until - 1000 }),
      true,
      'not allowed by the session policy',
    );
    assert.equal(s.isCredentialDenied(c, { action: 's3:GetObject', resource: 'arn:aws:s3:::reports/secret', atMs: until - 1000 }), true, 'denied by it');
    assert.equal(s.isCredentialExpired(c, until + 1000), false, 'STS would let the keys live on');
    assert.equal(s.isCredentialDenied(c, { ...get, atMs: until }), true, 'DateLessThan: not at the bound');
    assert.equal(s.isCredentialDenied(c, { atMs: until + 1000 }), true);
    t = until + 1000;
    assert.equal(s.isCredentialUsable(c, get), false, 'the double’s clock by default');
  });
});
