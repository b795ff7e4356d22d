/**
 * Cross-file grant checks: a scope prefix that grants something a policy defines by name (`cred:`
 * → `credentials:`, `gw:` → `upstreams:`) is checked against the whole directory, since the
 * definition governing a session is its root policy's and a sub-agent lists the scope only to
 * receive it by delegation.
 */
import { CRED_PREFIX, covers, GW_PREFIX, isWildcard } from './scopes.ts';
import type { PolicyFile } from './schema.ts';
import type { LintProblem } from './types.ts';

type Path = ReadonlyArray<string | number>;

export type Position = { line: number; column: number };

/**
 * A scope prefix that grants something a policy defines by name. The definition governing a
 * session is its root policy's, so a sub-agent lists the scope to receive it by delegation and
 * need not define it: whether some policy defines it is a question for the whole directory.
 */
interface GrantKind {
  prefix: string;
  /** The block that defines the names, and what one entry is called (with its article), for messages. */
  block: string;
  noun: string;
  /** The names defined, each with the parts a scope may name below it (an upstream's rules or tools). */
  defined: (f: PolicyFile) => Array<{ name: string; parts?: Part }>;
  /** What a scope under `prefix` names: nothing for a wildcard over names; no part for a wildcard over parts. */
  parse: (scope: string) => { name: string; part?: string } | undefined;
}

/** The parts of one definition a scope may name: `gw:NAME/RULE` (kind http) or `gw:NAME/TOOL` (kind mcp). */
interface Part {
  noun: 'rule' | 'tool';
  names: string[];
}

const GRANT_KINDS: readonly GrantKind[] = [
  {
    prefix: CRED_PREFIX,
    block: 'credentials',
    noun: 'a credential',
    defined: (f) => Object.keys(f.credentials).map((name) => ({ name })),
    parse: (s) => (isWildcard(s) ? undefined : { name: s.slice(CRED_PREFIX.length) }),
  },
  {
    prefix: GW_PREFIX,
    block: 'upstreams',
    noun: 'an upstream',
    defined: (f) =>
      Object.entries(f.upstreams).map(([name, u]) => ({
        name,
        parts:
          u.kind === 'mcp'
            ? // gw:NAME/resources and gw:NAME/prompts grant what the upstream lists under resources: and prompts:.
              { noun: 'tool', names: [...(u.tools ?? []), ...(u.resources?.length ? ['resources'] : []), ...(u.prompts?.length ? ['prompts'] : [])] }
            : { noun: 'rule', names: Object.keys(u.rules) },
      })),
    parse: (s) => {
      const rest = s.slice(GW_PREFIX.length);
      const slash = rest.indexOf('/');
      if (slash < 0) return isWildcard(s) ? undefined : { name: rest };
      const part = rest.slice(slash + 1);
      // gw:NAME/* names the upstream, not one rule.
      return { name: rest.slice(0, slash), ...(isWildcard(s) ? {} : { part }) };
    },
  },
];

/** One file's grants and definitions by name, with their positions, for the cross-file grant checks. */
export interface FileGrants {
  policy: string;
  file: string;
  /** Scopes under a grant prefix that name something: `scopes[index]`. */
  uses: Array<{ kind: GrantKind; name: string; part?: string; scope: string; index: number } & Position>;
  /** Names defined under a kind's block, at their key. */
  defines: Array<{ kind: GrantKind; name: string; parts?: Part } & Position>;
  /** What the policy hands down (nothing when it may not delegate). */
  delegates: string[];
}

export function fileGrants(f: PolicyFile, file: string, at: (path: Path, part: 'key' | 'value') => Position): FileGrants {
  const uses: FileGrants['uses'] = [];
  const defines: FileGrants['defines'] = [];
  for (const kind of GRANT_KINDS) {
    f.scopes.forEach((scope, index) => {
      const named = scope.startsWith(kind.prefix) ? kind.parse(scope) : undefined;
      if (named) uses.push({ kind, ...named, scope, index, ...at(['scopes', index], 'value') });
    });
    for (const d of kind.defined(f)) defines.push({ kind, ...d, ...at([kind.block, d.name], 'key') });
  }
  return { policy: f.name, file, uses, defines, delegates: f.delegation.max_depth > 0 ? f.delegation.scopes : [] };
}

/**
 * A granting scope must name something some policy defines (the session root's definition is the
 * one used, so the holder need not define it itself). A definition is dead for delegation when
 * another policy defines the same name and hands the scope down: in that policy's sessions its own
 * definition governs, so this one applies only to sessions this policy opens itself — a warning.
 */
export function grantChecks(files: FileGrants[]): { problems: LintProblem[]; warnings: LintProblem[] } {
  const problems: LintProblem[] = [];
  const warnings: LintProblem[] = [];
  const definers = new Map<string, FileGrants[]>();
  for (const g of files) {
    for (const d of g.defines) {
      const key = d.kind.prefix + d.name;
      definers.set(key, [...(definers.get(key) ?? []), g]);
    }
  }
  for (const g of files) {
    for (const u of g.uses) {
      const problem = useProblem(u, g, definers.get(u.kind.prefix + u.name) ?? []);
      if (problem) problems.push({ file: g.file, line: u.line, column: u.column, message: `scopes[${u.index}]: ${u.scope} ${problem}` });
    }
    for (const d of g.defines) {
      const scope = d.kind.prefix + d.name;
      if (!g.uses.some((u) => u.kind === d.kind && u.name === d.name)) continue; // not receivable here (and an error of its own)
      const over = (definers.get(scope) ?? []).filter((p) => p !== g && handsDown(p.delegates, scope)).map((p) => p.policy);
      if (over.length === 0) continue;
      const who = over.length === 1 ? `policy ${over[0]} also defines ${d.name} and hands` : `policies ${over.join(', ')} also define ${d.name} and hand`;
      warnings.push({
        file: g.file,
        line: d.line,
        column: d.column,
        severity: 'warning',
        message: `${d.kind.block}.${d.name}: ${who} ${scope} down; in the sessions ${over.length === 1 ? 'it opens, its definition governs' : 'they open, their definitions govern'} (the session root's), so this one never applies to a ${scope} received there by delegation, only in sessions this policy's own agents open`,
      });
    }
  }
  return { problems, warnings };
}

/**
 * What is wrong with one granting scope, if anything: it must name something some policy defines,
 * and a part (`gw:NAME/RULE`) must be one of that definition's: this file's own when it defines
 * the name (its own sessions use it), else any definer's.
 */
function useProblem(u: FileGrants['uses'][number], g: FileGrants, definers: FileGrants[]): string | undefined {
  if (definers.length === 0) return `grants ${u.kind.noun} that no policy in this directory defines (under ${u.kind.block}:)`;
  if (u.part === undefined) return undefined;
  const defs = (p: FileGrants) => p.defines.filter((d) => d.kind === u.kind && d.name === u.name);
  const own = definers.includes(g) ? defs(g) : [];
  const candidates = own.length > 0 ? own : definers.flatMap(defs);
  if (candidates.some((d) => d.parts?.names.includes(u.part!))) return undefined;
  const parts = candidates[0]?.parts;
  if (!parts) return undefined;
  if (own.length > 0) {
    const listed = parts.names.length > 0 ? parts.names.join(', ') : 'none';
    return parts.noun === 'tool'
      ? `names tool ${u.part}, which upstream ${u.name} does not list under tools (tools: ${listed})`
      : `names rule ${u.part}, which upstream ${u.name} does not define (its rules: ${listed})`;
  }
  return `names ${parts.noun} ${u.part}, which no policy in this directory defines for upstream ${u.name}`;
}

/** Does a policy hand `scope` down, whole or in part (`gw:NAME/RULE` hands down some of `gw:NAME`)? */
const handsDown = (delegates: string[], scope: string): boolean => covers(delegates, scope) || delegates.some((d) => d.startsWith(`${scope}/`));
