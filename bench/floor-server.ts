/**
 * Stack floors for `npm run bench`: the chosen libraries doing the least each scenario needs and
 * nothing of Cordon's (no policy, no audit, no session). Each is the fastest that scenario could
 * go on this machine with this stack; the broker cannot beat its floor.
 *
 *   node --import tsx bench/floor-server.ts MODE DIR [VAULT_ADDR]
 *
 *   express            express + express.raw form body + res.json: any Cordon endpoint's ceiling
 *   introspect         … + keyed-hash client secret check + jose jwtVerify (EdDSA at+jwt)
 *                        + one knex/sqlite3 point read (4 read connections, as the broker has)
 *   introspect-mem     express + HTTP Basic client secret check (keyed hash, compared as src/keys/keyring.ts
 *                        secretMatches does) + jose jwtVerify, answering RFC 7662 JSON: introspection with
 *                        no database, the floor of the introspection target
 *   provider           oidc-provider /token behind express, a static client_secret_basic client,
 *                        a grant that answers a constant: every /token scenario's ceiling
 *   provider-sign      … + one jose EdDSA signature: a /token that signs, with a free database
 *   credentials        express + jose jwtVerify + node-vault auth/token/create against the Vault
 *                        double: credential issue with a free database
 *
 * Prints `LISTENING=<url> TOKEN=<a valid at+jwt>`; the client is `floor-client` with secret
 * `floor-secret`.
 */
import { createHmac, generateKeyPairSync, randomUUID, timingSafeEqual } from 'node:crypto';
import { join } from 'node:path';
import express from 'express';
import knexFactory from 'knex';
import Provider, { type KoaContextWithOIDC } from 'oidc-provider';
import { SignJWT, jwtVerify } from 'jose';
import vaultFactory from 'node-vault';

const [mode, dir, vaultAddr] = process.argv.slice(2);
const MODES = ['express', 'introspect', 'introspect-mem', 'provider', 'provider-sign', 'credentials'];
if (!MODES.includes(mode) || !dir) throw new Error(`usage: floor-server.ts (${MODES.join('|')}) DIR [VAULT_ADDR]`);

const CLIENT_ID = 'floor-client';
const CLIENT_SECRET = 'floor-secret';
const hashKey = Buffer.alloc(32, 7);
const secretHash = createHmac('sha256', hashKey).update(CLIENT_SECRET).digest();
const { privateKey, publicKey } = generateKeyPairSync('ed25519');
const sign = () =>
  new SignJWT({ scope: 'docs:read', sid: 'sid_floor', client_id: CLIENT_ID })
    .setProtectedHeader({ alg: 'EdDSA', typ: 'at+jwt' })
    .setIssuer('floor')
    .setSubject(CLIENT_ID)
    .setJti(randomUUID())
    .setIssuedAt()
    .setExpirationTime('1h')
    .sign(privateKey);
const token = await sign();
const verify = (t: string) => jwtVerify(t, publicKey, { algorithms: ['EdDSA'], typ: 'at+jwt', issuer: 'floor' });

function basicSecretMatches(header: string | undefined): boolean {
  const [id, secret] = Buffer.from((header ?? '').replace(/^Basic /, ''), 'base64')
    .toString()
    .split(':');
  return (
    id === CLIENT_ID &&
    timingSafeEqual(
      createHmac('sha256', hashKey)
        .update(secret ?? '')
        .digest(),
      secretHash,
    )
  );
}

const app = express();
app.disable('x-powered-by');
const form = express.raw({ type: 'application/x-www-form-urlencoded' });

if (mode === 'express') {
  app.post('/', form, (req, res) => {
    res.json({ active: true, got: new URLSearchParams(String(req.body)).has('token') });
  });
}

if (mode === 'introspect') {
  const file = join(dir, 'floor.sqlite');
  const setup = knexFactory({ client: 'sqlite3', connection: { filename: file }, useNullAsDefault: true });
  await setup.raw('pragma journal_mode = wal');
  await setup.schema.createTable('tokens', (t) => {
    t.string('jti').primary();
    t.string('scope');
    t.bigInteger('expires_at');
  });
  const { payload } = await verify(token);
  await setup('tokens').insert({ jti: payload.jti, scope: 'docs:read', expires_at: Date.now() + 3600e3 });
  await setup.destroy();
  const read = knexFactory({ client: 'sqlite3', connection: { filename: file }, useNullAsDefault: true, pool: { min: 1, max: 4 } });
  app.post('/', form, async (req, res) => {
    if (!basicSecretMatches(req.headers.authorization)) return void res.status(401).json({ error: 'invalid_client' });
    const claims = (await verify(new URLSearchParams(String(req.body)).get('token') ?? '')).payload;
    const row = await read('tokens').where('jti', claims.jti!).first();
    res.json({ active: row !== undefined && row.expires_at > Date.now(), ...claims });
  });
}

if (mode === 'introspect-mem') {
  // As the keyring stores and compares it: a hex keyed hash, decoded, constant-time compared.
  const storedHex = secretHash.toString('hex');
  const secretMatches = (id: string, secret: string): boolean => {
    if (id !== CLIENT_ID) return false;
    const a = Buffer.from(createHmac('sha256', hashKey).update(secret).digest('hex'), 'hex');
    const b = Buffer.from(storedHex, 'hex');
    return a.length === b.length && timingSafeEqual(a, b);
  };
  app.post('/', form, async (req, res) => {
    const [id, secret] = Buffer.from((req.headers.authorization ?? '').replace(/^Basic /, ''), 'base64')
      .toString()
      .split(':')
      .map(decodeURIComponent);
    if (!secretMatches(id ?? '', secret ?? '')) return void res.status(401).json({ error: 'invalid_client' });
    try {
      const { payload } = await verify(new URLSearchParams(String(req.body)).get('token') ?? '');
      res.json({ active: true, token_type: 'Bearer', ...payload });
    } catch {
      res.json({ active: false });
    }
  });
}

if (mode === 'provider' || mode === 'provider-sign') {
  const grant = 'urn:cordon:floor';
  const provider = new Provider('http://127.0.0.1', {
    clients: [
      {
        client_id: CLIENT_ID,
        client_secret: CLIENT_SECRET,
        grant_types: [grant],
        response_types: [],
        redirect_uris: [],
        token_endpoint_auth_method: 'client_secret_basic',
      },
    ],
    features: { devInteractions: { enabled: false } },
  });
  provider.registerGrantType(
    grant,
    async (ctx: KoaContextWithOIDC) => {
      ctx.body = { access_token: mode === 'provider-sign' ? await sign() : 'constant', token_type: 'Bearer', expires_in: 3600, scope: 'docs:read' };
    },
    ['scope'],
  );
  const callback = provider.callback();
  app.post('/token', (req, res) => {
    void callback(req, res);
  });
}

if (mode === 'credentials') {
  if (!vaultAddr) throw new Error('credentials needs the Vault double address');
  const vault = vaultFactory({ endpoint: vaultAddr, token: 'root-token' });
  app.post('/', async (req, res) => {
    const bearer = (req.headers.authorization ?? '').replace(/^Bearer /, '');
    await verify(bearer);
    const r = await vault.write('auth/token/create', { policies: ['docs-rw'], ttl: '900s', meta: { agent: CLIENT_ID } });
    res.json({ credential: { token: r.auth.client_token, accessor: r.auth.accessor }, expires_in: r.auth.lease_duration });
  });
}

const server = app.listen(0, '127.0.0.1', () => {
  const { port } = server.address() as { port: number };
  process.stdout.write(`LISTENING=http://127.0.0.1:${port} TOKEN=${token}\n`);
});
server.keepAliveTimeout = 65_000;
process.on('SIGTERM', () => server.close(() => process.exit(0)));
