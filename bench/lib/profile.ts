import { readFileSync } from 'node:fs';

/** The parts of a V8 .cpuprofile (as written by `node --cpu-prof`) this summary reads. */
interface CpuProfile {
  nodes: Array<{ id: number; callFrame: { functionName: string; url: string; lineNumber: number }; children?: number[] }>;
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface ProfileSummary {
  totalMs: number;
  idleMs: number;
  busyMs: number;
  /** Self time by category, ms and share of busy time. */
  categories: Array<{ category: string; ms: number; pct: number }>;
  /** Top functions by self time. */
  top: Array<{ fn: string; where: string; category: string; ms: number; pct: number }>;
  /** Inclusive time of Cordon's own steps (synchronous parts only: awaits end a sample's stack). */
  inclusive: Array<{ fn: string; ms: number; pct: number }>;
}

/** Which layer a frame belongs to, from its script URL. Order matters: first match wins. */
const CATEGORIES: Array<[string, RegExp]> = [
  ['jose (JWT sign/verify)', /node_modules\/jose\//],
  ['knex (query building, pool, tx)', /node_modules\/(knex|tarn)\//],
  ['sqlite3 driver (JS side)', /node_modules\/sqlite3\//],
  [
    'oidc-provider + koa',
    /node_modules\/(oidc-provider|koa|@koa|koa-compose|koa-router|@koa\/router|jsesc|oidc-token-hash|quick-lru|eta|raw-body|co-body|inflation|content-type|cookies|keygrip|http-errors|statuses|on-finished|media-typer|type-is|accepts|negotiator|mime-types|mime-db|destroy|vary|delegates|http-assert|depd|fresh|encodeurl|escape-html|only|parseurl|content-disposition|cache-content-type|ylru|deep-equal|is-generator-function|koa-convert)\//,
  ],
  [
    'express',
    /node_modules\/(express|router|body-parser|finalhandler|send|serve-static|path-to-regexp|qs|proxy-addr|forwarded|ipaddr\.js|etag|merge-descriptors|utils-merge|cookie|cookie-signature|range-parser|setprototypeof|iconv-lite|safer-buffer|bytes|unpipe|side-channel[\w-]*|call-bound|get-intrinsic|es-errors|object-inspect|math-intrinsics|function-bind|has-symbols|gopd|es-object-atoms|dunder-proto|get-proto|call-bind-apply-helpers|es-define-property|hasown)\//,
  ],
  [
    'logging (pino)',
    /node_modules\/(pino|sonic-boom|thread-stream|fast-redact|quick-format-unescaped|atomic-sleep|on-exit-leak-free|safe-stable-stringify|pino-std-serializers|real-require)\//,
  ],
  ['tsx loader', /node_modules\/(tsx|esbuild|get-tsconfig)\//],
  ['undici (gateway upstream client)', /node_modules\/undici\//],
  ['other node_modules', /node_modules\//],
  ['cordon: audit chain', /\/src\/(audit\/|store\/audit\.ts)/],
  ['cordon: store', /\/src\/store\//],
  ['cordon: tokens + policy', /\/src\/(tokens|policy|keys)\//],
  ['cordon: http glue', /\/src\/http\//],
  ['cordon: gateway', /\/src\/gateway\//],
  ['cordon: other', /\/src\//],
  [
    'node: http/net/streams',
    /^node:(_http|http|net|stream|internal\/(http|streams|stream_base|net|js_stream|dns)|_stream)|node:internal\/(http|streams|net|stream_base_commons|timers|js_stream_socket)/,
  ],
  ['node: crypto', /^node:(crypto|internal\/crypto)/],
  ['node: other internals', /^node:/],
];

function categoryOf(url: string, fn: string): string {
  if (fn === '(idle)') return '(idle)';
  if (fn === '(garbage collector)') return 'V8: garbage collector';
  if (fn === '(program)') return 'V8/native: (program)';
  if (!url) return 'V8/native builtins (no script)';
  for (const [name, re] of CATEGORIES) if (re.test(url)) return name;
  return 'other';
}

const short = (url: string): string => url.replace(/^file:\/\/.*?\/node_modules\//, '~/').replace(/^file:\/\/.*?\/(src|bench|bin|migrations)\//, '$1/');

/** Cordon functions whose inclusive time is worth a line. */
const STEPS = [
  'startSession',
  'issueToken',
  'signAccessToken',
  'appendAudit',
  'rowHash',
  'canonical',
  'scrub',
  'activeAgentAndPolicy',
  'recordDenial',
  'compareClientSecret',
  'secretMatches',
  'runGrant',
  'handler',
  'find',
  'newId',
  'newJti',
  'loadTokenView',
  'verifySignature',
  'introspect',
  'authenticateClient',
  'delegate',
  'requireActiveToken',
  'handleReverse',
  'authenticateCall',
  'principalOfToken',
  'authoriseCall',
  'injectTemplate',
  'forward',
  'forwardableHeaders',
];

/**
 * Self and inclusive time from a .cpuprofile. `window` (µs on the monotonic clock, which V8's
 * profile timestamps and process.hrtime share) keeps only the samples taken under load, so
 * start-up (module loading, tsx compiling) does not pollute the picture.
 */
export function summarise(file: string, window?: { fromUs: number; toUs: number }, topN = 25): ProfileSummary {
  const p = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const self = new Map<number, number>(); // node id → µs
  let ts = p.startTime;
  for (let i = 0; i < p.samples.length; i++) {
    const d = p.timeDeltas[i] ?? 0;
    ts += d;
    if (window && (ts < window.fromUs || ts > window.toUs)) continue;
    self.set(p.samples[i], (self.get(p.samples[i]) ?? 0) + d);
  }

  const cat = new Map<string, number>();
  const fnSelf = new Map<string, { fn: string; where: string; category: string; us: number }>();
  const incl = new Map<string, number>();
  let total = 0;
  let idle = 0;
  for (const [id, us] of self) {
    const n = byId.get(id)!;
    const { functionName, url, lineNumber } = n.callFrame;
    const fn = functionName || '(anonymous)';
    const c = categoryOf(url, fn);
    total += us;
    if (c === '(idle)') {
      idle += us;
      continue;
    }
    cat.set(c, (cat.get(c) ?? 0) + us);
    const key = `${fn}@${url}:${lineNumber}`;
    const e = fnSelf.get(key) ?? { fn, where: url ? `${short(url)}:${lineNumber + 1}` : '', category: c, us: 0 };
    e.us += us;
    fnSelf.set(key, e);
    // Inclusive: credit each Cordon step once per sample stack.
    const seen = new Set<string>();
    for (let a: number | undefined = id; a !== undefined; a = parent.get(a)) {
      const f = byId.get(a)!.callFrame;
      if (/\/src\//.test(f.url) && STEPS.includes(f.functionName) && !seen.has(f.functionName)) {
        seen.add(f.functionName);
        incl.set(f.functionName, (incl.get(f.functionName) ?? 0) + us);
      }
    }
  }
  const busy = total - idle;
  const pct = (us: number) => Math.round((us / busy) * 1000) / 10;
  return {
    totalMs: total / 1000,
    idleMs: idle / 1000,
    busyMs: busy / 1000,
    categories: [...cat].sort((a, b) => b[1] - a[1]).map(([category, us]) => ({ category, ms: Math.round(us / 100) / 10, pct: pct(us) })),
    top: [...fnSelf.values()]
      .sort((a, b) => b.us - a.us)
      .slice(0, topN)
      .map((e) => ({ fn: e.fn, where: e.where, category: e.category, ms: Math.round(e.us / 100) / 10, pct: pct(e.us) })),
    inclusive: [...incl].sort((a, b) => b[1] - a[1]).map(([fn, us]) => ({ fn, ms: Math.round(us / 100) / 10, pct: pct(us) })),
  };
}

export function printSummary(s: ProfileSummary): void {
  console.log(
    `\nbroker main thread: ${(s.totalMs / 1000).toFixed(1)} s sampled, ${(s.busyMs / 1000).toFixed(1)} s busy (${Math.round((s.busyMs / s.totalMs) * 100)}%), ${(s.idleMs / 1000).toFixed(1)} s idle`,
  );
  console.log('\nself time by layer (share of busy main-thread time):');
  for (const c of s.categories) console.log(`  ${c.pct.toFixed(1).padStart(5)}%  ${c.ms.toFixed(0).padStart(6)} ms  ${c.category}`);
  console.log('\ntop functions by self time:');
  for (const t of s.top) console.log(`  ${t.pct.toFixed(1).padStart(5)}%  ${t.ms.toFixed(0).padStart(6)} ms  ${t.fn.padEnd(32)} ${t.where}  [${t.category}]`);
  console.log('\ninclusive (synchronous) time of Cordon steps:');
  for (const t of s.inclusive) console.log(`  ${t.pct.toFixed(1).padStart(5)}%  ${t.ms.toFixed(0).padStart(6)} ms  ${t.fn}`);
}
