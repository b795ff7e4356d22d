/**
 * Loading for the broker: all or nothing. A single lint problem anywhere refuses the whole
 * set, because running with "the policies that happened to parse" silently changes who may
 * do what.
 */
import { formatProblem, isError, lintPolicyDir } from './lint.ts';
import type { LintProblem, Policy } from './types.ts';

export class PolicyLintError extends Error {
  readonly problems: readonly LintProblem[];
  constructor(problems: readonly LintProblem[]) {
    const more = problems.length > 1 ? ` (and ${problems.length - 1} more problem${problems.length > 2 ? 's' : ''})` : '';
    super(`${formatProblem(problems[0])}${more}`);
    this.name = 'PolicyLintError';
    this.problems = problems;
  }
}

/** The loaded, immutable policies, by name. */
export class PolicySet {
  readonly #byName: ReadonlyMap<string, Policy>;
  constructor(policies: readonly Policy[]) {
    const sorted = [...policies].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    const byName = new Map<string, Policy>();
    for (const p of sorted) {
      if (byName.has(p.name)) throw new Error(`duplicate policy name ${p.name} (${byName.get(p.name)!.file}, ${p.file})`);
      byName.set(p.name, deepFreeze(p));
    }
    this.#byName = byName;
  }
  get(name: string): Policy | undefined {
    return this.#byName.get(name);
  }
  list(): Policy[] {
    return [...this.#byName.values()];
  }
  names(): string[] {
    return [...this.#byName.keys()];
  }
  get size(): number {
    return this.#byName.size;
  }
}

/**
 * Lint `dir` and return its policies; throws PolicyLintError (every problem attached, the
 * first in the message) if anything is wrong, PolicyDirError if the directory is missing.
 * An empty directory is a valid, empty set.
 */
export async function loadPolicies(dir: string): Promise<PolicySet> {
  const { policies, problems } = await lintPolicyDir(dir);
  // Warnings do not refuse the set (`cordon policy lint` shows them).
  const errors = problems.filter(isError);
  if (errors.length > 0) throw new PolicyLintError(errors);
  return new PolicySet(policies);
}

// Policies are shared by every request; freezing makes an accidental `policy.scopes.push` throw instead of widening grants.
function deepFreeze<T>(v: T): T {
  if (v !== null && typeof v === 'object' && !Object.isFrozen(v)) {
    Object.freeze(v);
    for (const k of Object.keys(v)) deepFreeze((v as Record<string, unknown>)[k]);
  }
  return v;
}
