/** policy/: loading, schema, scope algebra and lint. Import from here or from the concept's own file. */
export { parseDuration, formatDuration, DurationError } from './duration.ts';
export { parseScope, formatScope, isScopeToken, isWildcard, covers, coversAll, uncovered, intersect, intersectAll, credNames, CRED_PREFIX } from './scopes.ts';
export type { CredentialSpec, FederationRule, Policy, LintProblem } from './types.ts';
export { lintPolicyDir, lintPolicySource, formatProblem, PolicyDirError, type FileLint } from './lint.ts';
export { loadPolicies, PolicySet, PolicyLintError } from './load.ts';
