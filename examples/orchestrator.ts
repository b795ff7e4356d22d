/**
 * An orchestrator agent: opens a session for its task, hands a sub-agent a token that can only
 * read tickets (never its own secret), runs it, and revokes everything when done.
 *
 *   CORDON_ISSUER=http://127.0.0.1:8080 CORDON_CLIENT_ID=agt_… CORDON_CLIENT_SECRET=… \
 *   SUB_AGENT=agt_… RESOURCE_URL=http://127.0.0.1:9090 node --import tsx examples/orchestrator.ts
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { CordonAgent } from 'cordon';

const AUDIENCE = 'https://tickets.example';
const subAgent = process.env.SUB_AGENT;
const resourceUrl = process.env.RESOURCE_URL;
if (!subAgent || !resourceUrl) {
  console.error('orchestrator: set SUB_AGENT (the sub-agent client_id) and RESOURCE_URL');
  process.exit(2);
}

const agent = CordonAgent.fromEnv();
try {
  const session = await agent.startSession({ scope: 'tickets:read tickets:write', task: process.env.TASK ?? 'triage-42', audience: AUDIENCE });
  console.log(`orchestrator: session ${session.sid} open until ${new Date(session.expiresAt!).toISOString()}`);

  // Its own token may close tickets.
  const closed = await agent.fetch(`${resourceUrl}/tickets/41/close`, { method: 'POST' });
  console.log(`orchestrator: close ticket 41 -> ${closed.status} ${await closed.text()}`);

  // The sub-agent gets read access only, in the same session, never longer than ours.
  const handoff = await agent.delegate({ to: subAgent, scope: 'tickets:read', audience: AUDIENCE });
  console.log(`orchestrator: delegated ${handoff.scope.join(' ')} to ${subAgent} for ${handoff.expiresIn}s`);

  // The sub-agent never sees the orchestrator's secret; its token travels in the environment,
  // not on the command line (where `ps` would show it).
  const { CORDON_CLIENT_SECRET: _secret, CORDON_CLIENT_ID: _id, ...env } = process.env;
  const code = await new Promise<number>((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(new URL('./sub-agent.ts', import.meta.url))], {
      env: { ...env, CORDON_TOKEN: handoff.accessToken, RESOURCE_URL: resourceUrl },
      stdio: 'inherit',
    });
    child.on('exit', (c) => resolve(c ?? 1));
  });
  console.log(`orchestrator: sub-agent exited with ${code}`);
  process.exitCode = code;
} finally {
  // Revokes the session's tokens; the sub-agent's token goes with them (it hangs below ours).
  await agent.close();
  console.log('orchestrator: session revoked');
}
