import assert from 'node:assert/strict';
import { CordonError } from '../src/errors.ts';
import { isRefusedAddress } from '../src/gateway/addresses.ts';
import { egressAllowed, parseAbsoluteTarget, parseConnectTarget, resolveDestination } from '../src/gateway/egress-rules.ts';
import { proxyToken } from '../src/gateway/egress-wire.ts';
import { basic, policy, principal } from './gateway.egress.kit.ts';

const refusedWith = (reason: string) => (e: unknown) => e instanceof CordonError && e.reason === reason;

describe('gateway egress: address ranges', () => {
  const refused: Array<[string, string]> = [
    ['127.0.0.1', 'loopback'],
    ['127.255.0.9', 'loopback'],
    ['::1', 'loopback'],
    ['[::1]', 'loopback'],
    ['10.0.0.5', 'private'],
    ['172.16.3.4', 'private'],
    ['192.168.1.1', 'private'],
    ['169.254.1.1', 'linkLocal'],
    ['fe80::1%eth0', 'linkLocal'],
    ['169.254.169.254', 'cloudMetadata'],
    ['fd00:ec2::254', 'cloudMetadata'],
    ['::ffff:169.254.169.254', 'cloudMetadata'],
    ['0.0.0.0', 'unspecified'],
    ['::', 'unspecified'],
    ['100.64.0.1', 'carrierGradeNat'],
    ['fc00::1', 'uniqueLocal'],
    ['fd12:3456::1', 'uniqueLocal'],
    ['224.0.0.1', 'multicast'],
    ['ff02::1', 'multicast'],
    ['255.255.255.255', 'broadcast'],
    ['240.0.0.1', 'reserved'],
    ['2001:db8::1', 'reserved'],
    ['::ffff:127.0.0.1', 'loopback'],
    ['::ffff:10.1.2.3', 'private'],
    ['::ffff:0:7f00:1', 'loopback'], // IPv4-translated (RFC 6145)
    ['64:ff9b::a00:5', 'private'], // NAT64 of 10.0.0.5
    ['2002:7f00:1::', 'loopback'], // 6to4 of 127.0.0.1
    ['::127.0.0.1', 'loopback'], // deprecated IPv4-compatible
    ['2001::1', 'teredo'],
    ['127.1', 'invalid'],
    ['2130706433', 'invalid'],
    ['not-an-ip', 'invalid'],
  ];
  for (const [ip, range] of refused)
    it(`refuses ${ip} as ${range}`, () => {
      assert.deepEqual(isRefusedAddress(ip), { refused: true, range });
    });

  for (const ip of ['93.184.216.34', '8.8.8.8', '::ffff:8.8.8.8', '64:ff9b::808:808', '2606:4700::1111'])
    it(`allows public ${ip}`, () => {
      assert.equal(isRefusedAddress(ip).refused, false);
    });
});

describe('gateway egress: targets', () => {
  it('parses CONNECT authorities, lowercasing names and canonicalising IP literals', () => {
    assert.deepEqual(parseConnectTarget('API.Example.com:443'), { host: 'api.example.com', port: 443 });
    assert.deepEqual(parseConnectTarget('[2606:4700:0::1111]:8443'), { host: '2606:4700::1111', port: 8443 });
    assert.deepEqual(parseConnectTarget('10.0.0.5:22'), { host: '10.0.0.5', port: 22 });
  });

  for (const bad of [
    undefined,
    '',
    'example.com',
    'example.com:',
    ':443',
    'example.com:https',
    'a@example.com:443',
    'example.com:443/x',
    '::1:443',
    '[::1]',
    '[10.0.0.1]:80',
    '0x7f.1:80',
    '1.2.3:80',
    'a..b:443',
    '-a.com:443',
    `${'a'.repeat(64)}.com:443`,
    'example.com:65536',
  ])
    it(`refuses the CONNECT target ${JSON.stringify(bad)} as malformed`, () => {
      assert.throws(() => parseConnectTarget(bad), refusedWith('malformed_target'));
    });

  it('parses absolute URIs (port 80 by default) and refuses other schemes and userinfo', () => {
    assert.deepEqual(parseAbsoluteTarget('http://Example.com/x?y').target, { host: 'example.com', port: 80 });
    assert.deepEqual(parseAbsoluteTarget('http://[::1]:8080/').target, { host: '::1', port: 8080 });
    // The URL parser reads numeric shorthands as the address they denote; the rules then see that address.
    assert.deepEqual(parseAbsoluteTarget('http://2130706433/').target, { host: '127.0.0.1', port: 80 });
    for (const bad of ['https://example.com/', 'ftp://example.com/', 'http://u:p@example.com/', 'http://@example.com/', '/relative', 'http:\\\\example.com/'])
      assert.throws(() => parseAbsoluteTarget(bad), refusedWith('malformed_target'), bad);
  });
});

describe('gateway egress: allowlist along the chain', () => {
  const root = policy('root', [
    { host: '*.example.com', ports: [443] },
    { host: 'api.openai.com', ports: [443, 8443] },
    { host: '0:0:0:0:0:0:0:1', ports: [8080] },
    { host: '127.0.0.1', ports: [8080] },
  ]);
  const allowed = (host: string, port: number, chain = [root]): boolean => {
    try {
      egressAllowed(principal(chain), host, port);
      return true;
    } catch (e) {
      assert.ok(e instanceof CordonError && e.code === 'access_denied');
      return false;
    }
  };

  it('a wildcard covers every subdomain but not the apex or a look-alike', () => {
    assert.ok(allowed('a.example.com', 443));
    assert.ok(allowed('a.b.example.com', 443));
    assert.ok(!allowed('example.com', 443));
    assert.ok(!allowed('evilexample.com', 443));
    assert.ok(!allowed('a.example.com.evil.net', 443));
    assert.ok(!allowed('a.example.com', 80));
  });

  it('exact names match case-insensitively, on listed ports only', () => {
    assert.ok(allowed('API.OpenAI.com', 8443));
    assert.ok(!allowed('api.openai.com', 80));
    assert.ok(!allowed('openai.com', 443));
  });

  it('IP rules match their literal in any spelling and nothing else', () => {
    assert.ok(allowed('::1', 8080));
    assert.ok(allowed('[0::1]', 8080));
    assert.ok(allowed('127.0.0.1', 8080));
    assert.ok(!allowed('::ffff:127.0.0.1', 8080), 'the mapped form is a different literal');
    assert.ok(!allowed('localhost', 8080));
  });

  it('every policy along the chain must allow; the refusal names the first that does not', () => {
    const middle = policy('middle', [{ host: '*.example.com', ports: [443] }]);
    const leaf = policy('leaf', [{ host: 'a.example.com', ports: [443] }]);
    assert.ok(allowed('a.example.com', 443, [root, middle, leaf]));
    assert.ok(!allowed('b.example.com', 443, [root, middle, leaf]));
    assert.throws(() => egressAllowed(principal([root, policy('middle', []), leaf]), 'a.example.com', 443), /policy "middle"/);
    assert.throws(() => egressAllowed(principal([]), 'a.example.com', 443), refusedWith('egress_not_allowed'));
  });
});

describe('gateway egress: resolving once', () => {
  const lookupOf = (answers: Record<string, string[]>, calls: string[]) => async (host: string) => {
    calls.push(host);
    if (!answers[host]) throw new Error('ENOTFOUND');
    return answers[host].map((address) => ({ address, family: address.includes(':') ? 6 : 4 }));
  };

  it('returns the first address of a public name and never looks up a literal', async () => {
    const calls: string[] = [];
    const lookup = lookupOf({ 'a.example.com': ['93.184.216.34', '2606:2800::1'] }, calls);
    assert.equal(await resolveDestination({ host: 'a.example.com', port: 443 }, lookup), '93.184.216.34');
    assert.equal(await resolveDestination({ host: '127.0.0.1', port: 443 }, lookup), '127.0.0.1');
    assert.deepEqual(calls, ['a.example.com']);
  });

  it('refuses a name if any of its addresses is refused, and localhost names without asking', async () => {
    const calls: string[] = [];
    const lookup = lookupOf({ rebind: ['93.184.216.34', 'fd00:ec2::254'] }, calls);
    await assert.rejects(resolveDestination({ host: 'rebind', port: 443 }, lookup), refusedWith('refused_address'));
    await assert.rejects(resolveDestination({ host: 'localhost', port: 443 }, lookup), refusedWith('refused_address'));
    await assert.rejects(resolveDestination({ host: 'x.localhost', port: 443 }, lookup), refusedWith('refused_address'));
    assert.deepEqual(calls, ['rebind']);
  });

  it('answers bad_gateway when the name does not resolve', async () => {
    await assert.rejects(resolveDestination({ host: 'nowhere', port: 443 }, lookupOf({ nowhere: [] }, [])), refusedWith('resolve_failed'));
    await assert.rejects(resolveDestination({ host: 'other', port: 443 }, lookupOf({}, [])), refusedWith('resolve_failed'));
  });
});

describe('gateway egress: Proxy-Authorization', () => {
  it('reads Bearer and Basic cordon:<token>', () => {
    assert.equal(proxyToken('Bearer abc.def-ghi_jkl'), 'abc.def-ghi_jkl');
    assert.equal(proxyToken('bearer abc'), 'abc');
    assert.equal(proxyToken(basic('cordon', 'abc.def')), 'abc.def');
  });

  it('refuses anything else as invalid_token', () => {
    assert.throws(() => proxyToken(undefined), refusedWith('no_token'));
    for (const bad of ['', 'Bearer', 'Bearer a b', 'Digest x', basic('other', 'abc'), basic('cordon', ''), `Basic ${Buffer.from('cordon').toString('base64')}`])
      assert.throws(
        () => proxyToken(bad),
        (e: unknown) => e instanceof CordonError && e.code === 'invalid_token',
        bad,
      );
  });
});
