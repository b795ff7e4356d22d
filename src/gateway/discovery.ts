/**
 * `GET /upstreams`: what this token may call through the gateway, with the URL to call it at
 * (`cordon exec --gateway` builds the child's environment from it). Authenticated like a call.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { Attempt } from '../audit/attempt.ts';
import { clientAddressOf } from '../audit/refusal-limiter.ts';
import { authenticateCall } from './authenticate.ts';
import { reachableUpstreams } from './authorise.ts';
import type { GatewayContext } from './context.ts';
import { asCordonError, reply } from './replies.ts';
import { REVERSE_PREFIX } from './reverse.ts';

export const DISCOVERY_PATH = '/upstreams';

export async function handleDiscovery(g: GatewayContext, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const attempt = new Attempt('gateway.call', clientAddressOf(req.socket.remoteAddress)).note({ path: DISCOVERY_PATH });
  try {
    const p = await authenticateCall(g, req, DISCOVERY_PATH, attempt);
    const upstreams = reachableUpstreams(p).map((u) => ({ ...u, url: `${g.url}${u.kind === 'mcp' ? '/mcp/' : REVERSE_PREFIX}${u.name}` }));
    const body = JSON.stringify({ upstreams });
    res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store', 'content-length': String(Buffer.byteLength(body)) });
    res.end(body);
  } catch (e) {
    const err = asCordonError(e);
    reply(res, err);
    g.audit.call('gateway.call', attempt, 'deny', {}, err);
  }
}
