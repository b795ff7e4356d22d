/**
 * Every event an audit row can record. Grants and state changes are rows of their own event;
 * a refusal is a `deny` row whose `params.attempted` names what was tried (an Attempted).
 */
export type AuditEvent =
  | 'session.open'
  | 'token.issue'
  | 'delegation.issue'
  | 'credential.issue'
  | 'credential.fail'
  | 'credential.revoke'
  | 'credential.orphan'
  | 'credential.iam_deny'
  | 'credential.iam_deny_removed'
  | 'bootstrap.issue'
  | 'revoke'
  | 'agent.register'
  | 'agent.enable'
  | 'agent.disable'
  | 'agent.rotate'
  | 'key.create'
  | 'key.rotate'
  | 'policy.load'
  | 'alarm'
  | 'deny'
  | 'deny.summary'
  /** A call through the gateway (reverse mode), allowed or refused: upstream, method, path, rule, status, bytes, duration. */
  | 'gateway.call'
  /** A forward-proxy tunnel or request, allowed or refused: host, port, address, bytes, duration. */
  | 'egress.connect'
  /** An MCP tool call (or a refused MCP request), allowed or refused: upstream, tool, arguments' hash and names, outcome, isError. */
  | 'mcp.call'
  /** An MCP upstream offered a tool definition that differs from its pin (or the pinned one again): hidden and refused until re-pinned. */
  | 'mcp.pin_changed'
  /** An admin pinned an MCP tool definition (`cordon mcp pin`). */
  | 'mcp.pin';

/** What a refused request was trying to do: its route, grant or command. */
export type Attempted =
  | 'session.open'
  | 'token.issue'
  | 'token'
  | 'token_exchange'
  | 'delegation.issue'
  | 'bootstrap.redeem'
  | 'federation.exchange'
  | 'credential.issue'
  | 'introspect'
  | 'revoke'
  | 'revocations'
  | 'metrics'
  | 'jwks'
  | 'gateway.call'
  | 'egress.connect'
  | 'mcp.call'
  | 'request'
  | `cli.${string}`;
