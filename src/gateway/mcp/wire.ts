/**
 * What the gateway reads of MCP's wire: one JSON-RPC message per POST (batches are refused: MCP
 * dropped them in 2025-06-18, and one message per exchange keeps "what was asked" and "what was
 * answered" unambiguous), the standard headers of 2026-07-28 (`MCP-Protocol-Version`,
 * `Mcp-Method`, `Mcp-Name`, SEP-2243), and the JSON-RPC errors the gateway answers with.
 */
import { CordonError } from '../../errors.ts';

export type JsonRpcId = string | number;

/** A client's message as the gateway classifies it. */
export type ClientMessage =
  | { kind: 'request'; id: JsonRpcId; method: string; params: Record<string, unknown> | undefined; parsed: Record<string, unknown> }
  | { kind: 'notification'; method: string; params: Record<string, unknown> | undefined; parsed: Record<string, unknown> }
  | { kind: 'response'; id: JsonRpcId | null };

/** JSON-RPC and MCP error codes the gateway uses. */
export const RPC = {
  PARSE_ERROR: -32700,
  INVALID_REQUEST: -32600,
  INVALID_PARAMS: -32602,
  /** SEP-2243: the standard headers disagree with the body. */
  HEADER_MISMATCH: -32020,
  /** Cordon refused the request (policy, scope, pin, arguments): implementation-defined server error range. */
  REFUSED: -32003,
} as const;

/** A refusal answered as a JSON-RPC error (with the HTTP status to send it with). */
export class RpcRefusal extends CordonError {
  readonly rpcCode: number;
  constructor(rpcCode: number, code: ConstructorParameters<typeof CordonError>[0], description: string, reason: string, status?: number) {
    super(code, description, { reason, ...(status !== undefined ? { status } : {}) });
    this.rpcCode = rpcCode;
  }
}

const isId = (v: unknown): v is JsonRpcId => typeof v === 'string' || (typeof v === 'number' && Number.isInteger(v));
const isObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);

const malformed = (why: string): RpcRefusal => new RpcRefusal(RPC.INVALID_REQUEST, 'invalid_request', `malformed JSON-RPC: ${why}`, 'mcp_malformed', 400);

/** Parses and classifies one POST body; refuses what is not exactly one JSON-RPC 2.0 message. */
export function parseClientMessage(body: Buffer): ClientMessage {
  let v: unknown;
  try {
    v = JSON.parse(body.toString('utf8'));
  } catch {
    throw new RpcRefusal(RPC.PARSE_ERROR, 'invalid_request', 'the body is not JSON', 'mcp_parse_error', 400);
  }
  if (Array.isArray(v))
    throw new RpcRefusal(
      RPC.INVALID_REQUEST,
      'invalid_request',
      'JSON-RPC batches are not accepted through the gateway: send one message per request (MCP has not used batches since 2025-06-18)',
      'mcp_batch',
      400,
    );
  if (!isObject(v)) throw malformed('the body is not a JSON-RPC object');
  if (v.jsonrpc !== '2.0') throw malformed('jsonrpc must be "2.0"');
  if (v.params !== undefined && !isObject(v.params)) throw malformed('params must be an object');
  const params = v.params;
  if (typeof v.method === 'string') {
    if (v.method === '') throw malformed('method is empty');
    if (!Object.hasOwn(v, 'id')) return { kind: 'notification', method: v.method, params, parsed: v };
    if (!isId(v.id)) throw malformed('id must be a string or an integer');
    return { kind: 'request', id: v.id, method: v.method, params, parsed: v };
  }
  if (v.method !== undefined) throw malformed('method must be a string');
  if (Object.hasOwn(v, 'result') === Object.hasOwn(v, 'error')) throw malformed('neither a request, a notification nor a response');
  if (v.id !== null && !isId(v.id)) throw malformed('id must be a string or an integer');
  return { kind: 'response', id: v.id };
}

/** A JSON-RPC error response, as text. */
export function rpcErrorBody(id: JsonRpcId | null, code: number, message: string, data?: Record<string, unknown>): string {
  return JSON.stringify({ jsonrpc: '2.0', id, error: { code, message, ...(data ? { data } : {}) } });
}

const BASE64_PREFIX = '=?base64?';
const BASE64_SUFFIX = '?=';
const BASE64_CANONICAL = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/** An `Mcp-Name` (or `Mcp-Param-*`) value as the spec encodes it: plain, or `=?base64?…?=` around UTF-8. Undefined when the encoding is broken. */
export function decodeMcpHeaderValue(raw: string): string | undefined {
  const v = raw.trim();
  if (!(v.startsWith(BASE64_PREFIX) && v.endsWith(BASE64_SUFFIX) && v.length >= BASE64_PREFIX.length + BASE64_SUFFIX.length)) return v;
  const b64 = v.slice(BASE64_PREFIX.length, v.length - BASE64_SUFFIX.length);
  if (!BASE64_CANONICAL.test(b64)) return undefined;
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(Buffer.from(b64, 'base64'));
  } catch {
    return undefined;
  }
}

/** Which field of `params` the `Mcp-Name` header mirrors, per method (SEP-2243, SEP-2663). */
const NAME_SOURCE: Record<string, string> = {
  'tools/call': 'name',
  'prompts/get': 'name',
  'resources/read': 'uri',
  'tasks/get': 'taskId',
  'tasks/update': 'taskId',
  'tasks/cancel': 'taskId',
};

const headerMismatch = (why: string): RpcRefusal =>
  new RpcRefusal(RPC.HEADER_MISMATCH, 'invalid_request', `MCP headers disagree with the body: ${why}`, 'mcp_header_mismatch', 400);

const single = (v: string | string[] | undefined): string | undefined => (Array.isArray(v) ? v.join(', ') : v);

/**
 * The standard headers must say what the body says: the gateway judges the body, and an upstream
 * (or something in front of it) that routed on a header that said otherwise would act on what was
 * never judged. A header that is absent is the upstream's business (2025 clients send none).
 */
export function checkStandardHeaders(headers: Record<string, string | string[] | undefined>, m: ClientMessage): void {
  if (m.kind === 'response') return;
  const method = single(headers['mcp-method']);
  if (method !== undefined && method.trim() !== m.method)
    throw headerMismatch(`Mcp-Method names ${JSON.stringify(method.slice(0, 100))}, the body ${m.method}`);
  const name = single(headers['mcp-name']);
  if (name === undefined) return;
  const field = Object.hasOwn(NAME_SOURCE, m.method) ? NAME_SOURCE[m.method] : undefined;
  const decoded = decodeMcpHeaderValue(name);
  if (decoded === undefined) throw headerMismatch('Mcp-Name carries a broken =?base64?…?= value');
  const inBody = field !== undefined ? m.params?.[field] : undefined;
  if (field === undefined || typeof inBody !== 'string' || decoded !== inBody)
    throw headerMismatch(`Mcp-Name names ${JSON.stringify(decoded.slice(0, 100))}, the body's ${field ? `params.${field}` : m.method} says otherwise`);
}
