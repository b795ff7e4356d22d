/**
 * Durations in policy files: `30s`, `10m`, `1h30m`, `2d`, or a positive integer number of
 * seconds. Units must appear at most once, largest first, so `1h30m` is fine but `30m1h` is a
 * typo we refuse rather than guess at. Everything is whole seconds: token lifetimes are
 * `exp - iat` in seconds and sub-second precision would only invite rounding bugs.
 */
export class DurationError extends Error {
  readonly input: unknown;
  constructor(input: unknown, problem: string) {
    super(`invalid duration ${JSON.stringify(input) ?? String(input)}: ${problem}`);
    this.name = 'DurationError';
    this.input = input;
  }
}

const UNIT_SECONDS = { d: 86_400, h: 3_600, m: 60, s: 1 } as const;
const DURATION = /^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$/;
const HINT = 'use e.g. 30s, 10m, 1h30m, 2d, or whole seconds';

/** Seconds in `text`; throws DurationError for anything not a positive whole duration. */
export function parseDuration(text: string | number): number {
  if (typeof text === 'number') {
    if (!Number.isSafeInteger(text)) throw new DurationError(text, `not a whole number of seconds (${HINT})`);
    if (text <= 0) throw new DurationError(text, 'must be greater than zero');
    return text;
  }
  if (typeof text !== 'string') throw new DurationError(text, `expected a string or a number (${HINT})`);
  // A quoted "600" means the same as 600; accepted so YAML quoting style does not matter.
  const digits = /^\d+$/.test(text);
  const m = digits || text === '' ? null : DURATION.exec(text);
  if (!digits && !m) throw new DurationError(text, HINT);
  const [, d, h, min, s] = m ?? [];
  const total = digits ? Number(text) : Number(d ?? 0) * UNIT_SECONDS.d + Number(h ?? 0) * UNIT_SECONDS.h + Number(min ?? 0) * UNIT_SECONDS.m + Number(s ?? 0);
  if (!Number.isSafeInteger(total)) throw new DurationError(text, 'too large');
  if (total <= 0) throw new DurationError(text, 'must be greater than zero');
  return total;
}

/** The shortest spelling of `seconds` in the same grammar (for messages and `policy list`). */
export function formatDuration(seconds: number): string {
  if (!Number.isSafeInteger(seconds) || seconds <= 0) return `${seconds}s`;
  let rest = seconds;
  let out = '';
  for (const [unit, size] of Object.entries(UNIT_SECONDS)) {
    const n = Math.floor(rest / size);
    if (n > 0) out += `${n}${unit}`;
    rest -= n * size;
  }
  return out;
}
