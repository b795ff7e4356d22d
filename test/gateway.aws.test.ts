import assert from 'node:assert/strict';
import { GetObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { revokeSession } from '../src/revocation/revoke.ts';
import { verifyAudit } from '../src/audit/verify.ts';
import { startGateway, type RunningGateway } from '../src/gateway/server.ts';
import { auditHead, auditSince, claimsOf, mustSession } from './delegation.kit.ts';
import { credFixture, ROLE_ARN, type CredFixture } from './credentials.kit.ts';
import { S3Double } from './doubles/s3.ts';
import { client } from './gateway.sigv4.kit.ts';

const policy = (s3Url: string): string => `
name: gw-aws-owner
description: Reads reports from S3 through the gateway, never holding STS keys.
token_ttl: 20m
session_ttl: 1h
scopes: [gw:reports, cred:reports-s3]
credentials:
  reports-s3: { provider: aws-sts, role_arn: "${ROLE_ARN}", ttl: 30m, deliver: gateway }
upstreams:
  reports:
    url: ${s3Url}
    credential: reports-s3
    inject: { aws_sigv4: { service: s3, region: us-east-1 } }
    rules:
      read: { methods: [GET, HEAD], paths: ["/reports/**"] }
      write: { methods: [PUT], paths: ["/reports/**"] }
`;

describe('gateway: AWS through SigV4 re-signing, with gateway keys in a real S3 client', function () {
  this.timeout(20_000);
  let f: CredFixture;
  let s3: S3Double;
  let gw: RunningGateway;
  before(async () => {
    s3 = new S3Double();
    await s3.start();
    f = await credFixture({ policies: { 'gw-aws-owner.yaml': policy(s3.url) } });
    // The upstream trusts exactly what the STS double issued: the session's real keys.
    s3.trust((akid) => {
      const c = f.sts.getCredential(akid);
      return c ? { accessKeyId: c.accessKeyId, secretAccessKey: c.secretAccessKey, sessionToken: c.sessionToken } : undefined;
    });
    s3.putObject('reports', 'q1.csv', 'a,b\n1,2\n', 'text/csv');
    gw = await startGateway(f.tb.b, { port: 0, host: '127.0.0.1' });
  });
  after(async () => {
    await gw?.close();
    await f?.stop();
    await s3?.stop();
  });

  it('an S3 client with gateway keys reads and writes; S3 sees a valid signature by the session’s STS keys and never the gateway key', async () => {
    const a = await f.agent('gw-aws-1', 'gw-aws-owner');
    const tok = await mustSession(f.tb, a, 'gw:reports cred:reports-s3');
    const keys = (await f.cred('reports-s3', tok)).body.credentials;
    const head = await auditHead(f.tb.b);
    const c = client(gw.url, { accessKeyId: keys.AccessKeyId, secretAccessKey: keys.SecretAccessKey });
    const got = await c.send(new GetObjectCommand({ Bucket: 'reports', Key: 'q1.csv' }));
    assert.equal(await got.Body!.transformToString(), 'a,b\n1,2\n');
    await c.send(new PutObjectCommand({ Bucket: 'reports', Key: 'q2.csv', Body: Buffer.from('x,y\n') }));
    assert.equal(s3.getObject('reports', 'q2.csv')?.body.toString(), 'x,y\n');
    const seen = s3.requests.filter((r) => r.path.startsWith('/reports/'));
    assert.equal(seen.length, 2);
    for (const r of seen) {
      assert.equal(r.signatureValid, true, `S3 verified ${r.method} ${r.path}`);
      assert.ok(f.sts.getCredential(r.accessKeyId!), 'signed with keys STS issued');
      assert.ok(!JSON.stringify(r.headers).includes(keys.AccessKeyId), 'the gateway key never reaches AWS');
    }
    await f.tb.b.issuance.idle();
    const rows = (await auditSince(f.tb.b, head)).filter((x) => x.event === 'gateway.call');
    assert.deepEqual(
      rows.map((x) => [x.decision, x.params.rule, x.params.status]),
      [
        ['allow', 'read', 200],
        ['allow', 'write', 200],
      ],
    );
    assert.ok(!JSON.stringify(await auditSince(f.tb.b, head)).includes(keys.SecretAccessKey));
  });

  it('a bearer token works too (the gateway signs), a path outside the rules is refused, and the keys die with the session', async () => {
    const a = await f.agent('gw-aws-2', 'gw-aws-owner');
    const tok = await mustSession(f.tb, a, 'gw:reports cred:reports-s3');
    const r = await fetch(`${gw.url}/u/reports/reports/q1.csv`, { headers: { authorization: `Bearer ${tok}` } });
    assert.equal(r.status, 200);
    assert.equal(await r.text(), 'a,b\n1,2\n');
    const keys = (await f.cred('reports-s3', tok)).body.credentials;
    const c = client(gw.url, { accessKeyId: keys.AccessKeyId, secretAccessKey: keys.SecretAccessKey });
    const before = s3.requests.length;
    await assert.rejects(c.send(new GetObjectCommand({ Bucket: 'secrets', Key: 'x' })), (e: any) => e.$metadata?.httpStatusCode === 403);
    await revokeSession(f.tb.b, claimsOf(tok).sid, { actor: 'test', via: 'test' });
    await assert.rejects(c.send(new GetObjectCommand({ Bucket: 'reports', Key: 'q1.csv' })), (e: any) => e.$metadata?.httpStatusCode === 401);
    assert.equal(s3.requests.length, before, 'nothing refused reached S3');
  });

  it('refuses a gateway key signed with a wrong secret (401), and leaves an audit chain that verifies', async () => {
    const a = await f.agent('gw-aws-3', 'gw-aws-owner');
    const tok = await mustSession(f.tb, a, 'gw:reports cred:reports-s3');
    const keys = (await f.cred('reports-s3', tok)).body.credentials;
    const bad = client(gw.url, { accessKeyId: keys.AccessKeyId, secretAccessKey: 'not-the-secret-0123456789abcdefghijklmn' });
    await assert.rejects(bad.send(new GetObjectCommand({ Bucket: 'reports', Key: 'q1.csv' })), (e: any) => e.$metadata?.httpStatusCode === 401);
    await f.tb.b.issuance.idle();
    assert.equal((await verifyAudit(f.tb.b.db)).ok, true);
  });
});
