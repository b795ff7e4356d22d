/**
 * Everything the CLI prints goes through here: aligned tables and key/value blocks for people,
 * JSON for machines, and errors as one `cordon: …` line (never a stack trace).
 */
import { once } from 'node:events';
import { CordonError, ConfigError } from '../errors.ts';
import { PolicyLintError } from '../policy/load.ts';
import { PolicyDirError } from '../policy/lint.ts';
import { DurationError } from '../policy/duration.ts';
import { driverMessage } from '../store/db.ts';

/** Where a command writes. `main` uses the process streams; tests pass their own to capture. */
export interface Io {
  /** Standard output. May return a promise when the stream needs draining (long exports). */
  out(text: string): void | Promise<void>;
  /** Standard error. */
  err(text: string): void;
  /** Whether stdout is a terminal (colour, hints). */
  isTTY?: boolean;
}

export const processIo = (): Io => ({
  out(text) {
    if (!process.stdout.write(text)) return once(process.stdout, 'drain').then(() => undefined);
  },
  err(text) {
    process.stderr.write(text);
  },
  isTTY: Boolean(process.stdout.isTTY) && !process.env.NO_COLOR,
});

/** A failure the CLI reports as one line and an exit code (1 = failed, 2 = usage). */
export class CliError extends Error {
  readonly exitCode: number;
  constructor(message: string, exitCode = 1) {
    super(message);
    this.name = 'CliError';
    this.exitCode = exitCode;
  }
}

export const usage = (message: string): CliError => new CliError(message, 2);

/** An error from the SQLite or PostgreSQL driver, or a failed connection to the database. */
function isDatabaseError(e: unknown): boolean {
  const x = e as { code?: unknown; severity?: unknown; routine?: unknown; message?: unknown };
  if (typeof x?.code === 'string' && x.code.startsWith('SQLITE_')) return true;
  if (typeof x?.severity === 'string' && typeof x?.routine === 'string') return true; // pg server errors
  return typeof x?.message === 'string' && /^(insert into|update|select|delete from) /i.test(x.message);
}

/** The one line an error becomes. */
export function errorLine(e: unknown): string {
  let msg: string;
  if (e instanceof CordonError) msg = e.description;
  else if (e instanceof ConfigError || e instanceof PolicyLintError || e instanceof PolicyDirError || e instanceof DurationError || e instanceof CliError)
    msg = e.message;
  else if (isDatabaseError(e)) msg = `database error: ${driverMessage(e)} (DATABASE_URL)`;
  else if (e instanceof Error) {
    // Node system errors (ENOENT, EACCES…) name their code; other errors' messages stand alone.
    const code = (e as NodeJS.ErrnoException).code;
    msg = typeof code === 'string' && /^E[A-Z0-9_]+$/.test(code) && !e.message.includes(code) ? `${e.message} (${code})` : e.message;
  } else msg = String(e);
  // One line, whatever the message held, and nothing a terminal would act on.
  return printable(msg.replace(/\s*\n\s*/g, ' ').trim()) || 'unknown error';
}

/**
 * Text from agents and the database (tasks, reasons, kids) shown on an admin's terminal: control
 * characters are written as \uXXXX, so nobody can clear the screen or forge a table row. The
 * only escapes kept are the colour and weight codes `style()` itself writes.
 */
export const printable = (s: string): string =>
  s.replace(
    /(\x1b\[(?:1|2|22|31|32|33|39)m)|[\u0000-\u001f\u007f-\u009f]/g,
    (m, sgr: string | undefined) => sgr ?? `\\u${m.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );

export function printJson(io: Io, value: unknown): void | Promise<void> {
  return io.out(`${JSON.stringify(value, null, 2)}\n`);
}

/** Aligned columns; the last column is not padded. */
export function table(headers: string[], rows: Array<Array<string | number | null | undefined>>): string {
  const cells = [headers, ...rows.map((r) => r.map((c) => (c === null || c === undefined || c === '' ? '-' : printable(String(c)))))];
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => width(r[i] ?? ''))));
  return cells
    .map((r) =>
      r
        .map((c, i) => (i === r.length - 1 ? c : c + ' '.repeat(widths[i] - width(c))))
        .join('  ')
        .trimEnd(),
    )
    .join('\n')
    .concat('\n');
}

/** `key  value` lines with the keys aligned. */
export function kv(pairs: Array<[string, string | number | null | undefined]>, indent = ''): string {
  const w = Math.max(...pairs.map(([k]) => k.length));
  return pairs
    .map(([k, v]) => `${indent}${k.padEnd(w)}  ${v === null || v === undefined || v === '' ? '-' : v}`)
    .join('\n')
    .concat('\n');
}

// Box-drawing characters and ANSI sequences do not count towards alignment width.
const width = (s: string): number => [...s.replace(/\x1b\[[0-9;]*m/g, '')].length;

export const iso = (ms: number | null | undefined): string | null => (ms === null || ms === undefined ? null : new Date(ms).toISOString());

/** `2026-01-01 12:00:00Z`: to the second, UTC. */
export const fmtTime = (ms: number | null | undefined): string => {
  if (ms === null || ms === undefined) return '-';
  const d = new Date(ms);
  // A time a token claims can be anything (exp: 1e308): say so rather than fail on it.
  return Number.isNaN(d.getTime())
    ? `(out of range: ${String(ms).slice(0, 30)})`
    : d
        .toISOString()
        .replace('T', ' ')
        .replace(/\.\d{3}Z$/, 'Z');
};

/** A compact duration: 45s, 14m, 1h59m, 3d4h. */
export function fmtDuration(sec: number): string {
  sec = Math.max(0, Math.round(sec));
  if (sec < 60) return `${sec}s`;
  if (sec < 3600) return `${Math.floor(sec / 60)}m${sec % 60 ? `${sec % 60}s` : ''}`;
  if (sec < 86400) return `${Math.floor(sec / 3600)}h${Math.floor((sec % 3600) / 60) ? `${Math.floor((sec % 3600) / 60)}m` : ''}`;
  return `${Math.floor(sec / 86400)}d${Math.floor((sec % 86400) / 3600) ? `${Math.floor((sec % 86400) / 3600)}h` : ''}`;
}

/** `in 14m` / `3m ago`. */
export const fmtRel = (ms: number, now: number): string => (ms >= now ? `in ${fmtDuration((ms - now) / 1000)}` : `${fmtDuration((now - ms) / 1000)} ago`);

export const fmtWhen = (ms: number | null | undefined, now: number): string => (ms === null || ms === undefined ? '-' : `${fmtTime(ms)} (${fmtRel(ms, now)})`);

/** Shortens long values in tables (scopes, reasons) without hiding that they were cut. */
export const clip = (s: string | null | undefined, n = 60): string => (!s ? '-' : s.length > n ? `${s.slice(0, n - 1)}…` : s);

/** Minimal styling, only on a terminal. */
export const style = (io: Io) => ({
  bold: (s: string) => (io.isTTY ? `\x1b[1m${s}\x1b[22m` : s),
  dim: (s: string) => (io.isTTY ? `\x1b[2m${s}\x1b[22m` : s),
  red: (s: string) => (io.isTTY ? `\x1b[31m${s}\x1b[39m` : s),
  green: (s: string) => (io.isTTY ? `\x1b[32m${s}\x1b[39m` : s),
  yellow: (s: string) => (io.isTTY ? `\x1b[33m${s}\x1b[39m` : s),
});

/** POSIX shell single-quoting, only where needed (base64 and ids pass through as they are). */
export const shellQuote = (v: string): string => (/^[A-Za-z0-9_./:+=@%,-]+$/.test(v) ? v : `'${v.replace(/'/g, `'\\''`)}'`);
