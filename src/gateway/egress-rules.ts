/**
 * The forward proxy's decisions, apart from the wire: where a request wants to go, whether every
 * policy along the chain allows it (before any name is resolved), and which one address it may
 * connect to (resolved once; refused ranges refused unless the host is an IP literal the rules name).
 */
import { lookup as dnsLookup } from 'node:dns/promises';
import ipaddr from 'ipaddr.js';
import { CordonError } from '../errors.ts';
import type { EgressRule, Policy } from '../policy/types.ts';
import { canonicalIp, isRefusedAddress } from './addresses.ts';
import type { GatewayPrincipal } from './principal.ts';

export interface EgressTarget {
  /** Lowercased host name, or an IP literal without brackets. */
  host: string;
  port: number;
}

/** Resolves a name to every address it has (the default is node:dns/promises lookup with all: true). */
export type Lookup = (host: string) => Promise<Array<{ address: string; family: number }>>;

export const systemLookup: Lookup = (host) => dnsLookup(host, { all: true, verbatim: true });

const LABEL = /^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$/;
const PORT = /^[0-9]{1,5}$/;

/** A host name of DNS labels, or an IP literal; numeric shorthands (`127.1`, `2130706433`, `0x7f.1`) are refused as ambiguous. */
function parseHost(raw: string): string | undefined {
  if (raw.startsWith('[')) {
    if (!raw.endsWith(']')) return undefined;
    const ip = canonicalIp(raw.slice(1, -1));
    return ip?.includes(':') ? ip : undefined;
  }
  const ip = canonicalIp(raw);
  if (ip !== undefined) return ip.includes(':') ? undefined : ip; // an IPv6 literal must be bracketed
  const host = raw.toLowerCase();
  if (host.length === 0 || host.length > 253 || ipaddr.isValid(host)) return undefined;
  const labels = host.split('.');
  if (!labels.every((l) => LABEL.test(l))) return undefined;
  if (/^[0-9]+$/.test(labels[labels.length - 1])) return undefined; // an all-numeric TLD is an address in disguise
  return host;
}

function parsePort(raw: string): number | undefined {
  if (!PORT.test(raw)) return undefined;
  const port = Number(raw);
  return port >= 1 && port <= 65535 ? port : undefined;
}

const malformed = (what: string): CordonError => new CordonError('invalid_request', `${what} is not a valid host:port`, { reason: 'malformed_target' });

/** The target of `CONNECT host:port` (authority form, port required, no userinfo). */
export function parseConnectTarget(authority: string | undefined): EgressTarget {
  const m = /^(\[[^\]]*\]|[^:[\]@/]+):([^:]*)$/.exec(authority ?? '');
  const host = m ? parseHost(m[1]) : undefined;
  const port = m ? parsePort(m[2]) : undefined;
  if (host === undefined || port === undefined) throw malformed('the CONNECT target');
  return { host, port };
}

/** The target of an absolute-URI request (`GET http://host[:port]/path`); only plain http is proxied this way. */
export function parseAbsoluteTarget(uri: string | undefined): { target: EgressTarget; url: URL } {
  let url: URL;
  try {
    url = new URL(uri ?? '');
  } catch {
    throw new CordonError('invalid_request', 'a proxy request needs an absolute http:// URI', { reason: 'malformed_target' });
  }
  if (url.protocol !== 'http:')
    throw new CordonError('invalid_request', 'only http:// is proxied this way; use CONNECT for https', { reason: 'malformed_target' });
  if (url.username !== '' || url.password !== '' || !/^http:\/\/[^@/?#]+(?:[/?#]|$)/i.test(uri ?? '')) throw malformed('the URI authority');
  // URL already lowercased and punycoded the name; parse it again with the CONNECT grammar.
  const host = parseHost(url.hostname);
  const port = url.port === '' ? 80 : parsePort(url.port);
  if (host === undefined || port === undefined) throw malformed('the URI authority');
  return { target: { host, port }, url };
}

/** Whether one rule names host:port. `*.example.com` covers every subdomain, not the apex; an IP rule only its own literal. */
function ruleMatches(rule: EgressRule, target: EgressTarget): boolean {
  if (!rule.ports.includes(target.port)) return false;
  const ruleIp = canonicalIp(rule.host);
  const targetIp = canonicalIp(target.host);
  if (ruleIp !== undefined || targetIp !== undefined) return ruleIp !== undefined && ruleIp === targetIp;
  const ruleHost = rule.host.toLowerCase();
  if (ruleHost.startsWith('*.')) return target.host.endsWith(ruleHost.slice(1)) && target.host.length > ruleHost.length - 1;
  return ruleHost === target.host;
}

const hostPort = (t: EgressTarget): string => (t.host.includes(':') ? `[${t.host}]:${t.port}` : `${t.host}:${t.port}`);

/**
 * Every policy along the chain, root first, must list host:port; the first that does not is named
 * in the refusal. Decided from names only, so nothing is resolved for a destination nobody allows.
 */
export function egressAllowed(principal: GatewayPrincipal, host: string, port: number): void {
  const target = { host: canonicalIp(host) ?? host.toLowerCase(), port };
  const policies: Policy[] = principal.chainPolicies;
  if (policies.length === 0) throw new CordonError('access_denied', 'no policy allows egress', { reason: 'egress_not_allowed' });
  for (const policy of policies) {
    if (policy.egress.some((rule) => ruleMatches(rule, target))) continue;
    const hostListed = policy.egress.some((rule) => ruleMatches({ ...rule, ports: [port] }, target));
    const description = hostListed
      ? `policy "${policy.name}" allows ${host} but not port ${port}`
      : `policy "${policy.name}" does not allow egress to ${hostPort(target)}`;
    throw new CordonError('access_denied', description, {
      reason: hostListed ? 'egress_port_not_allowed' : 'egress_not_allowed',
      auditParams: { policy: policy.name },
    });
  }
}

/**
 * The one address to connect to. A name is resolved once and refused if ANY of its addresses is in
 * a refused range (a name with one private answer among public ones is a rebinding attempt); an IP
 * literal is never looked up, and is reachable whatever its range because every policy named it.
 */
export async function resolveDestination(target: EgressTarget, lookup: Lookup): Promise<string> {
  if (canonicalIp(target.host) !== undefined) return target.host;
  // RFC 6761: resolvers answer these with loopback themselves, whatever DNS says.
  if (target.host === 'localhost' || target.host.endsWith('.localhost'))
    throw new CordonError('access_denied', `${target.host} is a loopback name, which is refused unless a rule names the address itself`, {
      reason: 'refused_address',
      auditParams: { range: 'loopback' },
    });
  let answers: Array<{ address: string }>;
  try {
    answers = await lookup(target.host);
  } catch (cause) {
    throw new CordonError('bad_gateway', `could not resolve ${target.host}`, { reason: 'resolve_failed', cause });
  }
  if (answers.length === 0) throw new CordonError('bad_gateway', `${target.host} has no address`, { reason: 'resolve_failed' });
  for (const { address } of answers) {
    const verdict = isRefusedAddress(address);
    if (verdict.refused)
      throw new CordonError('access_denied', `${target.host} resolves to a ${verdict.range} address (${address}), which is refused unless a rule names it`, {
        reason: 'refused_address',
        auditParams: { address, range: verdict.range },
      });
  }
  return answers[0].address;
}
