import type { Config } from '../config/index.ts';
import type { CredentialProvider, ProviderDeps, ProviderName } from './provider.ts';
import { StsProvider } from './aws-sts.ts';
import { VaultProvider } from './vault.ts';

export type Providers = Map<ProviderName, CredentialProvider>;

/** The providers the configuration turns on: VAULT_ADDR → vault, AWS_REGION → aws-sts. Absent means off. */
export function createProviders(config: Config, deps: ProviderDeps): Providers {
  const out: Providers = new Map();
  if (config.vault) out.set('vault', new VaultProvider(config.vault, deps));
  if (config.sts) out.set('aws-sts', new StsProvider(config.sts, deps));
  return out;
}

/** Which environment variable turns a provider on (for "not configured" messages). */
export const ENABLING_VARIABLE: Record<ProviderName, string> = { vault: 'VAULT_ADDR', 'aws-sts': 'AWS_REGION' };

export type { CredentialProvider, ProviderName } from './provider.ts';
