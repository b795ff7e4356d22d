/**
 * A sub-agent: it holds only the token its orchestrator delegated (CORDON_TOKEN) and calls the
 * resource server with it. Reading works; closing a ticket is refused, because the delegation
 * handed down `tickets:read` only.
 *
 *   CORDON_ISSUER=… CORDON_TOKEN=… RESOURCE_URL=http://127.0.0.1:9090 node --import tsx examples/sub-agent.ts
 */
import { CordonAgent } from 'cordon';

const resourceUrl = process.env.RESOURCE_URL;
if (!resourceUrl) {
  console.error('sub-agent: set RESOURCE_URL');
  process.exit(2);
}
const agent = CordonAgent.fromEnv();

const read = await agent.fetch(`${resourceUrl}/tickets/42`);
const ticket = (await read.json()) as { title?: string; chain?: string[] };
console.log(`sub-agent: read ticket 42 -> ${read.status} "${ticket.title}" (chain ${ticket.chain?.join(' > ')})`);

const write = await agent.fetch(`${resourceUrl}/tickets/42/close`, { method: 'POST' });
console.log(`sub-agent: close ticket 42 -> ${write.status} ${write.headers.get('www-authenticate')}`);

process.exitCode = read.status === 200 && write.status === 403 ? 0 : 1;
