/**
 * Policy lint: YAML → schema → cross-field rules, every problem tied to the file, line and
 * column of the offending key or value. The broker refuses to start on any problem (load.ts),
 * so lint is also the loader: there is no second, laxer parse path.
 */
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { isMap, isPair, isScalar, isSeq, LineCounter, parseDocument, type Document } from 'yaml';
import type { z } from 'zod';
import { credNames, covers } from './scopes.ts';
import { DEFAULT_KV_TTL, DEFAULT_SESSION_TTL, DEFAULT_TOKEN_TTL, NAME_PATTERN, policyFileSchema, type PolicyFile } from './schema.ts';
import type { CredentialSpec, LintProblem, Policy } from './types.ts';
import { type FileGrants, fileGrants, grantChecks } from './lint-grants.ts';
import { checkGateway, type Flag, injectedCredentials } from './lint-gateway.ts';

export type { LintProblem } from './types.ts';

/** The directory itself is missing or unreadable (a per-file problem is a LintProblem instead). */
export class PolicyDirError extends Error {
  readonly dir: string;
  constructor(dir: string, problem: string, cause?: unknown) {
    super(`policy directory ${dir}: ${problem}`, cause === undefined ? undefined : { cause });
    this.name = 'PolicyDirError';
    this.dir = dir;
  }
}

/** A problem without a severity is an error. */
export const isError = (p: LintProblem): boolean => p.severity !== 'warning';

export const formatProblem = (p: LintProblem): string => `${p.file}:${p.line}:${p.column}: ${p.severity === 'warning' ? 'warning: ' : ''}${p.message}`;

type Path = ReadonlyArray<string | number>;

export interface FileLint {
  /** Present only when the file has no problems. */
  policy?: Policy;
  problems: LintProblem[];
  /** The `name` value and where it sits, when it is a string, for the cross-file duplicate check. */
  name?: string;
  nameAt?: { line: number; column: number };
  /** Where each `federation` rule sits, for the cross-file single_use check. */
  federationAt?: Array<{ line: number; column: number }>;
  /** Present once the schema parsed (even with other problems), for the cross-file grant checks. */
  grants?: FileGrants;
}

/** Lint one policy file's text. Never throws for bad input: everything becomes a problem. */
export function lintPolicySource(file: string, text: string): FileLint {
  const problems: LintProblem[] = [];
  const lineCounter = new LineCounter();
  // uniqueKeys: a duplicated key is an error, not "last one wins" (which would hide a loosened limit).
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
  const at = (offset: number) => {
    const { line, col } = lineCounter.linePos(offset);
    return { line, column: col };
  };
  const report = (offset: number, message: string, severity?: 'warning') => problems.push({ file, ...at(offset), message, ...(severity ? { severity } : {}) });

  // Warnings too (unknown tags and the like): a policy is not the place for YAML we only half understand.
  for (const e of [...doc.errors, ...doc.warnings]) {
    const msg = e.code === 'MULTIPLE_DOCS' ? 'one policy per file: found a second YAML document (---)' : e.message.split('\n')[0];
    report(e.pos[0], `YAML: ${msg}`);
  }
  if (problems.length > 0) return { problems: sortProblems(problems) };
  if (doc.contents === null) {
    report(0, 'empty policy file');
    return { problems };
  }

  let input: unknown;
  try {
    input = doc.toJS({ maxAliasCount: 100 });
  } catch (e) {
    report(0, `YAML: ${(e as Error).message}`);
    return { problems };
  }

  const name = typeof (input as { name?: unknown } | null)?.name === 'string' ? (input as { name: string }).name : undefined;
  const nameAt = name === undefined ? undefined : at(locate(doc, ['name'], 'value'));
  // A problem about a key is labelled with the mapping holding it ("delegation: unknown key …").
  const flag = (path: Path, message: string, part: 'key' | 'value' = 'value', severity?: 'warning') => {
    const label = part === 'key' ? path.slice(0, -1) : path;
    report(locate(doc, path, part), label.length > 0 ? `${formatPath(label)}: ${message}` : message, severity);
  };

  const parsed = policyFileSchema.safeParse(input);
  if (!parsed.success) {
    for (const issue of parsed.error.issues) reportIssue(issue, input, flag);
    return { problems: sortProblems(problems), name, nameAt };
  }

  const f = parsed.data;
  checkSemantics(f, flag);
  const grants = fileGrants(f, file, (path, part) => at(locate(doc, path, part)));
  // Only errors refuse the policy; warnings travel with it.
  if (problems.some(isError)) return { problems: sortProblems(problems), name, nameAt, grants };
  return {
    policy: toPolicy(f, file),
    problems: sortProblems(problems),
    name,
    nameAt,
    federationAt: f.federation.map((_, i) => at(locate(doc, ['federation', i], 'value'))),
    grants,
  };
}

/** Cross-field rules the schema cannot express. */
function checkSemantics(f: PolicyFile, flag: Flag): void {
  if (!NAME_PATTERN.test(f.name)) flag(['name'], `policy name ${JSON.stringify(f.name)} must match ${NAME_PATTERN.source}`);

  const tokenTtl = f.token_ttl ?? DEFAULT_TOKEN_TTL;
  const sessionTtl = f.session_ttl ?? DEFAULT_SESSION_TTL;
  if (sessionTtl < tokenTtl) {
    flag(
      f.session_ttl !== undefined ? ['session_ttl'] : ['token_ttl'],
      `session_ttl (${sessionTtl}s) is shorter than token_ttl (${tokenTtl}s); no token may outlive its session`,
    );
  }

  f.delegation.scopes.forEach((s, i) => {
    if (!covers(f.scopes, s)) flag(['delegation', 'scopes', i], `${s} is handed down but not held in scopes`);
  });

  const granted = new Set(credNames(f.scopes));
  const injected = injectedCredentials(f);
  for (const [name, spec] of Object.entries(f.credentials)) {
    if (!NAME_PATTERN.test(name)) {
      flag(['credentials', name], `credential name ${JSON.stringify(name)} must match ${NAME_PATTERN.source}`, 'key');
    } else if (!granted.has(name) && !injected.has(name)) {
      flag(['credentials', name], `credential ${name} is defined but no cred:${name} scope grants it and no upstream injects it`, 'key');
    }
    if (spec.ttl !== undefined && spec.ttl > sessionTtl) {
      flag(['credentials', name, 'ttl'], `ttl (${spec.ttl}s) is longer than session_ttl (${sessionTtl}s)`);
    }
    if (spec.provider === 'aws-sts' && spec.revoke_via_iam === false) {
      flag(
        ['credentials', name, 'revoke_via_iam'],
        'revoke_via_iam is off: revoking a session or token cannot end these STS credentials before they expire (they still end with their token, by their session policy)',
        'value',
        'warning',
      );
    }
  }

  checkGateway(f, flag);

  f.federation.forEach((r, i) => {
    const n = (r.jwks_uri !== undefined ? 1 : 0) + (r.jwks_file !== undefined ? 1 : 0);
    if (n !== 1) flag(['federation', i], n === 0 ? 'needs jwks_uri or jwks_file' : 'takes jwks_uri or jwks_file, not both');
  });
}

function reportIssue(issue: z.core.$ZodIssue, input: unknown, flag: (path: Path, message: string, part?: 'key' | 'value') => void): void {
  const path = issue.path.filter((p): p is string | number => typeof p !== 'symbol');
  switch (issue.code) {
    case 'unrecognized_keys':
      for (const k of issue.keys) flag([...path, k], `unknown key ${JSON.stringify(k)}`, 'key');
      return;
    case 'invalid_type': {
      if (path.length === 0) return flag(path, 'a policy file must be a YAML mapping (name:, scopes:, …)');
      const value = valueAt(input, path);
      if (value === undefined) return flag(path, 'is required');
      if (value === null) return flag(path, `has no value (expected ${describeType(issue.expected)})`);
      return flag(path, `must be ${describeType(issue.expected)}`);
    }
    case 'invalid_union':
      if ('discriminator' in issue && issue.discriminator === 'provider') {
        const value = valueAt(input, path);
        if (value === undefined) return flag(path.slice(0, -1), 'credential needs a provider (vault or aws-sts)');
        return flag(path, `unknown provider ${JSON.stringify(value)} (vault or aws-sts)`);
      }
      return flag(path, issue.message);
    default:
      return flag(path, issue.message);
  }
}

const describeType = (t: string): string =>
  ({ object: 'a mapping', record: 'a mapping', array: 'a list', string: 'a string', number: 'a number', boolean: 'true or false' })[t] ?? t;

function valueAt(input: unknown, path: Path): unknown {
  let v = input;
  for (const seg of path) {
    if (v === null || typeof v !== 'object') return undefined;
    v = (v as Record<string | number, unknown>)[seg];
  }
  return v;
}

const formatPath = (path: Path): string => path.map((p, i) => (typeof p === 'number' ? `[${p}]` : i === 0 ? p : `.${p}`)).join('');

/**
 * Source offset for `path`: the key or value node when it exists, else the nearest enclosing
 * node that does (a missing required key points at the mapping that lacks it).
 */
function locate(doc: Document, path: Path, part: 'key' | 'value'): number {
  let node: unknown = doc.contents;
  let offset = (doc.contents as { range?: [number, number, number] } | null)?.range?.[0] ?? 0;
  for (let i = 0; i < path.length; i++) {
    const seg = path[i];
    let next: unknown;
    if (isMap(node)) {
      const pair = node.items.find((p) => isPair(p) && String(isScalar(p.key) ? p.key.value : p.key) === String(seg));
      if (!pair) return offset;
      if (i === path.length - 1 && part === 'key') return rangeStart(pair.key) ?? offset;
      next = pair.value;
      // `key:` with no value has no value node; point at the key.
      offset = rangeStart(next) ?? rangeStart(pair.key) ?? offset;
    } else if (isSeq(node) && typeof seg === 'number') {
      next = node.items[seg];
      offset = rangeStart(next) ?? offset;
    } else {
      return offset;
    }
    node = next;
  }
  return offset;
}

const rangeStart = (node: unknown): number | undefined => (node as { range?: [number, number, number] } | null | undefined)?.range?.[0];

function sortProblems(ps: LintProblem[]): LintProblem[] {
  return ps.sort((a, b) => a.line - b.line || a.column - b.column);
}

function toPolicy(f: PolicyFile, file: string): Policy {
  return {
    name: f.name,
    description: f.description,
    file,
    tokenTtl: f.token_ttl ?? DEFAULT_TOKEN_TTL,
    sessionTtl: f.session_ttl ?? DEFAULT_SESSION_TTL,
    scopes: [...new Set(f.scopes)],
    audiences: [...new Set(f.audiences)],
    delegation: { maxDepth: f.delegation.max_depth, scopes: [...new Set(f.delegation.scopes)] },
    credentials: withTtls(f.credentials, f.session_ttl ?? DEFAULT_SESSION_TTL),
    requireDpop: f.require_dpop,
    federation: f.federation,
    upstreams: Object.fromEntries(
      Object.entries(f.upstreams).map(([name, u]) => [
        name,
        {
          kind: u.kind,
          url: u.url,
          ...(u.credential !== undefined ? { credential: u.credential } : {}),
          ...(u.inject !== undefined ? { inject: u.inject } : {}),
          rules: u.rules,
          timeoutSec: u.timeout,
          maxBodyBytes: u.max_body,
          ...(u.tools ? { tools: u.tools } : {}),
          ...(u.args ? { args: u.args } : {}),
          ...(u.resources ? { resources: u.resources } : {}),
          ...(u.prompts ? { prompts: u.prompts } : {}),
          ...(u.audit_args ? { auditArgs: u.audit_args } : {}),
        },
      ]),
    ),
    egress: f.egress,
    limits: {
      ...(f.limits.calls_per_minute !== undefined ? { callsPerMinute: f.limits.calls_per_minute } : {}),
      ...(f.limits.on_denials
        ? {
            onDenials: {
              count: f.limits.on_denials.count,
              withinSec: f.limits.on_denials.within,
              ...(f.limits.on_denials.then ? { then: f.limits.on_denials.then } : {}),
            },
          }
        : {}),
    },
  };
}

/** A kv credential may leave out its ttl (how long the gateway caches the secret): the default, within the session. */
function withTtls(credentials: PolicyFile['credentials'], sessionTtl: number): Record<string, CredentialSpec> {
  return Object.fromEntries(Object.entries(credentials).map(([name, c]) => [name, { ...c, ttl: c.ttl ?? Math.min(DEFAULT_KV_TTL, sessionTtl) }]));
}

const isPolicyFileName = (n: string): boolean => !n.startsWith('.') && /\.ya?ml$/.test(n);

/**
 * Lint every `*.yaml` / `*.yml` file directly in `dir` (sorted by name, hidden files and
 * subdirectories skipped; symlinks followed, as Kubernetes ConfigMap mounts are symlinks).
 * `problems` are errors (the broker refuses the set); `warnings` never block loading.
 * Throws PolicyDirError only when the directory itself cannot be read.
 */
export async function lintPolicyDir(dir: string): Promise<{ policies: Policy[]; problems: LintProblem[]; warnings: LintProblem[] }> {
  let names: string[];
  try {
    const st = await stat(dir);
    if (!st.isDirectory()) throw new PolicyDirError(dir, 'is not a directory');
    names = (await readdir(dir)).filter(isPolicyFileName).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  } catch (e) {
    if (e instanceof PolicyDirError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    throw new PolicyDirError(dir, code === 'ENOENT' ? 'does not exist' : `cannot be read (${code ?? (e as Error).message})`, e);
  }

  const fileWarnings: LintProblem[] = [];
  const policies: Policy[] = [];
  const problems: LintProblem[] = [];
  const firstFileOf = new Map<string, string>();
  const federationAt = new Map<Policy, Array<{ line: number; column: number }>>();
  const grants: FileGrants[] = [];
  for (const name of names) {
    const file = join(dir, name);
    let bytes: Buffer;
    try {
      if (!(await stat(file)).isFile()) continue;
      bytes = await readFile(file);
    } catch (e) {
      problems.push({ file, line: 1, column: 1, message: `cannot read file (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})` });
      continue;
    }
    let text: string;
    try {
      text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
    } catch {
      problems.push({ file, line: 1, column: 1, message: 'not a YAML file: contents are not UTF-8 text' });
      continue;
    }
    const result = lintPolicySource(file, text);
    // A file's warnings (say revoke_via_iam: false) are reported apart: they never refuse the set.
    problems.push(...result.problems.filter(isError));
    fileWarnings.push(...result.problems.filter((p) => !isError(p)));
    // Checked even when the file has other problems, so one run shows them all.
    if (result.name !== undefined) {
      const first = firstFileOf.get(result.name);
      if (first !== undefined) {
        const pos = result.nameAt ?? { line: 1, column: 1 };
        problems.push({ file, ...pos, message: `name: policy ${result.name} is already defined in ${first}` });
        continue;
      }
      firstFileOf.set(result.name, file);
    }
    if (result.grants) grants.push(result.grants);
    if (result.policy) {
      policies.push(result.policy);
      federationAt.set(result.policy, result.federationAt ?? []);
    }
  }
  problems.push(...singleUseConflicts(policies, federationAt));
  const cross = grantChecks(grants);
  problems.push(...cross.problems);
  return { policies, problems, warnings: [...fileWarnings, ...cross.warnings] };
}

/**
 * An identity (issuer, claim = match) that one rule makes single_use must be single_use wherever it
 * is trusted: otherwise a replayed token still opens sessions through the other rule.
 */
function singleUseConflicts(policies: Policy[], at: Map<Policy, Array<{ line: number; column: number }>>): LintProblem[] {
  const identity = (r: Policy['federation'][number]) => JSON.stringify([r.issuer, r.claim, r.match]);
  const strict = new Map<string, Policy>();
  for (const p of policies) for (const r of p.federation) if (r.single_use && !strict.has(identity(r))) strict.set(identity(r), p);
  const out: LintProblem[] = [];
  for (const p of policies) {
    p.federation.forEach((r, i) => {
      const owner = strict.get(identity(r));
      if (r.single_use || !owner) return;
      const pos = at.get(p)?.[i] ?? { line: 1, column: 1 };
      out.push({
        file: p.file,
        ...pos,
        message: `federation[${i}]: ${r.issuer} ${r.claim}=${r.match} is single_use in policy ${owner.name}, so it must be here too (a replayed token would open sessions through this rule): add single_use: true`,
      });
    });
  }
  return out;
}
