/**
 * `cordon exec --gateway` with MCP upstreams: the child learns each MCP upstream its token reaches
 * as `CORDON_MCP_<NAME>_URL` (the gateway's `/mcp/{upstream}`), beside `CORDON_UPSTREAM_<NAME>_URL`
 * for http upstreams, and nothing for an upstream its scope does not reach.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runExec } from '../src/cli/exec.ts';
import { mcpAuthFixture, type McpAuthFixture } from './mcp-auth.kit.ts';

describe('cordon exec --gateway: MCP upstreams', function () {
  this.timeout(30_000);
  let f: McpAuthFixture;
  let dir: string;
  before(async () => {
    f = await mcpAuthFixture();
    dir = mkdtempSync(join(tmpdir(), 'cordon-exec-mcp-'));
  });
  after(async () => {
    await f.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  /** Runs a child that writes its environment to a file, and returns that environment. */
  async function childEnv(scope: string): Promise<Record<string, string>> {
    const out = join(dir, `env-${Math.random().toString(36).slice(2)}.json`);
    const code = await runExec({
      issuer: f.tb.url,
      clientId: f.owner.id,
      clientSecret: f.owner.secret,
      scope,
      creds: [],
      command: [process.execPath, '-e', `require('fs').writeFileSync(${JSON.stringify(out)}, JSON.stringify(process.env))`],
      gateway: f.gatewayUrl,
    });
    assert.equal(code, 0);
    return JSON.parse(readFileSync(out, 'utf8')) as Record<string, string>;
  }

  it('exports CORDON_MCP_<NAME>_URL per MCP upstream the token reaches (a tool scope is enough), CORDON_UPSTREAM_<NAME>_URL for http ones', async () => {
    const env = await childEnv('gw:github/list_issues gw:team-wiki gw:tickets');
    assert.equal(env.CORDON_GATEWAY_URL, f.gatewayUrl);
    assert.equal(env.CORDON_MCP_GITHUB_URL, `${f.gatewayUrl}/mcp/github`);
    assert.equal(env.CORDON_MCP_TEAM_WIKI_URL, `${f.gatewayUrl}/mcp/team-wiki`);
    assert.equal(env.CORDON_UPSTREAM_TICKETS_URL, `${f.gatewayUrl}/u/tickets`);
    assert.equal(env.CORDON_UPSTREAM_GITHUB_URL, undefined, 'an MCP upstream is not offered as a reverse-mode URL');
    assert.ok(!JSON.stringify(env).includes(f.owner.secret), "the agent's secret stays out of the child");
  });

  it('an MCP upstream outside the scope is not exported', async () => {
    const env = await childEnv('gw:github/get_issue');
    assert.equal(env.CORDON_MCP_GITHUB_URL, `${f.gatewayUrl}/mcp/github`);
    assert.deepEqual(
      Object.keys(env).filter((k) => /^CORDON_(MCP|UPSTREAM)_/.test(k)),
      ['CORDON_MCP_GITHUB_URL'],
    );
  });
});
