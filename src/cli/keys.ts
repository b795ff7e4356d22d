/** `cordon keys list|rotate`: the broker's signing keys. */
import type { Command } from 'commander';
import { KEY_ACTIVATION_MS, KEYRING_RELOAD_MS, listKeys, rotateSigningKey, type KeyInfo } from '../keys/keyring.ts';
import { action, leaf, withBroker, type Ctx } from './context.ts';
import { fmtTime, fmtWhen, iso, printJson, table } from './output.ts';

const published = (k: KeyInfo, now: number): boolean => k.status === 'active' || (k.publishUntil !== null && k.publishUntil > now);

export const keyJson = (k: KeyInfo, now: number): Record<string, unknown> => ({
  kid: k.kid,
  alg: k.alg,
  status: k.status,
  published: published(k, now),
  created_at: iso(k.createdAt),
  retired_at: iso(k.retiredAt),
  publish_until: iso(k.publishUntil),
});

export function registerKeys(program: Command, ctx: Ctx): void {
  const keys = program.command('keys').description('signing keys');

  leaf(keys, 'list', 'list signing keys: the active one and retired ones (published in /jwks until their tokens expire)').action(
    action(ctx, async ({ json }) => {
      const { list, now } = await withBroker(ctx, async (b) => ({ list: await listKeys(b.db), now: b.clock.now() }));
      if (json)
        return void (await printJson(
          ctx.io,
          list.map((k) => keyJson(k, now)),
        ));
      await ctx.io.out(
        table(
          ['KID', 'ALG', 'STATUS', 'IN JWKS', 'CREATED', 'RETIRED', 'PUBLISHED UNTIL'],
          list.map((k) => [
            k.kid,
            k.alg,
            k.status,
            published(k, now) ? 'yes' : 'no',
            fmtTime(k.createdAt),
            fmtTime(k.retiredAt),
            k.status === 'active' ? 'while active' : fmtWhen(k.publishUntil, now),
          ]),
        ),
      );
    }),
  );

  leaf(keys, 'rotate', 'make a new active key; the old one keeps verifying until every token it signed has expired').action(
    action(ctx, async ({ json }) => {
      const r = await withBroker(ctx, async (b) => {
        const old = (await listKeys(b.db)).find((k) => k.status === 'active');
        // Tokens a replica signs with the old key before it reloads live at most the longest token_ttl.
        const longestTtlMs = Math.max(0, ...b.policies.list().map((p) => p.tokenTtl)) * 1000;
        const created = await rotateSigningKey(b.db, b.config.keyDir, b.config.keyAlg, b.clock, longestTtlMs);
        const retired = old ? (await listKeys(b.db)).find((k) => k.kid === old.kid) : undefined;
        return { created, retired, now: b.clock.now(), longestTtlMs };
      });
      if (json) return void (await printJson(ctx.io, { active: keyJson(r.created, r.now), retired: r.retired ? keyJson(r.retired, r.now) : null }));
      await ctx.io.out(`new active key ${r.created.kid} (${r.created.alg})\n`);
      if (r.retired) await ctx.io.out(`retired ${r.retired.kid}: still published in /jwks until ${fmtWhen(r.retired.publishUntil, r.now)}\n`);
      await ctx.io.out(
        `Running brokers publish it within ${KEYRING_RELOAD_MS / 1000} s and sign with it from ${fmtTime(r.created.createdAt + KEY_ACTIVATION_MS)} on.\n`,
      );
    }),
  );
}
