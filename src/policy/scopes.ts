/**
 * The scope algebra. Every grant decision (session start, delegation, credential exchange)
 * reduces to `covers`, so these functions are pure, tiny and property-tested.
 *
 * Scope tokens are RFC 6749 §3.3 scope-tokens. One extension: a token ending in `*` (with
 * something before it) is a prefix wildcard, so `tickets:*` covers `tickets:read`,
 * `tickets:x:y` and the narrower wildcard `tickets:a:*`. Only a trailing `*` is special.
 * A lone `*` is treated as a literal token here (it covers only itself) so that a stray `*`
 * can never widen a grant; policy lint refuses it outright.
 */
import { CordonError } from '../errors.ts';

/** RFC 6749 scope-token: 1*( %x21 / %x23-5B / %x5D-7E ) — printable ASCII minus space, `"` and `\`. */
const SCOPE_TOKEN = /^[\x21\x23-\x5B\x5D-\x7E]+$/;

export const isScopeToken = (s: string): boolean => SCOPE_TOKEN.test(s);

/** True for prefix wildcards such as `tickets:*` (never for the lone `*`). */
export const isWildcard = (s: string): boolean => s.length > 1 && s.endsWith('*');

/**
 * Split an RFC 6749 `scope` parameter. Items are separated by single spaces; empty items
 * (double, leading or trailing spaces) and invalid tokens are `invalid_scope`, because a
 * sloppy parser here is a parser-differential with resource servers. The empty string is
 * no scopes at all. Duplicates are dropped, first occurrence wins.
 */
export function parseScope(str: string): string[] {
  if (str === '') return [];
  const out: string[] = [];
  for (const item of str.split(' ')) {
    if (item === '') throw new CordonError('invalid_scope', 'scope has an empty item (scopes are separated by single spaces)');
    if (!isScopeToken(item)) throw new CordonError('invalid_scope', `invalid scope token ${JSON.stringify(item)}`);
    if (!out.includes(item)) out.push(item);
  }
  return out;
}

/** Join for the `scope` claim / parameter; refuses anything `parseScope` would refuse. */
export function formatScope(list: readonly string[]): string {
  for (const s of list) {
    if (!isScopeToken(s)) throw new CordonError('invalid_scope', `invalid scope token ${JSON.stringify(s)}`);
  }
  return dedupe(list).join(' ');
}

/** Does the single held token `h` grant `w`? Wildcard vs wildcard compares prefixes, which keeps `covers` transitive. */
function coversOne(h: string, w: string): boolean {
  if (h === w) return true;
  if (!isWildcard(h)) return false;
  const prefix = h.slice(0, -1);
  return isWildcard(w) ? w.slice(0, -1).startsWith(prefix) : w.startsWith(prefix);
}

export const covers = (held: readonly string[], wanted: string): boolean => held.some((h) => coversOne(h, wanted));

export const coversAll = (held: readonly string[], wanted: readonly string[]): boolean => wanted.every((w) => covers(held, w));

/** The wanted scopes `held` does not grant, in request order (for error descriptions). */
export const uncovered = (held: readonly string[], wanted: readonly string[]): string[] => dedupe(wanted.filter((w) => !covers(held, w)));

/**
 * What both sides grant: `{x ∈ a | covers(b, x)} ∪ {y ∈ b | covers(a, y)}`, deduped, `a`'s
 * entries first. Because the prefixes of one scope form a chain, this is exact: a scope is
 * covered by the result iff it is covered by both `a` and `b`. The result may contain
 * redundant entries (e.g. `t:*` and `t:a:*` when both sides hold both); we keep them rather
 * than minimise, since minimising changes nothing about what is granted.
 */
export function intersect(a: readonly string[], b: readonly string[]): string[] {
  return dedupe([...a.filter((x) => covers(b, x)), ...b.filter((y) => covers(a, y))]);
}

/** Intersection of several lists. With no lists at all the answer is `[]`: deny by default. */
export function intersectAll(...lists: ReadonlyArray<readonly string[]>): string[] {
  if (lists.length === 0) return [];
  return lists.slice(1).reduce<string[]>((acc, l) => intersect(acc, l), dedupe(lists[0]));
}

export const CRED_PREFIX = 'cred:';
/** `gw:NAME` grants every rule of upstream NAME at the gateway, `gw:NAME/RULE` one rule (or one MCP tool). */
export const GW_PREFIX = 'gw:';

/** Credential names granted by exact `cred:NAME` scopes (wildcards name no credential). */
export function credNames(scopes: readonly string[]): string[] {
  return dedupe(scopes.filter((s) => s.startsWith(CRED_PREFIX) && s.length > CRED_PREFIX.length && !isWildcard(s)).map((s) => s.slice(CRED_PREFIX.length)));
}

function dedupe(list: readonly string[]): string[] {
  return [...new Set(list)];
}
