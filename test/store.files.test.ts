import assert from 'node:assert/strict';
import { chmodSync, closeSync, existsSync, mkdirSync, mkdtempSync, openSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { systemClock } from '../src/clock.ts';
import { migrate, openDb } from '../src/store/db.ts';
import { ensureSigningKey, listKeys, loadSecretHashKey } from '../src/keys/keyring.ts';

const modeOf = (p: string): number => statSync(p).mode & 0o777;
const octal = (m: number): string => `0${m.toString(8)}`;

describe('private files', () => {
  let dir: string;
  let umask: number;
  beforeEach(() => {
    // The usual umask, under which a file made without an explicit mode is world-readable (0644).
    umask = process.umask(0o022);
    dir = mkdtempSync(join(tmpdir(), 'cordon-files-'));
  });
  afterEach(() => {
    process.umask(umask);
    rmSync(dir, { recursive: true, force: true });
  });

  it('the SQLite data directory is made 0700 and the database with its -wal and -shm 0600', async () => {
    const file = join(dir, 'data', 'cordon.sqlite');
    const db = openDb(`sqlite://${file}`);
    try {
      await migrate(db);
      assert.equal(octal(modeOf(join(dir, 'data'))), '0700');
      for (const f of [file, `${file}-wal`, `${file}-shm`]) {
        assert.ok(existsSync(f), `${f} exists while the database is open`);
        assert.equal(octal(modeOf(f)), '0600', f);
      }
    } finally {
      await db.destroy();
    }
  });

  it('an existing database, and a -wal and -shm left beside it, opened with a looser mode are made 0600', async () => {
    const file = join(dir, 'cordon.sqlite');
    const first = openDb(`sqlite://${file}`);
    await migrate(first);
    await first.destroy();
    for (const f of [`${file}-wal`, `${file}-shm`]) if (!existsSync(f)) closeSync(openSync(f, 'w', 0o644));
    for (const f of [file, `${file}-wal`, `${file}-shm`]) chmodSync(f, 0o644);
    const db = openDb(`sqlite://${file}`);
    try {
      await migrate(db);
      for (const f of [file, `${file}-wal`, `${file}-shm`]) assert.equal(octal(modeOf(f)), '0600', f);
    } finally {
      await db.destroy();
    }
  });

  it('the key directory is made 0700 and the signing and secret-hash keys 0600', async () => {
    mkdirSync(join(dir, 'data'));
    const keyDir = join(dir, 'data', 'keys');
    const db = openDb(`sqlite://${join(dir, 'data', 'cordon.sqlite')}`);
    try {
      await migrate(db);
      await ensureSigningKey(db, keyDir, 'EdDSA', systemClock);
      loadSecretHashKey(keyDir);
      const [key] = await listKeys(db);
      assert.equal(octal(modeOf(keyDir)), '0700');
      assert.equal(octal(modeOf(join(keyDir, `${key.kid}.jwk.json`))), '0600');
      assert.equal(octal(modeOf(join(keyDir, 'client-secret-hmac.key'))), '0600');
    } finally {
      await db.destroy();
    }
  });
});
