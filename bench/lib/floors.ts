import { basic, type BenchEnv, type BrokerProcess } from './broker-proc.ts';
import { startAuxServer, type VaultDoubleProcess } from './extras.ts';
import type { LoadResult, LoadSpec } from './load.ts';

/**
 * Stack floors (bench/floor-server.ts): the chosen libraries doing the least a scenario needs and
 * nothing of Cordon's. A target above its floor cannot be met by any code on this stack here; each
 * speed target is a ratio to one of them, measured in the same run.
 */

export type Proc = Pick<BrokerProcess, 'child' | 'url' | 'how' | 'stop'>;
export type Measure = (
  proc: Proc,
  id: string,
  spec: LoadSpec,
  target: string,
  ok: (r: LoadResult) => boolean,
  note?: string,
) => Promise<LoadResult & { met: boolean; brokerCpuUsPerReq?: number }>;

/** The floors the targets are ratios to (bench/lib/targets.ts reads them by these ids). */
export const FLOOR_IDS = {
  sign: 'floor: oidc-provider /token + signature',
  introspect: 'floor: introspection, no database',
  credentials: 'floor: credential issue',
} as const;

/** Which floor each scenario's target needs: run with the scenario even when `floor` is not asked for. */
const FLOORS_FOR: Record<string, string[]> = {
  session: ['provider-sign'],
  delegate: ['provider-sign'],
  introspect: ['introspect-mem'],
  credentials: ['credentials'],
};

export const formHeaders = (auth: string) => ({ 'content-type': 'application/x-www-form-urlencoded', authorization: auth });

interface Floor {
  mode: string;
  id: string;
  bounds: string;
  note: string;
  request: (url: string, token: string) => LoadSpec;
}

function floors(connections: number, durationSec: number): Floor[] {
  const base = { connections, durationSec: Math.min(durationSec, 5) };
  const auth = basic('floor-client', 'floor-secret');
  const introspection = (name: string) => (url: string, token: string) => ({
    ...base,
    name,
    url: `${url}/`,
    headers: formHeaders(auth),
    body: new URLSearchParams({ token }).toString(),
  });
  return [
    {
      mode: 'express',
      id: 'floor: express, no work',
      bounds: 'ceiling of every express endpoint (introspection, revoke, credentials)',
      note: 'express + express.raw form body + res.json',
      request: (url) => ({ ...base, name: 'floor express', url: `${url}/`, headers: formHeaders(auth), body: 'token=x' }),
    },
    {
      mode: 'introspect-mem',
      id: FLOOR_IDS.introspect,
      bounds: 'introspection target: ≥ 0.8× this',
      note: 'express + Basic client secret check (keyed hash) + jose jwtVerify, RFC 7662 JSON; no database',
      request: introspection('floor introspect, no database'),
    },
    {
      mode: 'introspect',
      id: 'floor: introspection + database read',
      bounds: '(information: what one database read per introspection costs)',
      note: 'as above + one knex/sqlite3 point read (4 read connections)',
      request: introspection('floor introspect'),
    },
    {
      mode: 'provider',
      id: 'floor: oidc-provider /token, no work',
      bounds: 'ceiling of every /token scenario',
      note: 'oidc-provider behind express, static client_secret_basic client, a grant answering a constant',
      request: (url) => ({ ...base, name: 'floor provider', url: `${url}/token`, headers: formHeaders(auth), body: 'grant_type=urn%3Acordon%3Afloor' }),
    },
    {
      mode: 'provider-sign',
      id: FLOOR_IDS.sign,
      bounds: 'session start ≥ 0.6× (p99 ≤ 3×), delegation ≥ 0.5× this',
      note: 'as above + one jose EdDSA signature per request: a /token that signs, with a free database',
      request: (url) => ({ ...base, name: 'floor provider-sign', url: `${url}/token`, headers: formHeaders(auth), body: 'grant_type=urn%3Acordon%3Afloor' }),
    },
    {
      mode: 'credentials',
      id: FLOOR_IDS.credentials,
      bounds: 'credential issue ≥ 0.5× this',
      note: 'express + jose jwtVerify + one node-vault auth/token/create to the Vault double',
      request: (url, token) => ({ ...base, name: 'floor credentials', url: `${url}/`, headers: { authorization: `Bearer ${token}` }, body: '' }),
    },
  ];
}

/** Every floor with `floor`, else only those the chosen scenarios' targets are ratios to. */
export function floorModes(only: Set<string>): Set<string> {
  if (only.has('floor')) return new Set(floors(1, 1).map((f) => f.mode));
  return new Set([...only].flatMap((s) => FLOORS_FOR[s] ?? []));
}

export async function floorScenarios(
  be: BenchEnv,
  vault: VaultDoubleProcess | undefined,
  opts: { modes: Set<string>; measure: Measure; skip: (id: string, why: string) => void; connections: number; durationSec: number },
): Promise<void> {
  for (const f of floors(opts.connections, opts.durationSec)) {
    if (!opts.modes.has(f.mode)) continue;
    if (f.mode === 'credentials' && !vault) {
      opts.skip(f.id, 'the Vault double is not running');
      continue;
    }
    const server = await startAuxServer('floor-server.ts', [f.mode, be.dir, ...(vault ? [vault.url] : [])]);
    try {
      await opts.measure(
        { child: server.child, url: server.url, how: `bench/floor-server.ts ${f.mode}`, stop: async () => null },
        f.id,
        f.request(server.url, server.printed.TOKEN),
        f.bounds,
        () => true,
        f.note,
      );
    } finally {
      await server.stop();
    }
  }
}
