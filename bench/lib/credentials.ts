import type { VaultDoubleProcess } from './extras.ts';
import type { Measure, Proc } from './floors.ts';
import { load } from './load.ts';
import { TARGET_TEXT } from './targets.ts';

/**
 * Credential issue: `POST /credentials/docs-vault` against the Vault double at full load, the
 * double's own latency straight to it, and the broker's overhead one request at a time (no
 * queueing): the broker's p50 less the double's p50 for each Vault call an issue makes.
 */

export interface CredentialBench {
  vaultDoubleDirect: { connections: number; rps: number; p50: number; p99: number };
  oneConnection: { brokerP50: number; brokerRps: number; doubleP50: number; doubleRps: number; vaultCallsPerIssue: number };
  brokerOverheadP50Ms: number;
}

export async function credentialScenario(
  url: string,
  token: string,
  vault: VaultDoubleProcess,
  opts: { broker: Proc; measure: Measure; skip: (id: string, why: string) => void; connections: number; durationSec: number },
): Promise<CredentialBench | undefined> {
  const { broker, measure, skip } = opts;
  const base = { connections: opts.connections, durationSec: opts.durationSec };
  const variants: Array<{ headers: Record<string, string>; body: string }> = [
    { headers: { authorization: `Bearer ${token}` }, body: '' },
    { headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: '{}' },
    { headers: { authorization: `Bearer ${token}`, 'content-type': 'application/x-www-form-urlencoded' }, body: '' },
  ];
  let chosen: (typeof variants)[number] | undefined;
  let last = '';
  for (const v of variants) {
    const r = await fetch(`${url}/credentials/docs-vault`, { method: 'POST', headers: v.headers, body: v.body || undefined });
    last = `${r.status} ${(await r.text()).slice(0, 300)}`;
    if (r.ok) {
      chosen = v;
      break;
    }
  }
  if (!chosen) {
    skip('credentials', `POST /credentials/docs-vault did not succeed: ${last}`);
    return undefined;
  }
  // The double's own time: the same call straight to it, at the same concurrency.
  const direct = await load({
    ...base,
    name: 'vault double direct',
    durationSec: Math.min(opts.durationSec, 4),
    url: `${vault.url}/v1/auth/token/create`,
    headers: { 'x-vault-token': vault.rootToken, 'content-type': 'application/json' },
    body: JSON.stringify({ policies: ['docs-rw'], ttl: '900s', meta: { agent: 'bench' } }),
  });
  const s = await measure(
    broker,
    'credential issue (Vault child token)',
    { ...base, name: 'credential issue', url: `${url}/credentials/docs-vault`, headers: chosen.headers, body: chosen.body },
    TARGET_TEXT.credentials,
    () => true,
    'POST /credentials/docs-vault with Bearer; the broker calls the Vault double (own process) auth/token/create',
  );
  // The broker's own overhead, without queueing: one request at a time, through the broker and straight to the double.
  const one = { connections: 1, durationSec: 3 };
  const direct1 = await load({
    ...one,
    name: 'vault double direct, 1 connection',
    url: `${vault.url}/v1/auth/token/create`,
    headers: { 'x-vault-token': vault.rootToken, 'content-type': 'application/json' },
    body: JSON.stringify({ policies: ['docs-rw'], ttl: '900s', meta: { agent: 'bench' } }),
  });
  const before = await vault.count();
  const broker1 = await load({
    ...one,
    name: 'credential issue, 1 connection',
    url: `${url}/credentials/docs-vault`,
    headers: chosen.headers,
    body: chosen.body,
  });
  const callsPerIssue = Math.round(((await vault.count()) - before) / Math.max(1, broker1.total));
  const overhead = broker1.p50 - callsPerIssue * direct1.p50;
  const out: CredentialBench = {
    vaultDoubleDirect: { connections: opts.connections, rps: direct.requestsPerSec, p50: direct.p50, p99: direct.p99 },
    oneConnection: {
      brokerP50: broker1.p50,
      brokerRps: broker1.requestsPerSec,
      doubleP50: direct1.p50,
      doubleRps: direct1.requestsPerSec,
      vaultCallsPerIssue: callsPerIssue,
    },
    brokerOverheadP50Ms: overhead,
  };
  console.log(
    `  Vault double alone: ${Math.round(direct.requestsPerSec)}/s p50 ${direct.p50.toFixed(2)} ms at ${opts.connections} connections; broker CPU ${s.brokerCpuUsPerReq?.toFixed(0)} µs/request`,
  );
  console.log(
    `  one request at a time: broker ${broker1.p50.toFixed(2)} ms p50; ${callsPerIssue} Vault calls per issue at ${direct1.p50.toFixed(2)} ms p50 each → broker overhead ${overhead.toFixed(2)} ms median`,
  );
  return out;
}
