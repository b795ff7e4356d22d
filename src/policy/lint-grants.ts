/**
 * Cross-file grant checks: a scope prefix that grants something a policy defines by name (`cred:`
 * → `credentials:`) is checked against the whole directory, since the definition governing a
 * session is its root policy's and a sub-agent lists the scope only to receive it by delegation.
 */
import { CRED_PREFIX, covers, isWildcard } from './scopes.ts';
import type { PolicyFile } from './schema.ts';
import type { LintProblem } from './types.ts';

type Path = ReadonlyArray<string | number>;

export type Position = { line: number; column: number };

/**
 * A scope prefix that grants something a policy defines by name. The definition governing a
 * session is its root policy's, so a sub-agent lists the scope to receive it by delegation and
 * need not define it: whether some policy defines it is a question for the whole directory.
 * (`gw:` → `upstreams` joins this table when the gateway does.)
 */
interface GrantKind {
  prefix: string;
  /** The block that defines the names, and what one entry is called, for messages. */
  block: string;
  noun: string;
  defined: (f: PolicyFile) => string[];
  /** The defined name a (non-wildcard) scope under `prefix` grants. */
  nameOf: (scope: string) => string;
}

const GRANT_KINDS: readonly GrantKind[] = [
  { prefix: CRED_PREFIX, block: 'credentials', noun: 'credential', defined: (f) => Object.keys(f.credentials), nameOf: (s) => s.slice(CRED_PREFIX.length) },
];

/** One file's grants and definitions by name, with their positions, for the cross-file grant checks. */
export interface FileGrants {
  policy: string;
  file: string;
  /** Non-wildcard scopes under a grant prefix: `scopes[index]`. */
  uses: Array<{ kind: GrantKind; name: string; scope: string; index: number } & Position>;
  /** Names defined under a kind's block, at their key. */
  defines: Array<{ kind: GrantKind; name: string } & Position>;
  /** What the policy hands down (nothing when it may not delegate). */
  delegates: string[];
}

export function fileGrants(f: PolicyFile, file: string, at: (path: Path, part: 'key' | 'value') => Position): FileGrants {
  const uses: FileGrants['uses'] = [];
  const defines: FileGrants['defines'] = [];
  for (const kind of GRANT_KINDS) {
    f.scopes.forEach((scope, index) => {
      if (scope.startsWith(kind.prefix) && !isWildcard(scope)) {
        uses.push({ kind, name: kind.nameOf(scope), scope, index, ...at(['scopes', index], 'value') });
      }
    });
    for (const name of kind.defined(f)) defines.push({ kind, name, ...at([kind.block, name], 'key') });
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
      if (definers.has(u.kind.prefix + u.name)) continue;
      problems.push({
        file: g.file,
        line: u.line,
        column: u.column,
        message: `scopes[${u.index}]: ${u.scope} grants a ${u.kind.noun} that no policy in this directory defines (under ${u.kind.block}:)`,
      });
    }
    for (const d of g.defines) {
      const scope = d.kind.prefix + d.name;
      if (!g.uses.some((u) => u.kind === d.kind && u.name === d.name)) continue; // not receivable here (and an error of its own)
      const over = (definers.get(scope) ?? []).filter((p) => p !== g && covers(p.delegates, scope)).map((p) => p.policy);
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
