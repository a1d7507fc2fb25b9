// agent/packet/address.ts: the one parser and formatter of IP addresses. Output is checked
// against RFC 5952's rules and, for every case, against the C library's inet_ntop (via
// node's SocketAddress, which formats with libuv's uv_inet_ntop).

import { SocketAddress } from 'node:net';
import { describe, expect, it } from 'vitest';
import { formatAddress, formatIp, parseAddress, parseIp, unmapIp, wireAddress, wordsOf } from '../../agent/packet/address.js';

const canonical = (text: string): string => formatIp(parseIp(text)!);
const ntop = (text: string): string => new SocketAddress({ address: text, family: 'ipv6' }).address;

describe('RFC 5952 output', () => {
  it.each([
    // §4.1 leading zeros dropped; §4.3 lowercase
    ['2001:0DB8:0000:0000:0000:0000:0000:0001', '2001:db8::1'],
    ['2001:DB8:AbCd::eF', '2001:db8:abcd::ef'],
    // §4.2.1 "::" shortens as much as possible
    ['2001:db8:0:0:0:0:2:1', '2001:db8::2:1'],
    // §4.2.2 a single 16-bit 0 field is not compressed
    ['2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1'],
    // §4.2.3 the longest run is compressed; on equal runs, the first
    ['2001:0:0:1:0:0:0:1', '2001:0:0:1::1'],
    ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'],
    // runs at either end, and the extremes
    ['0:0:0:0:0:0:0:1', '::1'],
    ['fe80:0:0:0:0:0:0:0', 'fe80::'],
    ['0:0:0:0:0:0:0:0', '::'],
    ['1:2:3:4:5:6:7:8', '1:2:3:4:5:6:7:8'],
    ['1:0:3:4:5:6:7:0', '1:0:3:4:5:6:7:0'],
    // §5 IPv4-mapped in mixed notation, whichever way it was written
    ['::ffff:192.0.2.1', '::ffff:192.0.2.1'],
    ['0:0:0:0:0:FFFF:C000:0201', '::ffff:192.0.2.1'],
    ['::ffff:0.0.0.0', '::ffff:0.0.0.0'],
  ])('%s -> %s', (input, expected) => {
    expect(canonical(input)).toBe(expected);
    expect(canonical(input)).toBe(ntop(input));
    // The canonical form parses back to the same bytes.
    expect(parseIp(expected)!.bytes).toEqual(parseIp(input)!.bytes);
  });

  it('agrees with inet_ntop on 2000 random addresses with zero-heavy groups', () => {
    let seed = 14;
    const next = (): number => (seed = (seed * 1103515245 + 12345) >>> 0);
    for (let n = 0; n < 2000; n++) {
      const groups = Array.from({ length: 8 }, () => (next() % 3 === 0 ? next() & 0xffff : 0).toString(16));
      const text = groups.join(':');
      // inet_ntop writes ::/96 as the deprecated IPv4-compatible form (::240.0.0.0, RFC 4291
      // §2.5.5.1); RFC 5952 §5 keeps mixed notation for well-known prefixes only.
      const compatible = groups.slice(0, 6).every((g) => g === '0') && groups.slice(6).some((g) => g !== '0');
      if (compatible) expect(canonical(text), text).not.toContain('.');
      else expect(canonical(text), text).toBe(ntop(text));
    }
  });

  it('IPv4 is dotted decimal', () => {
    expect(canonical('192.0.2.255')).toBe('192.0.2.255');
    expect(formatAddress(4, [0xc0000201])).toBe('192.0.2.1');
  });

  it('formats signed Int32Array words from an offset (the flow key layout)', () => {
    const key = new Int32Array([7, ...parseAddress('ffff:8000::fe').words, 9]);
    expect(key[1]).toBeLessThan(0);
    expect(formatAddress(6, key, 1)).toBe('ffff:8000::fe');
    expect(formatAddress(4, new Int32Array([0, 0xc0a80001 | 0]), 1)).toBe('192.168.0.1');
  });
});

describe('parsing', () => {
  it('reads IPv4, IPv6 and embedded IPv4 into network-order bytes and words', () => {
    expect([...parseIp('10.1.2.3')!.bytes]).toEqual([10, 1, 2, 3]);
    expect(parseIp('10.1.2.3')!.family).toBe(4);
    expect([...parseIp('::ffff:10.1.2.3')!.bytes]).toEqual([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 1, 2, 3]);
    expect([...parseAddress('2001:db8::1').words]).toEqual([0x20010db8, 0, 0, 1]);
    expect([...wordsOf(Uint8Array.of(192, 0, 2, 1))]).toEqual([0xc0000201, 0, 0, 0]);
  });

  it.each(['1.2.3', '256.1.1.1', 'fe80::1%eth0', '1::2::3', '12345::', 'example.com', ''])('refuses %j', (text) => {
    expect(parseIp(text)).toBeUndefined();
    expect(() => parseAddress(text)).toThrow(`not an IP address: ${JSON.stringify(text)}`);
  });

  it('an IPv4-mapped address is, on the wire, the IPv4 address it maps', () => {
    expect(wireAddress('::ffff:192.0.2.7')).toEqual({ family: 4, bytes: Uint8Array.of(192, 0, 2, 7) });
    expect(wireAddress('::ffff:c000:207')).toEqual({ family: 4, bytes: Uint8Array.of(192, 0, 2, 7) });
    expect(wireAddress('2001:db8::7').family).toBe(6);
    // Only ::ffff:0:0/96 maps; the deprecated IPv4-compatible form stays IPv6.
    expect(unmapIp(parseIp('::192.0.2.7')!).family).toBe(6);
  });
});
