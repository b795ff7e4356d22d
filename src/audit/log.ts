import { createHash } from 'node:crypto';
import type { Q } from '../store/db.ts';
import { type AuditRow, type Decision, auditRows } from '../store/audit.ts';

export const GENESIS_HASH = '0'.repeat(64);

export interface AuditEntry {
  at: number;
  event: string;
  decision: Decision;
  agentId?: string | null;
  sid?: string | null;
  jti?: string | null;
  chain?: string[] | null;
  reason?: string | null;
  params?: Record<string, unknown>;
}

/** Keys whose values must never reach the log, wherever they appear in params. */
const SECRET_KEYS = /^(client_secret|secret|password|token|subject_token|actor_token|access_token|assertion|client_assertion|dpop|authorization|secret_id|secretaccesskey|sessiontoken|security_token|jwt)$/i;

/** Drops secret-bearing keys and bounds sizes, so a caller cannot smuggle a secret or a megabyte into the log. */
export function scrub(params: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(params)) {
    if (v === undefined) continue;
    if (SECRET_KEYS.test(k)) {
      out[k] = '[redacted]';
      continue;
    }
    if (typeof v === 'string') out[k] = v.length > 300 ? `${v.slice(0, 300)}…` : v;
    else if (v !== null && typeof v === 'object' && !Array.isArray(v)) out[k] = scrub(v as Record<string, unknown>);
    else out[k] = v;
  }
  return out;
}

/**
 * Reasons often quote what the caller sent. Control characters are written as `\uXXXX`: PostgreSQL
 * text cannot hold NUL at all (the row, and with it the refusal's record, would be lost), and a
 * raw newline or escape sequence has no place in a line a person or a SIEM reads.
 */
export const printable = (s: string): string => s.replace(/[\u0000-\u001f\u007f]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);

/**
 * Text columns are stored as UTF-8, which cannot hold a lone surrogate (a caller can send one in
 * JSON, and slicing can split a pair): the database would store U+FFFD and the row would no longer
 * match its hash. So every text column is made well-formed before it is hashed.
 */
const text = (s: string): string => s.toWellFormed();
const textOrNull = (s: string | null | undefined): string | null => (s == null ? null : text(s));

/** Deterministic JSON: sorted keys at every level, so the hash does not depend on insertion order or the database. */
export function canonical(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value ?? null);
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
  const keys = Object.keys(value as object).sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonical((value as Record<string, unknown>)[k])}`).join(',')}}`;
}

export function rowHash(row: Omit<AuditRow, 'hash'>): string {
  const body = canonical({
    seq: row.seq,
    at: row.at,
    event: row.event,
    decision: row.decision,
    agent_id: row.agentId,
    sid: row.sid,
    jti: row.jti,
    chain: row.chain,
    reason: row.reason,
    params: row.params,
  });
  return createHash('sha256').update(row.prevHash).update('\n').update(body).digest('hex');
}

/**
 * Appends one row to the hash chain. Must be called inside the transaction that makes the
 * change it records, so the change and its row commit or fail together.
 */
export async function appendAudit(tx: Q, entry: AuditEntry): Promise<AuditRow> {
  return (await appendAuditMany(tx, [entry]))[0];
}

/** Appends several rows in order with one read of the chain head and one insert (group commit). */
export async function appendAuditMany(tx: Q, entries: readonly AuditEntry[]): Promise<AuditRow[]> {
  if (!entries.length) return [];
  await auditRows.lockChain(tx);
  const head = await auditRows.head(tx);
  let seq = head?.seq ?? 0;
  let prevHash = head?.hash ?? GENESIS_HASH;
  const rows: AuditRow[] = entries.map((entry) => {
    const base: Omit<AuditRow, 'hash'> = {
      seq: ++seq,
      at: entry.at,
      event: text(entry.event),
      decision: entry.decision,
      agentId: textOrNull(entry.agentId),
      sid: textOrNull(entry.sid),
      jti: textOrNull(entry.jti),
      chain: entry.chain ?? null,
      reason: entry.reason ? text(printable(entry.reason).slice(0, 500)) : null,
      params: scrub(entry.params ?? {}),
      prevHash,
    };
    const row = { ...base, hash: rowHash(base) };
    prevHash = row.hash;
    return row;
  });
  await auditRows.insertMany(tx, rows);
  return rows;
}
