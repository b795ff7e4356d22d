/**
 * `cordon exec --gateway`: the child calls everything through the gateway and holds no backend
 * secret. It gets the gateway's URL, one `CORDON_UPSTREAM_<NAME>_URL` per http upstream its token
 * reaches (`CORDON_MCP_<NAME>_URL`, the gateway's `/mcp/{upstream}`, per MCP upstream), `HTTP(S)_PROXY` (the forward proxy, its token as the Basic password) for egress, and for
 * an AWS upstream gateway keys through the AWS SDK's container endpoint (refreshed like any
 * credential, valid only at the gateway) with `AWS_ENDPOINT_URL_<SERVICE>` pointing there.
 */
import { CordonSdkError } from '../sdk/errors.ts';

export interface GatewayUpstream {
  name: string;
  kind: 'http' | 'mcp';
  url: string;
  aws?: { credential: string; service: string; region: string };
}

const envKey = (s: string): string => s.toUpperCase().replace(/[^A-Z0-9]/g, '_');

/** The upstreams this token reaches, as the gateway says (`GET /upstreams`). */
export async function discoverUpstreams(gatewayUrl: string, token: string): Promise<GatewayUpstream[]> {
  let r: Response;
  try {
    r = await fetch(`${gatewayUrl}/upstreams`, { headers: { authorization: `Bearer ${token}` }, signal: AbortSignal.timeout(10_000) });
  } catch (e) {
    throw new CordonSdkError('network', `the gateway at ${gatewayUrl} (CORDON_GATEWAY_URL) cannot be reached: ${(e as Error).message}`);
  }
  const body = (await r.json().catch(() => null)) as { upstreams?: GatewayUpstream[]; error?: string; error_description?: string } | null;
  if (!r.ok || !Array.isArray(body?.upstreams))
    throw new CordonSdkError(
      'bad_response',
      `the gateway refused to list upstreams (${r.status}${body?.error ? ` ${body.error}: ${body.error_description}` : ''})`,
    );
  return body.upstreams;
}

/** The child's gateway environment, and the aws-sts credential (gateway keys) its container endpoint must serve. */
export function gatewayEnv(
  gatewayUrl: string,
  brokerUrl: string,
  token: string,
  upstreams: GatewayUpstream[],
): { env: Record<string, string>; awsCredential?: string } {
  const gw = new URL(gatewayUrl);
  const proxy = new URL(gatewayUrl);
  proxy.username = 'cordon';
  proxy.password = token;
  proxy.pathname = '';
  const proxyUrl = proxy.toString().replace(/\/$/, '');
  const env: Record<string, string> = {
    CORDON_GATEWAY_URL: gatewayUrl,
    HTTP_PROXY: proxyUrl,
    HTTPS_PROXY: proxyUrl,
    http_proxy: proxyUrl,
    https_proxy: proxyUrl,
    // The gateway and the broker are reached directly, never through the proxy.
    NO_PROXY: [...new Set([gw.hostname, new URL(brokerUrl).hostname])].join(','),
  };
  env.no_proxy = env.NO_PROXY;
  const aws = upstreams.filter((u) => u.aws);
  const creds = [...new Set(aws.map((u) => u.aws!.credential))];
  if (creds.length > 1)
    throw new CordonSdkError(
      'unsupported',
      `only one AWS credential per command (upstreams use ${creds.join(', ')}): the AWS SDK reads one container endpoint`,
    );
  for (const u of upstreams) {
    if (u.kind === 'mcp') env[`CORDON_MCP_${envKey(u.name)}_URL`] = u.url;
    else env[`CORDON_UPSTREAM_${envKey(u.name)}_URL`] = u.url;
    if (u.aws) {
      env[`AWS_ENDPOINT_URL_${envKey(u.aws.service)}`] = u.url;
      env.AWS_REGION ??= u.aws.region;
    }
  }
  // Current AWS SDKs send streaming uploads aws-chunked, which a re-signing gateway cannot pass on; whole bodies it can.
  if (aws.length) env.AWS_REQUEST_CHECKSUM_CALCULATION = 'when_required';
  return { env, ...(creds.length ? { awsCredential: creds[0] } : {}) };
}
