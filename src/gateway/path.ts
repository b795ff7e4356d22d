/**
 * The path of a call, as rules see it and as the upstream gets it. Only paths whose decoded and
 * raw forms cannot disagree are accepted: no dot segments, no encoded slash, backslash or dot, no
 * empty segment, no control characters. Then matching the decoded path is matching what the
 * upstream will route, and a `..` can never climb out of a rule's prefix, however it is spelt.
 */
import { CordonError } from '../errors.ts';

export interface CallPath {
  /** As received (percent-encoding kept): what the upstream is sent. */
  raw: string;
  /** Decoded segments, for rule matching. */
  segments: string[];
  /** The query string without `?` ('' when none). Never audited: some APIs take keys there. */
  query: string;
}

const refuse = (why: string): CordonError => new CordonError('invalid_request', `path refused: ${why}`, { reason: 'path_refused' });

/** `rest` is everything after `/u/{upstream}` (starting with `/`, or empty). */
export function parseCallPath(rest: string): CallPath {
  const q = rest.indexOf('?');
  const raw = (q < 0 ? rest : rest.slice(0, q)) || '/';
  const query = q < 0 ? '' : rest.slice(q + 1);
  if (!raw.startsWith('/')) throw refuse('it must start with /');
  if (/[\u0000-\u0020\u007f\\#]/.test(raw)) throw refuse('it holds a control character, space, backslash or #');
  // Encoded /, \ and . would let the decoded path (what rules match) differ from what the upstream routes.
  if (/%(2f|5c|2e|00)/i.test(raw)) throw refuse('encoded slash, backslash, dot or NUL (%2f, %5c, %2e, %00)');
  const parts = raw.slice(1).split('/');
  const segments: string[] = [];
  for (let i = 0; i < parts.length; i++) {
    const p = parts[i];
    if (p === '' && i !== parts.length - 1) throw refuse('empty segment (//)');
    let d: string;
    try {
      d = decodeURIComponent(p);
    } catch {
      throw refuse('malformed percent-encoding');
    }
    if (d === '.' || d === '..') throw refuse('dot segment (. or ..)');
    segments.push(d);
  }
  return { raw, segments, query };
}

/** Glob match on segments: `*` one whole segment, `**` (last) any rest including none; anything else literally. */
export function matchesGlob(glob: string, path: readonly string[]): boolean {
  const g = glob.slice(1).split('/');
  for (let i = 0; i < g.length; i++) {
    if (g[i] === '**' && i === g.length - 1) return true;
    if (i >= path.length) return false;
    if (g[i] !== '*' && g[i] !== path[i]) return false;
    if (g[i] === '*' && path[i] === '') return false;
  }
  return g.length === path.length;
}
