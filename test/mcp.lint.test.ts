/**
 * Policy lint for MCP upstreams, beyond what the gateway suite checks: `gw:NAME/resources` and
 * `gw:NAME/prompts` name the upstream's resources and prompts when it lists them, those two names
 * are reserved (no tool may take them), and an MCP upstream takes a header or query credential.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { formatProblem, lintPolicyDir } from '../src/policy/lint.ts';

const POLICY = `name: gh
scopes: [gw:github/list_issues, gw:github/resources, gw:github/prompts]
credentials:
  github-pat: { provider: vault, kv: secret/data/github, deliver: gateway }
upstreams:
  github:
    kind: mcp
    url: https://mcp.github.internal/mcp
    credential: github-pat
    inject: { header: Authorization, value: "Bearer {secret.token}" }
    tools: [list_issues]
    resources: ["repo://acme/*"]
    prompts: [summarize]
    audit_args: full
`;

describe('policy lint: MCP upstreams', () => {
  const dirs: string[] = [];
  after(async () => {
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  });
  async function lint(text: string): Promise<string[]> {
    const dir = await mkdtemp(join(tmpdir(), 'cordon-mcp-lint-'));
    dirs.push(dir);
    await writeFile(join(dir, 'p.yaml'), text);
    const r = await lintPolicyDir(dir);
    return [...r.problems, ...r.warnings].map((p) => formatProblem(p).replace(`${dir}/`, ''));
  }

  it('accepts gw:NAME/resources and gw:NAME/prompts for an upstream that lists resources and prompts', async () => {
    assert.deepEqual(await lint(POLICY), []);
  });

  it('refuses gw:NAME/resources (or prompts) when the upstream lists none', async () => {
    const problems = await lint(POLICY.replace('    resources: ["repo://acme/*"]\n', '').replace('    prompts: [summarize]\n', ''));
    assert.equal(problems.length, 2, problems.join('\n'));
    assert.match(problems[0], /gw:github\/resources names tool resources, which upstream github does not list/);
    assert.match(problems[1], /gw:github\/prompts names tool prompts/);
  });

  it('reserves the names resources and prompts, and refuses a SigV4 injection', async () => {
    const reserved = await lint(POLICY.replace('tools: [list_issues]', 'tools: [list_issues, prompts]'));
    assert.deepEqual(reserved.length, 1, reserved.join('\n'));
    assert.match(reserved[0], /p\.yaml:11:\d+: upstreams\.github\.tools\[1\]: prompts is reserved: the scope gw:NAME\/prompts grants the upstream's prompts/);
    const sigv4 = await lint(
      POLICY.replace('    inject: { header: Authorization, value: "Bearer {secret.token}" }', '    inject: { aws_sigv4: { service: s3, region: us-east-1 } }'),
    );
    assert.ok(
      sigv4.some((p) => /an mcp upstream takes its credential in a header or the query/.test(p)),
      sigv4.join('\n'),
    );
  });
});
