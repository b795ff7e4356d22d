import assert from 'node:assert/strict';
import { GetObjectCommand } from '@aws-sdk/client-s3';
import { systemClock } from '../src/clock.ts';
import { gatewayKeySecret, parseGatewayKeyId } from '../src/keys/gateway-keys.ts';
import { revokeSession } from '../src/revocation/revoke.ts';
import { stateOf } from '../src/store/liveness.ts';
import { loadTokenView } from '../src/tokens/verify.ts';
import { verifyAudit } from '../src/audit/verify.ts';
import { auditHead, auditSince, claimsOf, mustSession } from './delegation.kit.ts';
import { credFixture, ROLE_ARN, type CredFixture } from './credentials.kit.ts';
import { S3Double } from './doubles/s3.ts';
import { STS, client, rejection, startGateway, type TestGateway } from './gateway.sigv4.kit.ts';

const GW_POLICY = `
name: gw-keys-owner
description: Root agent of the gateway-keys tests.
token_ttl: 20m
session_ttl: 1h
scopes: [work:read, cred:s3-gw]
credentials:
  s3-gw: { provider: aws-sts, role_arn: "${ROLE_ARN}", ttl: 30m, deliver: gateway }
`;

describe('POST /credentials/NAME for an aws-sts deliver: gateway credential answers gateway keys', () => {
  let f: CredFixture;
  let s3: S3Double;
  let gw: TestGateway;
  before(async () => {
    f = await credFixture({ policies: { 'gw-keys-owner.yaml': GW_POLICY } });
    s3 = new S3Double();
    await s3.start();
    s3.addCredentials(STS);
    s3.putObject('reports', 'q1.csv', 'a,b\n1,2\n', 'text/csv');
    // The mapping the gateway makes: key id → jti → that token's record, judged now (broker clock).
    const secretFor = async (akid: string): Promise<string | undefined> => {
      const jti = parseGatewayKeyId(akid);
      if (jti === undefined) return undefined;
      const live = stateOf(await loadTokenView(f.tb.b, jti), f.tb.clock.now()).active;
      return live ? gatewayKeySecret(f.tb.b.secretHashKey, akid) : undefined;
    };
    // SigV4 freshness against the wall clock the SDK signs with; token life against the broker's.
    gw = await startGateway(s3.url, secretFor, systemClock);
  });
  after(async () => {
    await gw?.close();
    await s3?.stop();
    await f?.stop();
  });

  it('answers keys bound to the token (no STS call, no credential row), audited by key id only; they work at the gateway until the session is revoked', async () => {
    const a = await f.agent('gwk-owner', 'gw-keys-owner');
    const tok = await mustSession(f.tb, a, 'work:read cred:s3-gw');
    const c = claimsOf(tok);
    const head = await auditHead(f.tb.b);
    f.sts.reset();
    const r = await f.cred('s3-gw', tok);
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.headers.get('cache-control'), 'no-store');
    const expiresAt = new Date(c.exp * 1000).toISOString();
    const { AccessKeyId, SecretAccessKey } = r.body.credentials;
    assert.deepEqual(r.body, {
      name: 's3-gw',
      provider: 'aws-sts',
      expires_at: expiresAt,
      credentials: { AccessKeyId, SecretAccessKey, Expiration: expiresAt },
      gateway: true,
    });
    assert.equal(parseGatewayKeyId(AccessKeyId), c.jti, 'the key id names the token');
    assert.equal(SecretAccessKey, gatewayKeySecret(f.tb.b.secretHashKey, AccessKeyId));
    assert.equal(f.sts.requests.length, 0, 'no backend call');
    assert.deepEqual(await f.rows(c.sid), [], 'no credentials row');

    const rows = await auditSince(f.tb.b, head);
    assert.equal(rows.length, 1);
    assert.equal(rows[0].event, 'credential.issue');
    assert.equal(rows[0].decision, 'allow');
    assert.equal(rows[0].jti, c.jti);
    assert.deepEqual(rows[0].params, { name: 's3-gw', provider: 'aws-sts', gateway_keys: true, access_key_id: AccessKeyId });
    assert.ok(!JSON.stringify(rows).includes(SecretAccessKey), 'the secret is never in the log');
    assert.equal((await verifyAudit(f.tb.b.db)).ok, true);

    const s3c = client(gw.url, { accessKeyId: AccessKeyId, secretAccessKey: SecretAccessKey });
    const got = await s3c.send(new GetObjectCommand({ Bucket: 'reports', Key: 'q1.csv' }));
    assert.equal(await got.Body!.transformToString(), 'a,b\n1,2\n');
    assert.equal(s3.requests.at(-1)?.accessKeyId, STS.accessKeyId);
    assert.equal(s3.requests.at(-1)?.signatureValid, true);

    await revokeSession(f.tb.b, c.sid, { actor: 'admin', via: 'test' });
    const n = s3.requests.length;
    assert.equal((await rejection(s3c.send(new GetObjectCommand({ Bucket: 'reports', Key: 'q1.csv' })))).status, 401);
    assert.equal(gw.refusals.at(-1), 'sigv4_unknown_key', 'the key died with its session');
    assert.equal(s3.requests.length, n, 'nothing reached S3');
    s3c.destroy();
  });

  it('keys of an expired token are refused at the gateway; a token without cred:NAME gets the usual 403', async () => {
    const a = await f.agent('gwk-owner-2', 'gw-keys-owner');
    const tok = await mustSession(f.tb, a, 'work:read cred:s3-gw');
    const r = await f.cred('s3-gw', tok);
    assert.equal(r.status, 200);
    const s3c = client(gw.url, { accessKeyId: r.body.credentials.AccessKeyId, secretAccessKey: r.body.credentials.SecretAccessKey });
    f.tb.clock.advance(21 * 60_000);
    assert.equal((await rejection(s3c.send(new GetObjectCommand({ Bucket: 'reports', Key: 'q1.csv' })))).status, 401);
    assert.equal(gw.refusals.at(-1), 'sigv4_unknown_key');
    s3c.destroy();

    const narrow = await mustSession(f.tb, a, 'work:read');
    const denied = await f.cred('s3-gw', narrow);
    assert.equal(denied.status, 403);
    assert.equal(denied.body.error, 'insufficient_scope');
  });
});
