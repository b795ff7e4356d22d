/**
 * Signed checkpoints of the audit chain, kept outside the database.
 *
 * The chain alone proves order and content, not that nobody with write access to the database
 * rewrote it from some row on and recomputed every hash after it (or cut its tail). So the broker
 * signs the chain head (seq, hash) with its signing key every minute and at shutdown, and appends
 * the JWS to a file in CORDON_AUDIT_DIR. `cordon audit verify` checks every checkpoint with the
 * public key derived from the private key files in CORDON_KEY_DIR (never from the database, which
 * the same attacker can write) and requires the row at each checkpoint's seq to carry exactly the
 * signed hash; the chain's links then fix every row before it.
 */
import { createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { CompactSign, compactVerify, decodeProtectedHeader, type JWK } from 'jose';
import { type Every, periodic } from '../periodic.ts';
import type { Broker } from '../broker.ts';
import { epochSeconds } from '../clock.ts';
import type { Q } from '../store/db.ts';
import { auditRows } from '../store/audit.ts';
import { type VerifyResult, verifyAudit } from './verify.ts';

/** The JWS `typ` of a checkpoint: never an access token's, so neither is taken for the other. */
export const CHECKPOINT_TYP = 'cordon-audit-checkpoint+jwt';
export const CHECKPOINT_INTERVAL_MS = 60_000;
export const CHECKPOINT_FILE = 'checkpoints.jws';

export const checkpointPath = (auditDir: string): string => join(auditDir, CHECKPOINT_FILE);

export interface ChainHead {
  seq: number;
  hash: string;
}

/** A checkpoint as signed: the chain head and when (`iat`, seconds), by which key. */
export interface Checkpoint extends ChainHead {
  iat: number;
  kid: string;
  jws: string;
}

/** One line of the sink, decoded but not verified (for export, where the consumer verifies). */
export interface SinkLine {
  line: number;
  jws: string;
  /** Absent when the line does not decode as a checkpoint at all. */
  checkpoint?: Checkpoint;
}

// --- writing ---------------------------------------------------------------------------------

/** Signs `head` with the broker's active signing key. */
export async function signCheckpoint(b: Broker, head: ChainHead): Promise<Checkpoint> {
  const { kid, alg, privateKey } = (await b.keys.fresh()).active();
  const iat = epochSeconds(b.clock);
  const payload = { iss: b.config.issuer, iat, seq: head.seq, hash: head.hash };
  const jws = await new CompactSign(new TextEncoder().encode(JSON.stringify(payload))).setProtectedHeader({ alg, kid, typ: CHECKPOINT_TYP }).sign(privateKey);
  return { ...head, iat, kid, jws };
}

/** Appends one JWS line to the sink (directory 0700, file 0600) and waits until it is on disk. */
export async function appendToSink(auditDir: string, jws: string): Promise<void> {
  if (!existsSync(auditDir)) mkdirSync(auditDir, { recursive: true, mode: 0o700 });
  const fh = await open(checkpointPath(auditDir), 'a', 0o600);
  try {
    await fh.chmod(0o600); // the mode applies only when the file is created
    await fh.appendFile(`${jws}\n`);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/**
 * Signs the current chain head and appends it to the sink and the log. Writes nothing when the
 * chain is empty or its head is still `last` (the previous checkpoint this process wrote).
 */
export async function writeCheckpoint(b: Broker, last?: ChainHead): Promise<Checkpoint | undefined> {
  const head = await auditRows.head(b.db);
  if (!head || (last && head.seq === last.seq && head.hash === last.hash)) return undefined;
  const cp = await signCheckpoint(b, head);
  await appendToSink(b.config.auditDir, cp.jws);
  b.log.info({ audit_checkpoint: { seq: cp.seq, hash: cp.hash, kid: cp.kid, jws: cp.jws } }, 'audit checkpoint');
  return cp;
}

export interface CheckpointTimer {
  /** Writes a checkpoint now if the head moved (waits for one in progress first). */
  runNow(): Promise<Checkpoint | undefined>;
  /** Stops the timer and writes a last checkpoint if the head moved since the previous one. */
  stop(): Promise<void>;
}

export type { Every } from '../periodic.ts';

/** Checkpoints every `intervalMs` while the broker runs, one at a time, and once more at stop; a failure is logged and retried at the next tick. */
export function startCheckpoints(b: Broker, opts: { intervalMs?: number; every?: Every } = {}): CheckpointTimer {
  let last: ChainHead | undefined;
  return periodic(
    async () => {
      const cp = await writeCheckpoint(b, last);
      if (cp) last = { seq: cp.seq, hash: cp.hash };
      return cp;
    },
    {
      intervalMs: opts.intervalMs ?? CHECKPOINT_INTERVAL_MS,
      every: opts.every,
      finalRun: true,
      onError: (e) => b.log.error({ err: (e as Error).message }, 'audit checkpoint failed; retrying at the next interval'),
    },
  );
}

// --- reading and verifying -------------------------------------------------------------------

const KID = /^[A-Za-z0-9_-]{1,64}$/;

function decodeCheckpoint(jws: string): Checkpoint | undefined {
  try {
    const h = decodeProtectedHeader(jws);
    const p = JSON.parse(Buffer.from(jws.split('.')[1], 'base64url').toString('utf8'));
    if (typeof h.kid !== 'string' || !Number.isSafeInteger(p.seq) || p.seq < 1 || typeof p.hash !== 'string' || !/^[0-9a-f]{64}$/.test(p.hash))
      return undefined;
    return { seq: p.seq, hash: p.hash, iat: p.iat, kid: h.kid, jws };
  } catch {
    return undefined;
  }
}

/** Every line of the sink in file order; none when there is no sink file yet. */
export function readSink(auditDir: string): SinkLine[] {
  const path = checkpointPath(auditDir);
  if (!existsSync(path)) return [];
  const out: SinkLine[] = [];
  readFileSync(path, 'utf8')
    .split('\n')
    .forEach((raw, i) => {
      const jws = raw.trim();
      if (jws) out.push({ line: i + 1, jws, checkpoint: decodeCheckpoint(jws) });
    });
  return out;
}

/**
 * The public key for `kid`, derived from its private JWK file in the key directory: the database's
 * signing_keys table is not trusted here, since whoever rewrites the audit table can rewrite it too.
 */
export function checkpointKey(keyDir: string, kid: string): { alg: string; key: KeyObject; jwk: JWK } | undefined {
  if (!KID.test(kid)) return undefined;
  const file = join(keyDir, `${kid}.jwk.json`);
  if (!existsSync(file)) return undefined;
  const priv = JSON.parse(readFileSync(file, 'utf8'));
  const key = createPublicKey(createPrivateKey({ key: priv, format: 'jwk' }));
  return { alg: priv.alg, key, jwk: { ...(key.export({ format: 'jwk' }) as JWK), kid, alg: priv.alg, use: 'sig' } };
}

/** The public JWKs of the keys that signed `lines`, as far as the key directory holds them. */
export function checkpointJwks(keyDir: string, lines: readonly SinkLine[]): JWK[] {
  const kids = [...new Set(lines.flatMap((l) => (l.checkpoint ? [l.checkpoint.kid] : [])))];
  return kids.flatMap((kid) => {
    try {
      const k = checkpointKey(keyDir, kid);
      return k ? [k.jwk] : [];
    } catch {
      return []; // an unreadable key file: the consumer's check of that checkpoint fails, as `audit verify` does
    }
  });
}

export type CheckpointsResult = { ok: true; checkpoints: Checkpoint[] } | { ok: false; line: number; seq: number | null; problem: string };

/** Checks every line's signature, `typ` and payload, and that checkpoints never go back in the chain. */
export async function verifySink(lines: readonly SinkLine[], keyDir: string): Promise<CheckpointsResult> {
  const keys = new Map<string, ReturnType<typeof checkpointKey>>();
  const out: Checkpoint[] = [];
  for (const { line, jws, checkpoint: cp } of lines) {
    const fail = (problem: string): CheckpointsResult => ({
      ok: false,
      line,
      seq: cp?.seq ?? null,
      problem: `checkpoint on line ${line} of ${CHECKPOINT_FILE}${cp ? ` (row ${cp.seq})` : ''} ${problem}`,
    });
    if (!cp) return fail('is not a checkpoint (no kid, seq or hash)');
    if (!keys.has(cp.kid)) {
      try {
        keys.set(cp.kid, checkpointKey(keyDir, cp.kid));
      } catch {
        return fail(`was signed by key ${cp.kid}, whose file in CORDON_KEY_DIR is not a readable private JWK`);
      }
    }
    const k = keys.get(cp.kid);
    if (!k) return fail(`was signed by key ${cp.kid}, which is not in CORDON_KEY_DIR`);
    try {
      const { protectedHeader } = await compactVerify(jws, k.key, { algorithms: [k.alg] });
      if (protectedHeader.typ !== CHECKPOINT_TYP) return fail(`has typ ${protectedHeader.typ ?? '(none)'}, not ${CHECKPOINT_TYP}`);
    } catch {
      return fail('does not verify (bad signature)');
    }
    const prev = out[out.length - 1];
    // Equal is fine: a restarted broker, or two replicas, may sign the same head.
    if (prev && cp.seq < prev.seq) return fail(`comes after a checkpoint of row ${prev.seq}: checkpoints are out of order`);
    out.push(cp);
  }
  return { ok: true, checkpoints: out };
}

export type CheckedResult =
  (VerifyResult & { ok: true; checkpoints: number; checkpointSeq: number | null }) | (VerifyResult & { ok: false; checkpointLine?: number });

/** The whole check: the sink's checkpoints, then the chain against them (and `head`, when given). */
export async function verifyWithCheckpoints(q: Q, dirs: { keyDir: string; auditDir: string }, head?: string): Promise<CheckedResult> {
  const sink = await verifySink(readSink(dirs.auditDir), dirs.keyDir);
  if (!sink.ok) return { ok: false, rows: 0, brokenSeq: sink.seq ?? 0, problem: sink.problem, checkpointLine: sink.line };
  const r = await verifyAudit(q, undefined, head, sink.checkpoints);
  if (!r.ok) return r;
  const latest = sink.checkpoints[sink.checkpoints.length - 1];
  return { ...r, checkpoints: sink.checkpoints.length, checkpointSeq: latest?.seq ?? null };
}
