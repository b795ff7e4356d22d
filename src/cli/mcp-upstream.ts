/**
 * `cordon mcp …` reaches an MCP upstream as the gateway does: with the credential the gateway
 * injects, issued the way the gateway gets it — for a session of an agent bound to the policy that
 * defines the upstream (opened for this command, audited, and revoked when it ends, which revokes
 * the credential too). It then lists the upstream's tools with the official MCP client, which
 * speaks both protocol generations.
 */
import { Client, StreamableHTTPClientTransport } from '@modelcontextprotocol/client';
import { Attempt } from '../audit/attempt.ts';
import type { Broker } from '../broker.ts';
import { startBackendCredentials } from '../credentials/sweep.ts';
import { findAgent } from '../agents/registry.ts';
import { injectTemplate } from '../gateway/inject.ts';
import { offeredTool, type OfferedTool } from '../gateway/mcp/pins.ts';
import { GatewaySecrets } from '../gateway/secrets.ts';
import { GW_PREFIX } from '../policy/scopes.ts';
import type { Policy, Upstream } from '../policy/types.ts';
import { revokeSession } from '../revocation/revoke.ts';
import { startSession } from '../sessions/start.ts';
import { agents } from '../store/agents.ts';
import { CliError } from './output.ts';

/** Every loaded policy defining an MCP upstream of this name. */
export function policiesDefining(b: Broker, name: string): Policy[] {
  return b.policies
    .list()
    .filter((p) => Object.hasOwn(p.upstreams, name) && p.upstreams[name].kind === 'mcp')
    .sort((a, c) => a.name.localeCompare(c.name));
}

export interface UpstreamChoice {
  policy: Policy;
  upstream: Upstream;
  /** Said to the admin when several policies define the upstream. */
  note?: string;
}

/**
 * The policy whose definition of `name` is used: `--policy`, else the policy of `--agent`, else the
 * first by name with an active agent (its credential is issued for an agent's session). The note
 * says which was used when several define the upstream.
 */
export async function chooseDefinition(b: Broker, name: string, opts: { policy?: string; agent?: string }): Promise<UpstreamChoice> {
  const all = policiesDefining(b, name);
  if (!all.length) throw new CliError(`no loaded policy defines an MCP upstream named ${name} (upstreams: { ${name}: { kind: mcp, … } })`);
  let policy: Policy | undefined;
  if (opts.policy) policy = all.find((p) => p.name === opts.policy);
  else if (opts.agent) {
    const bound = (await findAgent(b, opts.agent)).policy;
    policy = all.find((p) => p.name === bound);
  } else {
    for (const p of all) if (!policy && (await agents.listByPolicy(b.read, p.name)).some((a) => a.status === 'active')) policy = p;
    policy ??= all[0];
  }
  if (!policy)
    throw new CliError(
      `${opts.policy ? `policy ${opts.policy}` : `the policy of agent ${opts.agent}`} does not define MCP upstream ${name} (defined by: ${all.map((p) => p.name).join(', ')})`,
    );
  const urls = new Set(all.map((p) => p.upstreams[name].url));
  const note =
    all.length > 1
      ? `${name} is defined by policies ${all.map((p) => p.name).join(', ')}${urls.size > 1 ? ' with different URLs' : ''}; using ${policy.name}'s (--policy to choose)`
      : undefined;
  return { policy, upstream: policy.upstreams[name], ...(note ? { note } : {}) };
}

/** The tools an upstream offers now, reduced to what is pinned, with the raw definitions for display. */
export interface OfferedList {
  tools: Array<OfferedTool & { definition: Record<string, unknown> }>;
}

/**
 * Connects to the upstream with its injected credential and lists its tools. The session opened
 * for the credential is revoked before returning, whatever happens.
 */
export async function listUpstreamTools(b: Broker, name: string, choice: UpstreamChoice, opts: { agent?: string; command: string }): Promise<OfferedList> {
  const { upstream, policy } = choice;
  const url = new URL(upstream.url);
  const headers: Record<string, string> = {};
  let sid: string | undefined;
  let backends: { stop(): Promise<void> } | undefined;
  try {
    if (upstream.credential && upstream.inject) {
      if ('aws_sigv4' in upstream.inject) throw new CliError(`${name} injects a SigV4 signature, which MCP upstreams do not take`);
      backends = await startBackendCredentials(b, { sweep: false });
      const agent = opts.agent ? await findAgent(b, opts.agent) : (await agents.listByPolicy(b.read, policy.name)).find((a) => a.status === 'active');
      if (!agent)
        throw new CliError(
          `no active agent is bound to policy ${policy.name}: the credential of ${name} is issued for an agent's session; register one or pass --agent`,
        );
      if (agent.policy !== policy.name)
        throw new CliError(`agent ${agent.name} is bound to policy ${agent.policy}, not ${policy.name} (which defines ${name})`);
      const scope = policy.scopes.filter((s) => s === `${GW_PREFIX}${name}` || s.startsWith(`${GW_PREFIX}${name}/`));
      if (!scope.length) throw new CliError(`policy ${policy.name} grants no gw:${name} scope, so no session of it may use ${name}`);
      const attempt = new Attempt('cli.mcp').note({ by: 'cli' });
      const issued = await startSession(b, { clientId: agent.id, scope: scope.join(' '), task: opts.command.slice(0, 200), audience: [] }, attempt);
      sid = issued.sid;
      const live = await b.live.withPolicies(await b.live.check(issued.claims.jti, issued.claims, issued.jwt));
      const held = await new GatewaySecrets(b).get(live, upstream.credential, attempt);
      const query = new URLSearchParams(url.search);
      injectTemplate(upstream.inject, held.values, headers, query);
      url.search = query.toString();
    }
    return { tools: await listTools(url, headers, upstream.timeoutSec * 1000) };
  } finally {
    if (sid) await revokeSession(b, sid, { actor: 'cli', via: 'cli' });
    await backends?.stop();
  }
}

const MAX_PAGES = 50;

async function listTools(url: URL, headers: Record<string, string>, timeoutMs: number): Promise<OfferedList['tools']> {
  const client = new Client({ name: 'cordon-cli', version: '1' }, { versionNegotiation: { mode: 'auto' } });
  try {
    await client.connect(new StreamableHTTPClientTransport(url, { requestInit: { headers } }), { timeout: timeoutMs });
    const out: OfferedList['tools'] = [];
    let cursor: string | undefined;
    for (let page = 0; page < MAX_PAGES; page++) {
      const r = await client.listTools(cursor !== undefined ? { cursor } : undefined, { timeout: timeoutMs });
      for (const t of r.tools) {
        const o = offeredTool(t);
        if (o) out.push({ ...o, definition: JSON.parse(o.canonical) as Record<string, unknown> });
      }
      cursor = r.nextCursor;
      if (cursor === undefined) break;
    }
    return out;
  } catch (e) {
    if (e instanceof CliError) throw e;
    // Never the URL's query (it may carry the injected key) nor headers: the host and the error's own words.
    throw new CliError(`could not list the tools of ${url.host}: ${(e as Error).message.slice(0, 300)}`);
  } finally {
    await client.close().catch(() => undefined);
  }
}
