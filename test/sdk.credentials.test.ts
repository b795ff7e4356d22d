import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { GetCallerIdentityCommand, STSClient } from '@aws-sdk/client-sts';
import { fromProcess } from '@aws-sdk/credential-provider-process';
import { CordonAgent, CordonSdkError } from '../src/index.ts';
import { decodeJwt } from 'jose';
import { credFixture, RS_AUDIENCE, type CredFixture } from './credentials.kit.ts';

/**
 * The SDK's credential calls against the real `/credentials/:name` endpoint, with the broker's
 * providers talking to the Vault and STS doubles, and an AWS SDK v3 client using the provider
 * function `agent.awsCredentials()` returns.
 */
describe('sdk: credentials(), awsCredentials() and DPoP against the real credentials endpoint', () => {
  let f: CredFixture;
  before(async () => {
    f = await credFixture();
  });
  after(async () => {
    await f?.stop();
  });

  const agentOf = async (name: string, extra: Partial<ConstructorParameters<typeof CordonAgent>[0]> = {}) => {
    const a = await f.agent(name, 'creds-owner');
    return new CordonAgent({ issuer: f.tb.url, clientId: a.id, clientSecret: a.secret, clock: f.tb.clock, ...extra });
  };

  it('an AWS SDK v3 client signs with session-bound STS credentials fetched (once) through the broker', async () => {
    const agent = await agentOf('sdk-aws');
    await agent.startSession({ scope: 'work:read cred:s3', task: 'sdk-aws' });
    const before = f.sts.requests.length;
    const client = new STSClient({ region: 'us-east-1', endpoint: f.sts.url, credentials: agent.awsCredentials('s3'), maxAttempts: 1 });
    const me = await client.send(new GetCallerIdentityCommand({}));
    assert.match(me.Arn ?? '', /^arn:aws:sts::123456789012:assumed-role\/agent-readonly\/\S+$/);
    await client.send(new GetCallerIdentityCommand({}));
    const assumes = f.sts.requests.slice(before).filter((r) => new URLSearchParams(r.rawBody).get('Action') === 'AssumeRole');
    assert.equal(assumes.length, 1, 'the credential is cached between calls');
    const c = await agent.credentials('s3');
    assert.equal(c.provider, 'aws-sts');
    assert.ok(c.expiresAt.getTime() > f.tb.clock.now());
    client.destroy();
    await agent.close();
  });

  it('a Vault child token, refused names and scopes as typed oauth errors', async () => {
    const agent = await agentOf('sdk-vault');
    await agent.startSession({ scope: 'work:read cred:vault-token' });
    const v = await agent.credentials('vault-token');
    assert.equal(v.provider, 'vault');
    assert.ok(Object.keys(v.credentials).length > 0);
    const e = await agent.credentials('s3').catch((x: unknown) => x as CordonSdkError);
    assert.ok(e instanceof CordonSdkError && e.code === 'oauth', String(e));
    assert.equal(e.error, 'insufficient_scope');
    await agent.close();
  });

  it('a session opened for a resource server fetches credentials with a second token of the same session whose audience is the broker; the resource-server token never goes to /credentials', async () => {
    const agent = await agentOf('sdk-aud', { dpop: true });
    const s = await agent.startSession({ scope: 'work:read cred:vault-token cred:vault-kv', audience: RS_AUDIENCE });
    const forRs = await agent.token();
    assert.equal(decodeJwt(forRs).aud, RS_AUDIENCE);
    assert.equal((await agent.credentials('vault-token')).provider, 'vault');
    assert.equal((await agent.credentials('vault-kv')).provider, 'vault');
    const rows = await f.tb.b.db('credentials').where({ sid: s.sid });
    assert.equal(rows.length, 2);
    const jtis = new Set(rows.map((r: { jti: string }) => r.jti));
    assert.equal(jtis.size, 1, 'one broker token served both credentials');
    assert.ok(!jtis.has(String(decodeJwt(forRs).jti)), 'not the resource-server token');
    const broker = await f.tb.b
      .db('tokens')
      .where({ jti: [...jtis][0] })
      .first();
    assert.equal(broker.sid, s.sid, 'the same session');
    assert.deepEqual(JSON.parse(broker.audience), [f.tb.url]);
    assert.ok(broker.cnf_jkt, 'bound to the agent’s DPoP key like the session token');
    assert.equal(await agent.token(), forRs, 'the resource-server token is unchanged');
    await agent.close();
    assert.equal(broker.revoked_at, null);
    assert.notEqual((await f.tb.b.db('tokens').where({ jti: broker.jti }).first()).revoked_at, null, 'closing the agent revoked the broker token too');
  });

  it('with a DPoP key the session token is bound and /credentials gets a proof with every call', async () => {
    const agent = await agentOf('sdk-dpop', { dpop: true });
    const s = await agent.startSession({ scope: 'work:read cred:s3' });
    assert.equal(s.tokenType, 'DPoP');
    const c = await agent.credentials('s3');
    assert.equal(c.provider, 'aws-sts');
    await agent.close();
  });

  it("`cordon creds NAME --format credential_process` is accepted by the AWS SDK's own fromProcess provider", async function () {
    this.timeout(30_000);
    const agent = await agentOf('sdk-process');
    await agent.startSession({ scope: 'work:read cred:s3' });
    const dir = mkdtempSync(join(tmpdir(), 'cordon-aws-config-'));
    try {
      // The ~/.aws/config profile the README shows, with the token given inline for the test.
      const config = join(dir, 'config');
      writeFileSync(
        config,
        `[profile cordon]\ncredential_process = ${process.execPath} ${resolve('bin/cordon.js')} creds s3 --format credential_process --issuer ${f.tb.url} --token ${await agent.token()}\nregion = us-east-1\n`,
      );
      const provider = fromProcess({ profile: 'cordon', configFilepath: config, filepath: join(dir, 'credentials') });
      const c = await provider();
      assert.match(c.accessKeyId, /^ASIA/);
      assert.ok(c.sessionToken);
      assert.ok(c.expiration instanceof Date && c.expiration.getTime() > Date.now());
      const client = new STSClient({ region: 'us-east-1', endpoint: f.sts.url, credentials: provider, maxAttempts: 1 });
      const me = await client.send(new GetCallerIdentityCommand({}));
      assert.match(me.Arn ?? '', /assumed-role\/agent-readonly\//);
      client.destroy();
    } finally {
      rmSync(dir, { recursive: true, force: true });
      await agent.close();
    }
  });

  it('a resource-server session revoked before its broker token was fetched: credentials() says session_ended, and so does token() after it', async () => {
    const agent = await agentOf('sdk-aud-revoked');
    const s = await agent.startSession({ scope: 'work:read cred:vault-token', audience: RS_AUDIENCE });
    const { revokeSession } = await import('../src/revocation/revoke.ts');
    await revokeSession(f.tb.b, s.sid, { actor: 'test', via: 'test' });
    const e = await agent.credentials('vault-token').catch((x: unknown) => x as CordonSdkError);
    assert.ok(e instanceof CordonSdkError, String(e));
    assert.equal(e.code, 'session_ended', e.message);
    const t = await agent.token().catch((x: unknown) => x as CordonSdkError);
    assert.ok(t instanceof CordonSdkError && t.code === 'session_ended', 'the agent knows its session is over');
  });

  it('once the session is revoked, credentials() says so (session_ended), not a raw 401', async () => {
    const agent = await agentOf('sdk-revoked');
    const s = await agent.startSession({ scope: 'work:read cred:s3' });
    const { revokeSession } = await import('../src/revocation/revoke.ts');
    await revokeSession(f.tb.b, s.sid, { actor: 'test', via: 'test' });
    const e = await agent.credentials('s3').catch((x: unknown) => x as CordonSdkError);
    assert.ok(e instanceof CordonSdkError, String(e));
    assert.equal(e.code, 'session_ended', e.message);
  });
});
