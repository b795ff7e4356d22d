import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runExec } from '../src/cli/exec.ts';
import { startGateway, type RunningGateway } from '../src/gateway/server.ts';
import { credFixture, ROLE_ARN, type CredFixture } from './credentials.kit.ts';
import { S3Double } from './doubles/s3.ts';
import { RecordingUpstream } from './gateway.kit.ts';
import type { Agent } from './delegation.kit.ts';

const require = createRequire(import.meta.url);
/** The egress destination listens on another loopback address, so NO_PROXY (the gateway's host) does not cover it. */
const EGRESS_HOST = '127.0.0.2';

const policy = (ticketsUrl: string, s3Url: string, egressPort: number): string => `
name: gw-exec
description: A command run through the gateway.
token_ttl: 20m
session_ttl: 1h
scopes: [gw:tickets, gw:reports, cred:reports-s3]
credentials:
  tickets-key: { provider: vault, kv: secret/data/tickets/api, deliver: gateway }
  reports-s3: { provider: aws-sts, role_arn: "${ROLE_ARN}", ttl: 30m, deliver: gateway }
upstreams:
  tickets:
    url: ${ticketsUrl}
    credential: tickets-key
    inject: { header: X-Api-Key, value: "{secret.api_key}" }
    rules: { read: { methods: [GET], paths: ["/tickets/*"] } }
  reports:
    url: ${s3Url}
    credential: reports-s3
    inject: { aws_sigv4: { service: s3, region: us-east-1 } }
    rules: { read: { methods: [GET], paths: ["/reports/**"] } }
egress:
  - { host: "${EGRESS_HOST}", ports: [${egressPort}] }
`;

describe('cordon exec --gateway', function () {
  this.timeout(30_000);
  let f: CredFixture;
  let s3: S3Double;
  let tickets: RecordingUpstream;
  let egress: Server;
  let egressSeen: string[];
  let gw: RunningGateway;
  let agent: Agent;
  let dir: string;

  before(async () => {
    s3 = new S3Double();
    await s3.start();
    s3.putObject('reports', 'q1.csv', 'a,b\n1,2\n', 'text/csv');
    tickets = new RecordingUpstream();
    await tickets.start();
    egressSeen = [];
    egress = createServer((req, res) => {
      egressSeen.push(`${req.method} ${req.url}`);
      res.end('hello from outside');
    });
    await new Promise<void>((r) => egress.listen(0, EGRESS_HOST, () => r()));
    f = await credFixture({ policies: { 'gw-exec.yaml': policy(tickets.url, s3.url, (egress.address() as AddressInfo).port) } });
    s3.trust((akid) => {
      const c = f.sts.getCredential(akid);
      return c ? { accessKeyId: c.accessKeyId, secretAccessKey: c.secretAccessKey, sessionToken: c.sessionToken } : undefined;
    });
    gw = await startGateway(f.tb.b, { port: 0, host: '127.0.0.1' });
    agent = await f.agent('gw-exec-agent', 'gw-exec');
    dir = mkdtempSync(join(tmpdir(), 'cordon-exec-gw-'));
  });
  after(async () => {
    await gw?.close();
    await f?.stop();
    await s3?.stop();
    await tickets?.stop();
    egress?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('the child reaches an upstream, S3 and an egress host through the gateway, and its environment holds no real secret', async () => {
    const out = join(dir, 'child.json');
    const script = `
      const fs = require('fs');
      const { EnvHttpProxyAgent, fetch: ufetch } = require(${JSON.stringify(require.resolve('undici'))});
      const { S3Client, GetObjectCommand } = require(${JSON.stringify(require.resolve('@aws-sdk/client-s3'))});
      (async () => {
        const out = { env: process.env };
        const t = await fetch(process.env.CORDON_UPSTREAM_TICKETS_URL + '/tickets/9', { headers: { authorization: 'Bearer ' + process.env.CORDON_TOKEN } });
        out.tickets = [t.status, await t.json()];
        const s3 = new S3Client({ forcePathStyle: true, maxAttempts: 1 });
        const got = await s3.send(new GetObjectCommand({ Bucket: 'reports', Key: 'q1.csv' }));
        out.s3 = await got.Body.transformToString();
        const e = await ufetch('http://${EGRESS_HOST}:' + ${(egress.address() as AddressInfo).port} + '/hello', { dispatcher: new EnvHttpProxyAgent() });
        out.egress = [e.status, await e.text()];
        fs.writeFileSync(${JSON.stringify(out)}, JSON.stringify(out));
      })().catch((e) => { console.error(e); process.exit(3); });
    `;
    const code = await runExec({
      issuer: f.tb.url,
      clientId: agent.id,
      clientSecret: agent.secret,
      scope: 'gw:tickets gw:reports cred:reports-s3',
      task: 'exec-gateway',
      creds: [],
      command: [process.execPath, '-e', script],
      gateway: gw.url,
    });
    assert.equal(code, 0);
    const child = JSON.parse(readFileSync(out, 'utf8'));
    assert.equal(child.tickets[0], 200);
    assert.equal(tickets.received.at(-1)!.headers['x-api-key'], 'k-123', 'the upstream got the injected key');
    assert.equal(child.s3, 'a,b\n1,2\n');
    const signed = s3.requests.filter((r) => r.path === '/reports/q1.csv');
    assert.equal(signed.length, 1);
    assert.equal(signed[0].signatureValid, true);
    assert.deepEqual(child.egress, [200, 'hello from outside']);
    assert.deepEqual(egressSeen, ['GET /hello']);

    assert.equal(child.env.CORDON_UPSTREAM_TICKETS_URL, `${gw.url}/u/tickets`);
    assert.equal(child.env.AWS_ENDPOINT_URL_S3, `${gw.url}/u/reports`);
    assert.match(child.env.HTTPS_PROXY, /^http:\/\/cordon:[\w.-]+@127\.0\.0\.1:\d+$/);
    // Every real secret the system holds: the KV value, the session's STS keys, the agent's secret, the broker's own keys.
    const secrets = ['k-123', agent.secret, f.brokerVaultToken, process.env.AWS_SECRET_ACCESS_KEY!, process.env.AWS_ACCESS_KEY_ID!];
    for (const c of [...f.sts.issued.values()]) secrets.push(c.accessKeyId, c.secretAccessKey, c.sessionToken);
    assert.ok([...f.sts.issued.values()].length >= 1, 'the gateway assumed the role for the session');
    const envText = JSON.stringify(child.env);
    for (const s of secrets) assert.ok(!envText.includes(s), `the child's environment holds a real secret (${s.slice(0, 4)}…)`);
  });
});
