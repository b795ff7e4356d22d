/**
 * Authorise one reverse-mode call: the session root's policy defines the upstream (as it defines
 * credentials), a rule of that upstream must allow the method and the decoded path, and the token's
 * scope must hold `gw:{upstream}` or `gw:{upstream}/{rule}` (delegation has already attenuated it).
 */
import { CordonError } from '../errors.ts';
import { covers, GW_PREFIX } from '../policy/scopes.ts';
import type { Upstream } from '../policy/types.ts';
import type { GatewayPrincipal } from './principal.ts';
import { matchesGlob, type CallPath } from './path.ts';

export interface AuthorisedCall {
  name: string;
  upstream: Upstream;
  rule: string;
}

/** The upstream the session's root policy defines under `name`, or 404. */
export function upstreamFor(p: GatewayPrincipal, name: string, kind: Upstream['kind']): Upstream {
  const u = Object.hasOwn(p.rootPolicy.upstreams, name) ? p.rootPolicy.upstreams[name] : undefined;
  if (!u || u.kind !== kind)
    throw new CordonError('not_found', `no ${kind === 'mcp' ? 'MCP ' : ''}upstream "${name}" in policy ${p.rootPolicy.name} (the session's root policy)`, {
      reason: 'upstream_unknown',
    });
  return u;
}

/** Which rule allows `method path`, and whether the scope holds it; refusals name what is missing. */
export function authoriseCall(p: GatewayPrincipal, name: string, method: string, path: CallPath): AuthorisedCall {
  const upstream = upstreamFor(p, name, 'http');
  const matching = Object.keys(upstream.rules)
    .sort()
    .filter((r) => upstream.rules[r].methods.includes(method) && upstream.rules[r].paths.some((g) => matchesGlob(g, path.segments)));
  if (!matching.length) throw new CordonError('access_denied', `no rule of upstream ${name} allows ${method} ${path.raw}`, { reason: 'no_rule' });
  const rule = matching.find((r) => covers(p.scopes, `${GW_PREFIX}${name}/${r}`));
  if (!rule)
    throw new CordonError(
      'insufficient_scope',
      `token scope does not grant ${matching.map((r) => `${GW_PREFIX}${name}/${r}`).join(' or ')} (needed for ${method} ${path.raw})`,
      { reason: 'gw_not_in_scope', auditParams: { rule: matching[0] } },
    );
  return { name, upstream, rule };
}

/** An upstream as a caller may learn of it: enough to call it, nothing of its credential's value. */
export interface ReachableUpstream {
  name: string;
  kind: Upstream['kind'];
  /** The credential to ask gateway keys of, and what to sign for, when the upstream is AWS. */
  aws?: { credential: string; service: string; region: string };
}

/** The upstreams of the session's root policy that the token's scope reaches (any of its rules, or all). */
export function reachableUpstreams(p: GatewayPrincipal): ReachableUpstream[] {
  return Object.entries(p.rootPolicy.upstreams)
    .filter(
      ([name, u]) =>
        covers(p.scopes, `${GW_PREFIX}${name}`) ||
        [...Object.keys(u.rules), ...(u.tools ?? []), ...(u.resources?.length ? ['resources'] : []), ...(u.prompts?.length ? ['prompts'] : [])].some((r) =>
          covers(p.scopes, `${GW_PREFIX}${name}/${r}`),
        ),
    )
    .map(([name, u]) => ({
      name,
      kind: u.kind,
      ...(u.credential && u.inject && 'aws_sigv4' in u.inject ? { aws: { credential: u.credential, ...u.inject.aws_sigv4 } } : {}),
    }));
}
