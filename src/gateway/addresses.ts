/**
 * Which resolved addresses the forward proxy may connect to. Only plain global unicast is
 * reachable; everything else (loopback, RFC 1918, link-local, cloud metadata, CGNAT, unique-local,
 * multicast, reserved…) is refused unless an egress rule names the address itself. IPv6 forms that
 * carry an IPv4 address (IPv4-mapped, IPv4-translated, NAT64, 6to4) are judged by the IPv4 inside,
 * so `::ffff:127.0.0.1` is loopback.
 */
import { isIP } from 'node:net';
import ipaddr from 'ipaddr.js';

type Address = ipaddr.IPv4 | ipaddr.IPv6;

export interface AddressVerdict {
  refused: boolean;
  /** ipaddr.js's range name (`unicast`, `loopback`, `private`, `linkLocal`…), `cloudMetadata`, or `invalid`. */
  range: string;
}

/**
 * Instance-metadata and host-agent endpoints of the big clouds. Most sit in ranges refused anyway;
 * naming them gives the audit row the right word, and Azure's WireServer is a public address.
 */
const CLOUD_METADATA = new Set(['169.254.169.254', '169.254.170.2', '100.100.100.200', '168.63.129.16', '192.0.0.192', 'fd00:ec2::254']);

/** 2000::/3, the only IPv6 block handed out for global unicast. */
const GLOBAL_UNICAST_V6: [ipaddr.IPv6, number] = [ipaddr.IPv6.parse('2000::'), 3];
/** 64:ff9b::/96 (RFC 6052 well-known NAT64 prefix): the IPv4 address is the last 32 bits. */
const NAT64_WELL_KNOWN: [ipaddr.IPv6, number] = [ipaddr.IPv6.parse('64:ff9b::'), 96];
/** ::/96 (deprecated IPv4-compatible form) minus :: and ::1, which ipaddr.js names itself. */
const IPV4_COMPATIBLE: [ipaddr.IPv6, number] = [ipaddr.IPv6.parse('::'), 96];

const v4FromParts = (high: number, low: number): ipaddr.IPv4 => new ipaddr.IPv4([high >> 8, high & 0xff, low >> 8, low & 0xff]);

/** The IPv4 address an IPv6 address stands for, when it is one of the forms that embed one. */
function embeddedIPv4(a: ipaddr.IPv6): ipaddr.IPv4 | undefined {
  const range = a.range();
  const p = a.parts;
  if (range === 'ipv4Mapped' || range === 'rfc6145') return v4FromParts(p[6], p[7]);
  if (a.match(NAT64_WELL_KNOWN)) return v4FromParts(p[6], p[7]);
  if (range === '6to4') return v4FromParts(p[1], p[2]);
  if (range === 'unicast' && a.match(IPV4_COMPATIBLE)) return v4FromParts(p[6], p[7]);
  return undefined;
}

function classify(a: Address): AddressVerdict {
  if (CLOUD_METADATA.has(a.toString())) return { refused: true, range: 'cloudMetadata' };
  if (a.kind() === 'ipv6') {
    const inner = embeddedIPv4(a as ipaddr.IPv6);
    if (inner) return classify(inner);
    const range = a.range();
    if (range !== 'unicast') return { refused: true, range };
    if (!a.match(GLOBAL_UNICAST_V6)) return { refused: true, range: 'reserved' };
    return { refused: false, range };
  }
  const range = a.range();
  return { refused: range !== 'unicast', range };
}

/**
 * Whether the proxy must refuse to connect to `ip` (a literal as the resolver returns it or as a
 * client wrote it, brackets and zone allowed) and the name of its range for messages and audit rows.
 * Anything that is not an IP address the OS would read the same way is refused as `invalid`.
 */
export function isRefusedAddress(ip: string): AddressVerdict {
  const bare = ip.startsWith('[') && ip.endsWith(']') ? ip.slice(1, -1) : ip;
  if (isIP(bare) === 0) return { refused: true, range: 'invalid' };
  return classify(ipaddr.parse(bare));
}

/** The canonical text of an IP literal (for comparing a request's host with a rule's), or undefined if it is none. */
export function canonicalIp(host: string): string | undefined {
  const bare = host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
  if (isIP(bare) === 0) return undefined;
  return ipaddr.parse(bare).toString();
}
