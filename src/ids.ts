import { randomBytes } from 'node:crypto';

/** Random, URL-safe identifiers with a readable prefix. 128 bits: unguessable, collision-free in practice. */
export const newId = (prefix: string): string => `${prefix}_${randomBytes(16).toString('base64url')}`;
export const newJti = (): string => randomBytes(16).toString('base64url');
/** Client secrets: 256 bits. */
export const newSecret = (): string => randomBytes(32).toString('base64url');

/** Ids arrive from users and the network; only this shape is ever looked up. Stops quotes, slashes and `..` at the door. */
export const ID_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;
export const isWellFormedId = (v: unknown): v is string => typeof v === 'string' && ID_PATTERN.test(v);
