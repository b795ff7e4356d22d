import { createHash } from 'node:crypto';
import canonicalize from 'canonicalize';
import type { Q } from './db.ts';
import type { AuditEvent } from './audit-events.ts';
import { type AuditRow, type Decision, auditRows } from './audit.ts';

export const GENESIS_HASH = '0'.repeat(64);

export interface AuditEntry {
  at: number;
  event: AuditEvent;
  decision: Decision;
  agentId?: string | null;
  sid?: string | null;
  jti?: string | null;
  chain?: string[] | null;
  reason?: string | null;
  params?: Record<string, unknown>;
}

/** Keys whose values must never reach the log, wherever they appear in params. */
const SECRET_KEYS =
  /^(client_secret|secret|password|token|subject_token|actor_token|access_token|assertion|client_assertion|dpop|authorization|secret_id|secretaccesskey|sessiontoken|security_token|jwt)$/i;

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

/**
 * The exact text a row is hashed over: RFC 8785 (JCS) canonical JSON, so anyone can rebuild it.
 * For what rows hold (strings, integers, booleans, null, nested objects and arrays) it is byte for
 * byte what the hand-written encoder before it produced (sorted keys, JSON.stringify), so existing
 * chains verify unchanged. Values RFC 8785 cannot encode (a lone surrogate in params written before
 * they were made well-formed) keep that older encoding, which is the one they were hashed with.
 */
export function canonical(value: unknown): string {
  try {
    return canonicalize(value ?? null) as string;
  } catch {
    return legacyCanonical(value);
  }
}

/** The encoder rows were hashed with before RFC 8785: sorted keys at every level, JSON.stringify for the rest. */
function legacyCanonical(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value ?? null);
  if (Array.isArray(value)) return `[${value.map(legacyCanonical).join(',')}]`;
  const keys = Object.keys(value).sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${legacyCanonical((value as Record<string, unknown>)[k])}`).join(',')}}`;
}

/**
 * Makes a value exactly what it will be once stored as JSON and read back: well-formed strings
 * and keys (UTF-8 cannot carry a lone surrogate, and RFC 8785 refuses one), no undefined members,
 * non-finite numbers as null. The row is then hashed over what the database will hand back.
 */
function storable(value: unknown): unknown {
  if (typeof value === 'string') return text(value);
  if (typeof value === 'number') return Number.isFinite(value) ? value : null;
  if (value === null || typeof value !== 'object') return value === undefined ? null : value;
  if (Array.isArray(value)) return value.map(storable);
  return Object.fromEntries(
    Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .map(([k, v]) => [text(k), storable(v)]),
  );
}

/** The canonical text of a row, the part of its hash after `prev_hash` and a newline (exported for verifiers). */
export function rowCanonical(row: Omit<AuditRow, 'hash' | 'prevHash'>): string {
  // A field left undefined is hashed as null, as the database stores it.
  return canonical({
    seq: row.seq,
    at: row.at,
    event: row.event,
    decision: row.decision,
    agent_id: row.agentId ?? null,
    sid: row.sid ?? null,
    jti: row.jti ?? null,
    chain: row.chain ?? null,
    reason: row.reason ?? null,
    params: row.params ?? null,
  });
}

export function rowHash(row: Omit<AuditRow, 'hash'>): string {
  return createHash('sha256').update(row.prevHash).update('\n').update(rowCanonical(row)).digest('hex');
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
      chain: entry.chain ? (storable(entry.chain) as string[]) : null,
      reason: entry.reason ? text(printable(entry.reason).slice(0, 500)) : null,
      params: storable(scrub(entry.params ?? {})) as Record<string, unknown>,
      prevHash,
    };
    const row = { ...base, hash: rowHash(base) };
    prevHash = row.hash;
    return row;
  });
  await auditRows.insertMany(tx, rows);
  return rows;
}
