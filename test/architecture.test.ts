/**
 * The shape of the house, enforced: every import in src/ goes downwards through the layers
 * (front doors → domain → store → foundations), there is no import cycle, and no file grows past
 * 400 lines. A new module must be placed in a layer below.
 */
import assert from 'node:assert/strict';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';

const SRC = resolve('src');

/** Layers, highest first. A module may import from its own layer (no cycles) or any layer below. */
const LAYERS: Array<{ name: string; dirs: string[] }> = [
  { name: 'entry', dirs: ['index.ts', 'runtime.ts', 'cli', 'http', 'sdk', 'gateway'] },
  { name: 'composition', dirs: ['broker.ts'] },
  {
    name: 'domain',
    dirs: ['agents', 'sessions', 'delegation', 'credentials', 'federation', 'revocation', 'tokens', 'audit', 'keys', 'policy', 'providers', 'observability'],
  },
  { name: 'store', dirs: ['store'] },
  { name: 'foundation', dirs: ['config', 'protocol', 'errors.ts', 'clock.ts', 'ids.ts', 'periodic.ts'] },
];

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? files(p) : p.endsWith('.ts') ? [p] : [];
  });
}

const layerOf = (file: string): number => {
  const rel = relative(SRC, file);
  const top = rel.split('/')[0];
  const i = LAYERS.findIndex((l) => l.dirs.includes(top));
  if (i < 0) throw new Error(`${rel} is in no layer: add its folder to LAYERS in test/architecture.test.ts`);
  return i;
};

/** Relative imports of a file (static `import … from`, `export … from`, and `import('…')`), resolved to files. */
function importsOf(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  const out: string[] = [];
  for (const m of text.matchAll(/(?:^|\n)\s*(?:import|export)\s[^'";]*?from\s+'(\.[^']+)'|import\(\s*'(\.[^']+)'\s*\)/g)) {
    const spec = m[1] ?? m[2];
    if (/^import\s+type\b/.test(m[0].trim())) continue; // types vanish at run time, but keep them honest below too
    out.push(resolve(dirname(file), spec));
  }
  return out;
}

/**
 * Type-only imports count for the layer rule too (a type from a higher layer couples the lower one
 * to it), with one exception: the Broker type of the composition root (broker.ts), which every
 * decision takes as its dependencies. Only front doors import broker.ts at run time.
 */
function allImportsOf(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  const out: string[] = [];
  for (const m of text.matchAll(/(?:^|\n)\s*(import\s+type\s[^;]*?|(?:import|export)\s[^;]*?)from\s+'(\.[^']+)'|import\(\s*'(\.[^']+)'\s*\)/g)) {
    const dep = resolve(dirname(file), m[2] ?? m[3]);
    if (m[1]?.startsWith('import type') && relative(SRC, dep) === 'broker.ts') continue;
    out.push(dep);
  }
  return out;
}

describe('architecture', () => {
  const all = files(SRC);
  const inSrc = (f: string): boolean => f.startsWith(`${SRC}/`);

  it('every import goes down the layers (front doors → composition → domain → store → foundations)', () => {
    const wrong: string[] = [];
    for (const f of all) {
      for (const dep of allImportsOf(f)) {
        if (!inSrc(dep)) continue; // migrations/ sit beside src/ and import nothing of it
        if (layerOf(dep) < layerOf(f))
          wrong.push(`${relative(SRC, f)} (${LAYERS[layerOf(f)].name}) imports ${relative(SRC, dep)} (${LAYERS[layerOf(dep)].name})`);
      }
    }
    assert.deepEqual(wrong, []);
  });

  it('there is no import cycle (run-time imports)', () => {
    const graph = new Map(all.map((f) => [f, importsOf(f).filter(inSrc)]));
    const state = new Map<string, 'visiting' | 'done'>();
    const cycles: string[] = [];
    const visit = (f: string, path: string[]): void => {
      if (state.get(f) === 'done') return;
      if (state.get(f) === 'visiting') {
        cycles.push([...path.slice(path.indexOf(f)), f].map((x) => relative(SRC, x)).join(' → '));
        return;
      }
      state.set(f, 'visiting');
      for (const d of graph.get(f) ?? []) visit(d, [...path, f]);
      state.set(f, 'done');
    };
    for (const f of all) visit(f, []);
    assert.deepEqual(cycles, []);
  });

  it('no file in src/ is over 400 lines', () => {
    const long = all.map((f) => [relative(SRC, f), readFileSync(f, 'utf8').split('\n').length] as const).filter(([, n]) => n > 400);
    assert.deepEqual(long, []);
  });
});
