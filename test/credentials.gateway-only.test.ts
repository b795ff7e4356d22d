import assert from 'node:assert/strict';
import { credentialsRoute } from '../src/http/credentials.ts';
import { verifyAudit } from '../src/audit/verify.ts';
import { main } from '../src/cli/main.ts';
import type { Io } from '../src/cli/output.ts';
import { VaultDouble } from './doubles/vault.ts';
import { startTestBroker, type TestBroker } from './helpers/broker.ts';
import { auditHead, auditSince, claimsOf, mustSession, policyDir, register } from './delegation.kit.ts';

const GATEWAY_URL = 'https://gateway.test';

/** A root policy whose backend credentials only the gateway may hold (and one an agent may, for contrast). */
const POLICY = `
name: gw-owner
scopes: [cred:tickets-key, cred:reports-s3, cred:github-pat, cred:vault-token, gw:tickets, gw:reports, gw:github]
credentials:
  tickets-key: { provider: vault, kv: secret/data/tickets, deliver: gateway }
  github-pat: { provider: vault, kv: secret/data/github, deliver: gateway }
  reports-s3: { provider: aws-sts, role_arn: "arn:aws:iam::123456789012:role/agent-reports", ttl: 15m, deliver: gateway }
  vault-token: { provider: vault, vault_policies: [tickets-read], ttl: 5m }
upstreams:
  tickets:
    url: https://tickets.internal/api
    credential: tickets-key
    inject: { header: Authorization, value: "Bearer {secret.api_key}" }
    rules: { read: { methods: [GET], paths: ["/tickets/*"] } }
  reports:
    url: https://s3.us-east-1.amazonaws.com
    credential: reports-s3
    inject: { aws_sigv4: { service: s3, region: us-east-1 } }
    rules: { read: { methods: [GET], paths: ["/reports/*"] } }
  github:
    kind: mcp
    url: https://mcp.github.internal/mcp
    credential: github-pat
    inject: { header: Authorization, value: "Bearer {secret.token}" }
    tools: [list_issues]
`;

describe('backend credentials: deliver: gateway is never handed to an agent', () => {
  const vault = new VaultDouble('root-token');
  let tb: TestBroker;
  let tok: string;

  before(async () => {
    await vault.start();
    vault.putKv('tickets', { api_key: 'k-never-leaves' });
    // Providers are on, so nothing but the refusal stops the issue.
    tb = await startTestBroker({
      policyDir: policyDir({ 'gw-owner.yaml': POLICY }),
      env: { VAULT_ADDR: vault.url, VAULT_TOKEN: 'root-token', CORDON_VAULT_ALLOW_ROOT: '1', AWS_REGION: 'us-east-1', CORDON_GATEWAY_URL: GATEWAY_URL },
      ext: { routes: [credentialsRoute] },
    });
    const a = await register(tb, 'gw-agent', 'gw-owner');
    tok = await mustSession(tb, a, 'cred:tickets-key cred:reports-s3 cred:github-pat gw:tickets');
  });
  after(async () => {
    await tb?.close();
    await vault.stop();
  });

  const ask = async (name: string, token = tok) => {
    const r = await fetch(`${tb.url}/credentials/${name}`, { method: 'POST', headers: { authorization: `Bearer ${token}` } });
    return { status: r.status, body: (await r.json()) as { error: string; error_description: string } };
  };

  it('403 access_denied naming the gateway URL of its upstream, one deny row, nothing asked of Vault and no credential row', async () => {
    const seq = await auditHead(tb.b);
    const r = await ask('tickets-key');
    assert.equal(r.status, 403);
    assert.equal(r.body.error, 'access_denied');
    assert.equal(
      r.body.error_description,
      `credential tickets-key is delivered to the gateway only (deliver: gateway in policy gw-owner): call the upstream through the gateway (${GATEWAY_URL}/u/tickets/…) with this token, which injects it; no agent receives it`,
    );
    assert.ok(!JSON.stringify(r.body).includes('k-never-leaves'));
    assert.equal(vault.requests.length, 0, 'Vault was never asked');
    assert.equal((await tb.b.db('credentials').count({ n: '*' }).first())?.n, 0, 'no intent row: refused before anything was written');

    const rows = await auditSince(tb.b, seq);
    assert.equal(rows.length, 1, JSON.stringify(rows));
    const [deny] = rows;
    assert.equal(deny.event, 'deny');
    assert.equal(deny.decision, 'deny');
    assert.equal(deny.params.attempted, 'credential.issue');
    assert.equal(deny.params.reason_tag, 'credential_gateway_only');
    assert.equal(deny.params.name, 'tickets-key');
    assert.equal(deny.jti, claimsOf(tok).jti);
    assert.equal(deny.sid, claimsOf(tok).sid);
    assert.match(String(deny.reason), /^access_denied: credential tickets-key is delivered to the gateway only/);
    assert.equal((await verifyAudit(tb.b.db)).ok, true);
  });

  it('every provider and kind: an aws-sts credential (until gateway keys answer it) and an MCP upstream’s credential', async () => {
    const s3 = await ask('reports-s3');
    assert.equal(s3.status, 403);
    assert.match(s3.body.error_description, new RegExp(`^credential reports-s3 is delivered to the gateway only .*\\(${GATEWAY_URL}/u/reports/…\\)`));
    const pat = await ask('github-pat');
    assert.equal(pat.status, 403);
    assert.match(pat.body.error_description, new RegExp(`\\(${GATEWAY_URL}/mcp/github\\)`));
  });

  it('the scope check still comes first: without cred:NAME it is insufficient_scope, as for any credential', async () => {
    const a = await register(tb, 'gw-agent-2', 'gw-owner');
    const r = await ask('tickets-key', await mustSession(tb, a, 'gw:tickets'));
    assert.equal(r.status, 403);
    assert.equal(r.body.error, 'insufficient_scope');
  });

  it('cordon creds prints one line saying why, and exits non-zero', async () => {
    let out = '';
    let err = '';
    const io: Io = { out: (s) => void (out += s), err: (s) => void (err += s) };
    const code = await main(['creds', 'tickets-key', '--token', tok, '--issuer', tb.url], io);
    assert.notEqual(code, 0);
    assert.equal(out, '');
    const lines = err.trimEnd().split('\n');
    assert.equal(lines.length, 1, err);
    assert.match(
      lines[0],
      /^cordon: access_denied: credential tickets-key is delivered to the gateway only .*call the upstream through the gateway \(https:\/\/gateway\.test\/u\/tickets\/…\)/,
    );
  });
});
