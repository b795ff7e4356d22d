/**
 * Gateway lint within one policy file: how its upstreams name and inject credentials, what each
 * kind of upstream may hold, and who receives a credential (`deliver`). The `gw:` scopes reach
 * across files, like `cred:`, and are checked in lint-grants.ts.
 */
import type { PolicyFile } from './schema.ts';

type Path = ReadonlyArray<string | number>;
export type Flag = (path: Path, message: string, part?: 'key' | 'value', severity?: 'warning') => void;

type FileCredential = PolicyFile['credentials'][string];
type FileUpstream = PolicyFile['upstreams'][string];

/** Keys that only mean something on an MCP upstream. */
const MCP_ONLY = ['tools', 'args', 'resources', 'prompts', 'audit_args'] as const;
const PLACEHOLDER = /\{(token|secret\.[^}]+)\}/g;

/** Credentials some upstream of this policy injects: the gateway uses them, so no `cred:` scope has to grant them. */
export function injectedCredentials(f: PolicyFile): Set<string> {
  return new Set(Object.values(f.upstreams).flatMap((u) => (u.credential !== undefined ? [u.credential] : [])));
}

export function checkGateway(f: PolicyFile, flag: Flag): void {
  const injected = injectedCredentials(f);
  for (const [name, spec] of Object.entries(f.credentials)) checkDeliver(name, spec, injected.has(name), flag);
  for (const [name, u] of Object.entries(f.upstreams)) {
    const at = (...rest: Array<string | number>): Path => ['upstreams', name, ...rest];
    checkInjection(u, f.credentials, at, flag);
    if (u.kind === 'http') checkHttp(u, at, flag);
    else checkMcp(u, at, flag);
  }
}

function checkDeliver(name: string, spec: FileCredential, injected: boolean, flag: Flag): void {
  const gatewayOnly = spec.deliver === 'gateway';
  // A static third-party secret (an API key, a PAT) is exactly what an agent must never hold.
  if (spec.provider === 'vault' && spec.kv !== undefined && !gatewayOnly) {
    flag(
      ['credentials', name, spec.deliver !== undefined ? 'deliver' : 'kv'],
      'a kv credential (a static secret, which no revocation can take back) must be deliver: gateway: only the gateway may hold it; add deliver: gateway',
    );
  }
  if (gatewayOnly && !injected) {
    flag(
      ['credentials', name],
      `is deliver: gateway but no upstream of this policy injects it (credential: ${name}), so nothing can use it`,
      'value',
      'warning',
    );
  }
}

function checkInjection(u: FileUpstream, credentials: PolicyFile['credentials'], at: (...rest: string[]) => Path, flag: Flag): void {
  const name = u.credential;
  if (name === undefined) {
    if (u.inject !== undefined) flag(at('inject'), 'has no credential to inject: add credential: NAME (one this policy defines under credentials:)');
    else
      flag(
        at(),
        'names no credential: add credential: NAME (one this policy defines under credentials:) and inject: saying how the gateway puts it into each call',
      );
    return;
  }
  const spec = Object.hasOwn(credentials, name) ? credentials[name] : undefined;
  if (!spec) {
    flag(at('credential'), `${name} is not defined under credentials: in this policy (an upstream injects a credential of its own policy)`);
    return;
  }
  const inject = u.inject;
  if (inject === undefined) {
    flag(
      at('credential'),
      `${name} is never injected: add inject: { header: NAME, value: "… {secret.FIELD}" } (or query: NAME, or aws_sigv4: { service, region } for an aws-sts credential)`,
    );
    return;
  }
  if ('aws_sigv4' in inject) {
    if (spec.provider !== 'aws-sts') flag(at('inject', 'aws_sigv4'), `signs with AWS STS keys, but ${name} is a vault credential: name an aws-sts credential`);
    return;
  }
  const where = 'header' in inject ? 'header' : 'query';
  if (spec.provider === 'aws-sts') {
    flag(at('inject'), `a ${where} injection needs a vault credential, but ${name} is aws-sts: sign the calls with inject: { aws_sigv4: { service, region } }`);
    return;
  }
  const childToken = spec.vault_policies !== undefined;
  const used = [...inject.value.matchAll(PLACEHOLDER)].map((m) => m[1]);
  if (used.length === 0) {
    flag(
      at('inject', 'value'),
      `injects nothing of ${name}: put ${childToken ? '{token}' : '{secret.FIELD}'} in it (a secret written into a policy is no credential)`,
    );
  } else if (!childToken && used.includes('token')) {
    flag(at('inject', 'value'), `{token} is a Vault child token, but ${name} reads a secret (${spec.kv !== undefined ? 'kv' : 'path'}): use {secret.FIELD}`);
  } else if (childToken && used.some((p) => p !== 'token')) {
    const field = used.find((p) => p !== 'token');
    flag(at('inject', 'value'), `{${field}} is a field of a secret read, but ${name} is a Vault child token (vault_policies): use {token}`);
  }
}

function checkHttp(u: FileUpstream, at: (...rest: string[]) => Path, flag: Flag): void {
  for (const key of MCP_ONLY) if (u[key] !== undefined) flag(at(key), `${key} is for kind: mcp upstreams; this one is kind http`, 'key');
  // Deny by default: an upstream without rules would be defined, granted and still refuse every call.
  if (Object.keys(u.rules).length === 0)
    flag(at(), 'has no rules, so the gateway would allow no call to it: add rules: { NAME: { methods: [GET], paths: ["/…"] } }');
}

function checkMcp(u: FileUpstream, at: (...rest: Array<string | number>) => Path, flag: Flag): void {
  const tools = u.tools ?? [];
  if (tools.length === 0) {
    flag(
      u.tools !== undefined ? at('tools') : at(),
      'is kind mcp but lists no tools, so the gateway would allow no call to it: add tools: [TOOL, …] (the tools the policy grants)',
    );
  }
  for (const tool of Object.keys(u.args ?? {})) {
    if (!tools.includes(tool)) flag(at('args', tool), `${tool} is not one of tools (${tools.join(', ') || 'none'})`, 'key');
  }
  if (Object.keys(u.rules).length > 0) flag(at('rules'), 'rules are for kind http: an mcp upstream grants its tools (scope gw:NAME/TOOL)', 'key');
  // gw:NAME/resources and gw:NAME/prompts grant the upstream's resources and prompts: a tool of that name could not be told apart.
  tools.forEach((t, i) => {
    if (t === 'resources' || t === 'prompts')
      flag(at('tools', i), `${t} is reserved: the scope gw:NAME/${t} grants the upstream's ${t} (listed under ${t}:), so no tool may be named so`);
  });
  if (u.inject !== undefined && 'aws_sigv4' in u.inject)
    flag(at('inject', 'aws_sigv4'), 'an mcp upstream takes its credential in a header or the query: inject: { header: NAME, value: "… {secret.FIELD}" }');
}
