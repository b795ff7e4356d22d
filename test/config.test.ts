import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { DEFAULTS, OPTIONAL, loadConfig } from '../src/config/index.ts';
import { ConfigError } from '../src/errors.ts';

describe('config', () => {
  it('.env.example lists every variable, defaults with their default value', () => {
    const text = readFileSync('.env.example', 'utf8');
    for (const [k, v] of Object.entries(DEFAULTS)) assert.match(text, new RegExp(`^${k}=${v.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}$`, 'm'), k);
    for (const k of OPTIONAL) assert.match(text, new RegExp(`^# ${k}=`, 'm'), k);
  });

  it('defaults give a working embedded configuration', () => {
    const c = loadConfig({});
    assert.equal(c.issuer, 'http://127.0.0.1:8080');
    assert.equal(c.port, 8080);
    assert.match(c.databaseUrl, /^sqlite:/);
    assert.equal(c.vault, undefined);
    assert.equal(c.sts, undefined);
  });

  it('CORDON_RETENTION reads 7d by default, one unit or whole seconds otherwise', () => {
    assert.equal(loadConfig({}).retentionMs, 7 * 86400_000);
    assert.equal(loadConfig({ CORDON_RETENTION: '2m' }).retentionMs, 120_000);
    assert.equal(loadConfig({ CORDON_RETENTION: '12h' }).retentionMs, 12 * 3600_000);
    assert.equal(loadConfig({ CORDON_RETENTION: '90' }).retentionMs, 90_000);
  });

  it('VAULT_TOKEN_ROLE names the token role children are created through; CORDON_VAULT_ALLOW_ROOT=1 accepts a root broker token', () => {
    const base = { VAULT_ADDR: 'http://127.0.0.1:8200', VAULT_TOKEN: 't' };
    assert.equal(loadConfig(base).vault?.tokenRole, undefined);
    assert.equal(loadConfig(base).vault?.allowRoot, false);
    const c = loadConfig({ ...base, VAULT_TOKEN_ROLE: 'cordon-agents', CORDON_VAULT_ALLOW_ROOT: '1' });
    assert.equal(c.vault?.tokenRole, 'cordon-agents');
    assert.equal(c.vault?.allowRoot, true);
    assert.equal(loadConfig({ ...base, CORDON_VAULT_ALLOW_ROOT: '0' }).vault?.allowRoot, false);
  });

  const bad: Array<[Record<string, string>, string]> = [
    [{ PORT: 'eighty' }, 'PORT'],
    [{ PORT: '70000' }, 'PORT'],
    [{ CORDON_ISSUER: 'not a url' }, 'CORDON_ISSUER'],
    [{ CORDON_ISSUER: 'ftp://x' }, 'CORDON_ISSUER'],
    [{ DATABASE_URL: 'mysql://x' }, 'DATABASE_URL'],
    [{ DATABASE_URL: 'postgres://u@127.0.0.1:99999/x' }, 'DATABASE_URL'],
    [{ CORDON_ISSUER: 'http://127.0.0.1:8080/#frag' }, 'CORDON_ISSUER'],
    [{ CORDON_ISSUER: 'http://127.0.0.1:8080/?q=1' }, 'CORDON_ISSUER'],
    [{ CORDON_KEY_ALG: 'HS256' }, 'CORDON_KEY_ALG'],
    [{ CORDON_LOG_LEVEL: 'loud' }, 'CORDON_LOG_LEVEL'],
    [{ VAULT_ADDR: 'http://127.0.0.1:8200' }, 'VAULT_TOKEN'],
    [{ VAULT_ADDR: 'http://127.0.0.1:8200', VAULT_SECRET_ID: 's' }, 'VAULT_ROLE_ID'],
    [{ AWS_REGION: 'moon' }, 'AWS_REGION'],
    [{ VAULT_ADDR: 'http://127.0.0.1:8200', VAULT_TOKEN: 't', VAULT_TOKEN_ROLE: 'bad/role' }, 'VAULT_TOKEN_ROLE'],
    [{ VAULT_ADDR: 'http://127.0.0.1:8200', VAULT_TOKEN: 't', CORDON_VAULT_ALLOW_ROOT: 'yes please' }, 'CORDON_VAULT_ALLOW_ROOT'],
    [{ CORDON_RETENTION: 'a week' }, 'CORDON_RETENTION'],
    [{ CORDON_RETENTION: '1h30m' }, 'CORDON_RETENTION'],
    [{ CORDON_RETENTION: '30s' }, 'CORDON_RETENTION'],
  ];
  for (const [env, variable] of bad) {
    it(`a bad ${variable} stops start-up with one line naming it`, () => {
      assert.throws(
        () => loadConfig(env),
        (e: unknown) => e instanceof ConfigError && e.variable === variable && e.message.startsWith(`${variable}:`) && !e.message.includes('\n'),
      );
    });
  }
});
