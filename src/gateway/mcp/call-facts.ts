/**
 * What an `mcp.call` audit row says about a tool call: the tool, the SHA-256 of the arguments'
 * RFC 8785 canonical JSON (so a call can be matched to its arguments without the log holding
 * them), the argument names, and the values only when the upstream says `audit_args: full`.
 */
import { createHash } from 'node:crypto';
import canonicalize from 'canonicalize';
import type { Upstream } from '../../policy/types.ts';

/** Values larger than this (canonical JSON) are left out even with `audit_args: full`; the hash still covers them. */
const MAX_AUDITED_ARGS = 4096;
const MAX_NAMES = 64;

export function toolCallFacts(upstream: Upstream, params: Record<string, unknown> | undefined): Record<string, unknown> {
  const tool = typeof params?.name === 'string' ? params.name.slice(0, 256) : null;
  const args = params?.arguments ?? {};
  let canonical: string | undefined;
  try {
    canonical = canonicalize(args) ?? 'null';
  } catch {
    canonical = undefined;
  }
  const names =
    args !== null && typeof args === 'object' && !Array.isArray(args)
      ? Object.keys(args)
          .slice(0, MAX_NAMES)
          .map((k) => k.slice(0, 128))
      : [];
  const facts: Record<string, unknown> = {
    tool,
    args_sha256: canonical === undefined ? null : createHash('sha256').update(canonical).digest('hex'),
    arg_names: names,
  };
  if (upstream.auditArgs === 'full') {
    if (canonical !== undefined && canonical.length <= MAX_AUDITED_ARGS) facts.args = args;
    else facts.args_omitted = canonical === undefined ? 'not canonical JSON' : `larger than ${MAX_AUDITED_ARGS} bytes`;
  }
  return facts;
}

/** What the answer to a call says: a JSON-RPC error, the result's `isError`, or a 2026-07-28 input request. */
export function answerFacts(answer: Record<string, unknown>): { outcome: string; is_error: boolean | null } {
  if (answer.error !== undefined) return { outcome: 'error', is_error: null };
  const r = answer.result as Record<string, unknown> | undefined;
  if (r?.resultType === 'input_required') return { outcome: 'input_required', is_error: null };
  return { outcome: 'result', is_error: r?.isError === true };
}
