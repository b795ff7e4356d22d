/**
 * A support agent that reaches the tickets MCP server through the Cordon gateway with the
 * official MCP client. Its session grants two read tools; it lists the tools (it sees those two),
 * calls them, and is refused a call outside its argument glob and the write tool `close_ticket`
 * (JSON-RPC errors: neither call reaches the server). Then it prints the session's `mcp.call`
 * audit rows, as an admin reads them with `cordon audit tail --json`.
 *
 *   CORDON_ISSUER=http://127.0.0.1:8080 CORDON_GATEWAY_URL=http://127.0.0.1:8081 \
 *   CORDON_CLIENT_ID=agt_… CORDON_CLIENT_SECRET=… node --import tsx examples/mcp/agent.ts
 *
 * The audit step runs `cordon audit tail` with this shell's broker settings (DATABASE_URL, …): in
 * a real deployment the agent has no such access, and an admin reads the log.
 */
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { Client } from '@modelcontextprotocol/client';
import { CordonAgent } from 'cordon';

const UPSTREAM = 'tickets-mcp';
const say = (s: string) => console.log(`agent: ${s}`);
const firstText = (r: { content?: unknown }): string =>
  (r.content as Array<{ type: string; text?: string }> | undefined)?.find((c) => c.type === 'text')?.text ?? '';

const agent = CordonAgent.fromEnv();
let calls = 0;
try {
  const session = await agent.startSession({ scope: `gw:${UPSTREAM}/list_tickets gw:${UPSTREAM}/get_ticket`, task: process.env.TASK ?? 'support-triage' });
  say(`session ${session.sid} with scope ${session.scope.join(' ')}`);

  // The official client over the SDK's transport: every request carries the session's current token.
  const mcp = new Client({ name: 'support-agent', version: '1.0.0' });
  await mcp.connect(await agent.mcpTransport(UPSTREAM));

  const { tools } = await mcp.listTools();
  say(`tools/list -> ${tools.length} tools: ${tools.map((t) => t.name).join(', ')}`);

  const call = async (name: string, args: Record<string, unknown>): Promise<void> => {
    calls++;
    try {
      const r = await mcp.callTool({ name, arguments: args });
      say(`tools/call ${name} ${JSON.stringify(args)} -> ${r.isError ? 'tool error' : 'ok'}: ${firstText(r).replaceAll('\n', ' | ')}`);
    } catch (e) {
      // A refusal by the gateway is a JSON-RPC error: code and message, nothing from the server.
      const err = e as { code?: number; message: string };
      say(`tools/call ${name} ${JSON.stringify(args)} -> refused (JSON-RPC error ${err.code}): ${err.message}`);
    }
  };
  await call('list_tickets', { queue: 'support-eu' });
  await call('get_ticket', { id: 'T-1002' });
  await call('list_tickets', { queue: 'billing' }); // outside the policy's glob support-*
  await call('close_ticket', { id: 'T-1002', note: 'fixed' }); // a write tool the policy does not grant
  await mcp.close();

  // The audit rows of this session's tool calls. They are committed in groups just after each
  // call, so wait (briefly) until all of them are there.
  const cordon = fileURLToPath(new URL('../../bin/cordon.js', import.meta.url));
  type Row = {
    seq: number;
    event: string;
    decision: string;
    sid: string | null;
    reason: string | null;
    params: { tool?: string; arg_names?: string[]; args_sha256?: string; is_error?: boolean | null };
  };
  let rows: Row[] = [];
  for (let tries = 0; tries < 50 && rows.length < calls; tries++) {
    if (tries) await new Promise((r) => setTimeout(r, 100));
    const { stdout } = await promisify(execFile)(process.execPath, [cordon, 'audit', 'tail', '-n', '200', '--json']);
    rows = (JSON.parse(stdout) as Row[]).filter((r) => r.event === 'mcp.call' && r.sid === session.sid);
  }
  say(`audit: ${rows.length} mcp.call rows for session ${session.sid}`);
  for (const r of rows) {
    const p = r.params;
    console.log(
      `  #${r.seq} ${r.decision} tool=${p.tool} args=${JSON.stringify(p.arg_names ?? [])} sha256=${(p.args_sha256 ?? '').slice(0, 12)}…` +
        (r.reason ? ` reason=${r.reason}` : ` is_error=${String(p.is_error)}`),
    );
  }
  process.exitCode = rows.length === calls ? 0 : 1;
} finally {
  await agent.close(); // revokes the session: its token is refused at the gateway from now on
  say('session closed');
}
