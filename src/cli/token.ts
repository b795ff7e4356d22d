/** `cordon token inspect JWT`: decode, then say whether this broker's keys verify it and whether it is active. */
import type { Command } from 'commander';
import { compactVerify, decodeJwt, decodeProtectedHeader, type JWTPayload, type ProtectedHeaderParameters } from 'jose';
import type { Broker } from '../broker.ts';
import { introspect } from '../tokens/introspect.ts';
import { loadTokenView, stateOf } from '../tokens/verify.ts';
import { isWellFormedId } from '../ids.ts';
import { action, env, leaf, withBroker, type Ctx } from './context.ts';
import { CliError, fmtWhen, kv, printJson, style, usage } from './output.ts';

export interface SignatureCheck {
  valid: boolean;
  kid: string | null;
  reason?: string;
}

/** Signature only (no claim checks): is this a token one of our published keys signed? */
export async function checkSignature(b: Broker, jwt: string, header: ProtectedHeaderParameters): Promise<SignatureCheck> {
  const kid = typeof header.kid === 'string' ? header.kid : null;
  if (!kid) return { valid: false, kid, reason: 'the header has no kid' };
  await b.keys.fresh();
  const vk = b.keys.verificationKey(kid);
  if (!vk) return { valid: false, kid, reason: `kid ${kid} is not published by this broker (foreign token, or a retired key past its publish window)` };
  if (header.alg !== vk.alg) return { valid: false, kid, reason: `alg ${String(header.alg)} does not match the key's ${vk.alg}` };
  try {
    await compactVerify(jwt, vk.key, { algorithms: [vk.alg] });
    return { valid: true, kid };
  } catch {
    return { valid: false, kid, reason: 'the signature does not verify' };
  }
}

const WHY: Record<string, string> = {
  unknown: 'no record of this jti',
  expired: 'expired',
  revoked: 'revoked (itself or a link above it)',
  session_revoked: 'its session was revoked',
  session_expired: 'its session has ended',
  agent_inactive: 'the holder agent is disabled or revoked',
};

export function registerToken(program: Command, ctx: Ctx): void {
  const token = program.command('token').description('inspect access tokens');

  leaf(token, 'inspect [jwt]', 'decode a token (header and claims), check its signature against this broker, and say whether it is active').action(
    action(ctx, async ({ args: [arg], json }) => {
      const jwt = (arg ?? env().CORDON_TOKEN ?? '').trim();
      if (!jwt) throw usage('give the token as an argument or in CORDON_TOKEN');
      let header: ProtectedHeaderParameters;
      let claims: JWTPayload;
      try {
        if (!/^[\w-]+\.[\w-]+\.[\w-]*$/.test(jwt)) throw new Error();
        header = decodeProtectedHeader(jwt);
        claims = decodeJwt(jwt);
      } catch {
        throw new CliError('not a JWT (expected three base64url parts: header.payload.signature)');
      }
      const r = await withBroker(ctx, async (b) => {
        const now = b.clock.now();
        const signature = await checkSignature(b, jwt, header);
        const intro = await introspect(b, jwt);
        const jti = typeof claims.jti === 'string' && isWellFormedId(claims.jti) ? claims.jti : null;
        const view = jti ? await loadTokenView(b, jti) : undefined;
        const st = stateOf(view, now);
        let state: string;
        if (intro.active) state = 'active';
        else if (!st.active) state = st.why;
        else if (!signature.valid) state = 'not_ours';
        else if (claims.iss !== b.config.issuer) state = 'foreign_issuer';
        else state = 'invalid';
        return { now, signature, intro, state, issuer: b.config.issuer };
      });
      if (json)
        return void (await printJson(ctx.io, { header, claims, signature: r.signature, active: r.intro.active, state: r.state, introspection: r.intro }));
      const st = style(ctx.io);
      const t = (v: unknown) => (typeof v === 'number' ? fmtWhen(v * 1000, r.now) : undefined);
      await ctx.io.out(`${st.bold('Header')}\n${JSON.stringify(header, null, 2)}\n\n${st.bold('Claims')}\n${JSON.stringify(claims, null, 2)}\n\n`);
      const explain: Record<string, string> = {
        not_ours: 'the signature does not verify against this broker',
        foreign_issuer: `iss is not this broker (${r.issuer})`,
        invalid: 'the token does not pass verification (claims or record do not match)',
        ...WHY,
      };
      await ctx.io.out(
        kv([
          ['issued', t(claims.iat)],
          ['expires', t(claims.exp)],
          ['signature', r.signature.valid ? st.green(`valid (kid ${r.signature.kid})`) : st.red(`invalid: ${r.signature.reason}`)],
          ['active', r.intro.active ? st.green('yes') : st.red(`no: ${explain[r.state] ?? r.state}`)],
        ]),
      );
    }),
  );
}
