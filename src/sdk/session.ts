import type { CordonSdkError } from './errors.ts';
import type { TokenAnswer } from './token-answer.ts';

/** The token in use, and when to ask for the next one. */
export interface CurrentToken {
  accessToken: string;
  tokenType: 'Bearer' | 'DPoP';
  issuedAt: number;
  expiresAt: number;
  refreshAt: number;
  scope: string[];
}

/** The agent's open session, as the token keeper tracks it. */
export interface Session {
  sid: string;
  scope: string[];
  task?: string;
  audience: string[];
  expiresIn?: number;
  /** When the session ends for good (ms), when known. */
  expiresAt: number | null;
  current: CurrentToken;
  /** Every token the agent was issued in this session and that may still be alive, for revoke(). */
  issued: Array<{ token: string; expiresAt: number }>;
  ended: CordonSdkError | null;
  /**
   * When the session's tokens are for resource servers only: a token of the same session whose
   * audience is the broker, used for /credentials alone and never sent anywhere else.
   */
  brokerToken?: CurrentToken;
  brokerTokenInFlight?: Promise<CurrentToken>;
}

/**
 * A token as the keeper holds it, with its renewal time: a fifth of its life before expiry (10 s
 * to 5 min), plus up to 25 % jitter (`random` in [0,1)); never past the session's end.
 */
export function currentToken(a: TokenAnswer, now: number, sessionEnd: number | null, random: () => number): CurrentToken {
  let expiresAt = now + a.expiresIn * 1000;
  if (sessionEnd !== null) expiresAt = Math.min(expiresAt, sessionEnd);
  const life = Math.max(0, expiresAt - now);
  const margin = Math.min(Math.max(life * 0.2, 10_000), 300_000, life / 2) * (1 + 0.25 * random());
  // A token that already reaches the session's end cannot be bettered: use it to the end.
  const lastOne = sessionEnd !== null && expiresAt >= sessionEnd - 1000;
  return {
    accessToken: a.accessToken,
    tokenType: a.tokenType,
    issuedAt: now,
    expiresAt,
    refreshAt: lastOne ? Infinity : expiresAt - margin,
    scope: a.scope ?? [],
  };
}
