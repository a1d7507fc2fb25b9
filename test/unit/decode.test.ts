import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  arpRequest,
  buildPacket,
  ethernet,
  ipv4,
  ipv6,
  pcapFile,
  tcp,
  udp,
  type PacketSpec,
} from '../helpers/build-packet.js';
import { decode } from '../../agent/packet/decode.js';
import {
  ETHERTYPE_IPV4,
  ETHERTYPE_IPV6,
  IPPROTO_ESP,
  IPPROTO_NONE,
  IPPROTO_TCP,
  IPPROTO_UDP,
} from '../../agent/packet/offsets.js';
import { DECODE_ARP, DECODE_MALFORMED, DECODE_NON_IP, DECODE_OK, PacketView } from '../../agent/packet/view.js';

const view = new PacketView();

function run(frame: Buffer, caplen = frame.length, wireLen = frame.length): number {
  return decode(view, frame, caplen, wireLen);
}

function expectMalformed(frame: Buffer, reason: string, caplen = frame.length, wireLen = frame.length): void {
  expect(run(frame, caplen, wireLen)).toBe(DECODE_MALFORMED);
  expect(view.malformedReason).toBe(reason);
}

const A = '10.0.0.2';
const B = '10.0.0.1';
const A6 = '2001:db8::2';
const B6 = '2001:db8::1';
const v4 = (payload: Buffer, more: Partial<Parameters<typeof ipv4>[0]> = {}): Buffer =>
  ethernet({ etherType: ETHERTYPE_IPV4, payload: ipv4({ src: A, dst: B, protocol: IPPROTO_TCP, payload, ...more }) });
const v6 = (payload: Buffer, more: Partial<Parameters<typeof ipv6>[0]> = {}): Buffer =>
  ethernet({ etherType: ETHERTYPE_IPV6, payload: ipv6({ src: A6, dst: B6, nextHeader: IPPROTO_TCP, payload, ...more }) });

describe('decode: well-formed frames', () => {
  it('reads every TCP field over IPv4', () => {
    const frame = v4(tcp({ srcPort: 40000, dstPort: 443, seq: 0xfffffff0, ack: 7, flags: 0x18, window: 1234, payload: Buffer.alloc(100) }));
    expect(run(frame)).toBe(DECODE_OK);
    expect(view).toMatchObject({
      etherType: ETHERTYPE_IPV4, vlanTags: 0, ipVersion: 4, l3Offset: 14, ipLength: 140, protocol: 6,
      l4Offset: 34, srcPort: 40000, dstPort: 443, hasPorts: true, tcpFlags: 0x18, tcpSeq: 0xfffffff0,
      tcpAck: 7, tcpWindow: 1234, payloadLength: 100, isFragment: false, malformedReason: '',
    });
    expect([...view.src]).toEqual([0x0a000002, 0, 0, 0]);
    expect([...view.dst]).toEqual([0x0a000001, 0, 0, 0]);
  });

  it('uses the TCP data offset for options and payload length', () => {
    const frame = v4(tcp({ srcPort: 1, dstPort: 2, options: Buffer.alloc(12, 1), payload: Buffer.alloc(5) }));
    expect(run(frame)).toBe(DECODE_OK);
    expect(view.payloadLength).toBe(5);
  });

  it('skips IPv4 options', () => {
    const frame = v4(udp({ srcPort: 53, dstPort: 5353, payload: Buffer.alloc(3) }), { protocol: IPPROTO_UDP, options: Buffer.alloc(8, 1) });
    expect(run(frame)).toBe(DECODE_OK);
    expect(view).toMatchObject({ l4Offset: 14 + 28, srcPort: 53, dstPort: 5353, payloadLength: 3, ipLength: 39 });
  });

  it('ignores Ethernet padding after the IP packet', () => {
    const frame = Buffer.concat([v4(tcp({ srcPort: 1, dstPort: 2 })), Buffer.alloc(6)]);
    expect(run(frame)).toBe(DECODE_OK);
    expect(view).toMatchObject({ ipLength: 40, payloadLength: 0 });
  });

  it('reads ICMP and ICMPv6 type and code, without ports', () => {
    expect(run(buildPacket({ src: A, dst: B, proto: 'icmp', icmpType: 3, icmpCode: 4 }))).toBe(DECODE_OK);
    expect(view).toMatchObject({ protocol: 1, icmpType: 3, icmpCode: 4, srcPort: 0, dstPort: 0 });
    expect(run(buildPacket({ src: A6, dst: B6, proto: 'icmp', icmpType: 135 }))).toBe(DECODE_OK);
    expect(view).toMatchObject({ protocol: 58, icmpType: 135, icmpCode: 0 });
  });

  it('records other protocols without ports', () => {
    expect(run(buildPacket({ src: A, dst: B, proto: 47, payload: 20 }))).toBe(DECODE_OK);
    expect(view).toMatchObject({ protocol: 47, srcPort: 0, dstPort: 0, l4Offset: 34, payloadLength: 20 });
  });

  it('decodes single, QinQ and triple VLAN stacks to the inner IP', () => {
    for (const vlans of [[100], [10, 20], [1, 2, 3]]) {
      expect(run(buildPacket({ src: A, dst: B, proto: 'udp', srcPort: 5, dstPort: 6, vlans }))).toBe(DECODE_OK);
      expect(view).toMatchObject({ vlanTags: vlans.length, l3Offset: 14 + 4 * vlans.length, etherType: ETHERTYPE_IPV4, dstPort: 6 });
    }
  });

  it('reports ARP and non-IP frames', () => {
    expect(run(arpRequest(A, B))).toBe(DECODE_ARP);
    expect(run(ethernet({ etherType: 0x88cc, payload: Buffer.alloc(40) }))).toBe(DECODE_NON_IP);
    expect(view).toMatchObject({ etherType: 0x88cc, ipVersion: 0 });
    expect(run(ethernet({ vlans: [{ vid: 3 }], etherType: 0x0806, payload: Buffer.alloc(28) }))).toBe(DECODE_ARP);
  });

  it('reads IPv4 fragments: the first has ports, later ones do not', () => {
    const first = buildPacket({ src: A, dst: B, proto: 'tcp', srcPort: 7, dstPort: 80, ipId: 0xbeef, fragment: { offset: 0, more: true }, payload: 12 });
    expect(run(first)).toBe(DECODE_OK);
    expect(view).toMatchObject({ isFragment: true, fragOffset: 0, fragId: 0xbeef, hasPorts: true, dstPort: 80 });
    const later = buildPacket({ src: A, dst: B, proto: 'tcp', ipId: 0xbeef, fragment: { offset: 1480, more: false }, payload: 20 });
    expect(run(later)).toBe(DECODE_OK);
    expect(view).toMatchObject({ isFragment: true, fragOffset: 1480, fragId: 0xbeef, hasPorts: false, l4Offset: -1, srcPort: 0, dstPort: 0, protocol: 6 });
  });

  it('walks IPv6 hop-by-hop, routing, destination options and AH headers', () => {
    const frame = buildPacket({
      src: A6, dst: B6, proto: 'tcp', srcPort: 9, dstPort: 22,
      v6ext: [{ type: 0 }, { type: 43, length: 24 }, { type: 51, length: 24 }, { type: 60, length: 16 }],
    });
    expect(run(frame)).toBe(DECODE_OK);
    expect(view).toMatchObject({ ipVersion: 6, protocol: 6, l4Offset: 14 + 40 + 8 + 24 + 24 + 16, dstPort: 22, ipLength: 40 + 72 + 20 });
    expect([...view.src]).toEqual([0x20010db8, 0, 0, 2]);
  });

  it('stops at ESP and no-next-header', () => {
    expect(run(v6(Buffer.alloc(16), { nextHeader: IPPROTO_ESP, ext: [{ type: 60 }] }))).toBe(DECODE_OK);
    expect(view).toMatchObject({ protocol: IPPROTO_ESP, srcPort: 0, l4Offset: 14 + 48 });
    expect(run(v6(Buffer.alloc(0), { nextHeader: IPPROTO_NONE }))).toBe(DECODE_OK);
    expect(view).toMatchObject({ protocol: IPPROTO_NONE, payloadLength: 0 });
  });

  it('records IPv6 fragment headers', () => {
    const first = buildPacket({ src: A6, dst: B6, proto: 'udp', srcPort: 1, dstPort: 53, ipId: 0xfedcba98, fragment: { offset: 0, more: true }, payload: 16 });
    expect(run(first)).toBe(DECODE_OK);
    expect(view).toMatchObject({ isFragment: true, fragOffset: 0, fragId: 0xfedcba98, protocol: 17, dstPort: 53, hasPorts: true });
    const later = buildPacket({ src: A6, dst: B6, proto: 'udp', ipId: 0xfedcba98, fragment: { offset: 1232, more: true }, payload: 8 });
    expect(run(later)).toBe(DECODE_OK);
    expect(view).toMatchObject({ isFragment: true, fragOffset: 1232, protocol: 17, hasPorts: false, l4Offset: -1, dstPort: 0 });
  });

  it('treats an unknown IPv6 next header as a transport without ports', () => {
    expect(run(v6(Buffer.alloc(8), { nextHeader: 253 }))).toBe(DECODE_OK);
    expect(view).toMatchObject({ protocol: 253, srcPort: 0, hasPorts: true, l4Offset: 54 });
  });

  it('accepts a frame cut by the snap length when the headers are there', () => {
    const frame = v4(tcp({ srcPort: 1, dstPort: 80, payload: Buffer.alloc(1400) }));
    expect(run(frame, 54, frame.length)).toBe(DECODE_OK);
    expect(view).toMatchObject({ caplen: 54, wireLen: frame.length, dstPort: 80, payloadLength: 1400, ipLength: 1440 });
    // TCP options cut by the snap length still leave ports and flags readable.
    const withOptions = v4(tcp({ srcPort: 1, dstPort: 80, options: Buffer.alloc(20, 1) }));
    expect(run(withOptions, 60, withOptions.length)).toBe(DECODE_OK);
  });

  it('resets every field between packets', () => {
    run(buildPacket({ src: A6, dst: B6, proto: 'tcp', srcPort: 1, dstPort: 2, tcpFlags: 0x12, ipId: 3, fragment: { offset: 0, more: true }, payload: 8 }));
    run(arpRequest(A, B));
    const fresh = new PacketView();
    const { buf: _b, caplen: _c, wireLen: _w, etherType: _e, l3Offset: _l, ...rest } = view;
    const { buf: _b2, caplen: _c2, wireLen: _w2, etherType: _e2, l3Offset: _l2, ...restFresh } = fresh;
    expect(rest).toEqual(restFresh);
    run(buildPacket({ src: A, dst: B, proto: 'icmp', icmpType: 8 }));
    run(buildPacket({ src: A, dst: B, proto: 'tcp', ipId: 4, fragment: { offset: 8, more: false } }));
    expect(view).toMatchObject({ icmpType: 0, tcpFlags: 0, hasPorts: false });
  });
});

describe('decode: malformed frames', () => {
  const good = buildPacket({ src: A, dst: B, proto: 'tcp', srcPort: 1, dstPort: 2 });

  it('runt Ethernet frames', () => {
    expectMalformed(Buffer.alloc(0), 'eth-truncated');
    expectMalformed(good.subarray(0, 13), 'eth-truncated');
    expectMalformed(good, 'eth-truncated', 13);
  });

  it('truncated or excessive VLAN tags', () => {
    expectMalformed(buildPacket({ src: A, dst: B, proto: 'tcp', vlans: [1] }).subarray(0, 16), 'vlan-truncated');
    expectMalformed(buildPacket({ src: A, dst: B, proto: 'tcp', vlans: [1, 2, 3, 4] }), 'vlan-too-many-tags');
  });

  it('truncated IPv4 header and options', () => {
    expectMalformed(good.subarray(0, 14 + 19), 'ip-truncated');
    const withOptions = v4(tcp({ srcPort: 1, dstPort: 2 }), { options: Buffer.alloc(12) });
    expectMalformed(withOptions, 'ip-truncated', 14 + 24);
  });

  it('bad IHL and bad version', () => {
    expectMalformed(v4(tcp({ srcPort: 1, dstPort: 2 }), { ihl: 4 }), 'ipv4-bad-ihl');
    expectMalformed(v4(tcp({ srcPort: 1, dstPort: 2 }), { version: 6 }), 'ipv4-bad-version');
    expectMalformed(v6(tcp({ srcPort: 1, dstPort: 2 }), { version: 4 }), 'ipv6-bad-version');
  });

  it('IP lengths that claim more than the wire carried', () => {
    expectMalformed(v4(tcp({ srcPort: 1, dstPort: 2 }), { totalLength: 41 }), 'ipv4-bad-total-length');
    expectMalformed(v4(tcp({ srcPort: 1, dstPort: 2 }), { totalLength: 19 }), 'ipv4-bad-total-length');
    expectMalformed(v6(tcp({ srcPort: 1, dstPort: 2 }), { payloadLength: 21 }), 'ipv6-bad-payload-length');
    // Snap-length truncation is judged against the wire length, not caplen.
    expect(run(good, 54, good.length)).toBe(DECODE_OK);
    expectMalformed(good, 'ipv4-bad-total-length', 40, 50);
  });

  it('truncated transport headers', () => {
    expectMalformed(good, 'l4-truncated', 14 + 20 + 19);
    const udpFrame = buildPacket({ src: A, dst: B, proto: 'udp', srcPort: 1, dstPort: 2 });
    expectMalformed(udpFrame, 'l4-truncated', 14 + 20 + 7);
    const icmpFrame = buildPacket({ src: A6, dst: B6, proto: 'icmp' });
    expectMalformed(icmpFrame, 'l4-truncated', 14 + 40 + 3);
    // A TCP header longer than the IP packet says it is.
    expectMalformed(v4(tcp({ srcPort: 1, dstPort: 2 }).subarray(0, 12), { protocol: IPPROTO_TCP }), 'l4-truncated');
  });

  it('bad TCP data offset', () => {
    expectMalformed(v4(tcp({ srcPort: 1, dstPort: 2, dataOffset: 4 })), 'tcp-bad-data-offset');
    expectMalformed(v4(tcp({ srcPort: 1, dstPort: 2, dataOffset: 15 })), 'tcp-bad-data-offset');
  });

  it('truncated IPv6 header and extension headers', () => {
    const frame = buildPacket({ src: A6, dst: B6, proto: 'tcp', srcPort: 1, dstPort: 2, v6ext: [{ type: 60, length: 24 }] });
    expectMalformed(frame, 'ip-truncated', 14 + 39);
    expectMalformed(frame, 'ipv6-ext-truncated', 14 + 40 + 7);
    expectMalformed(frame, 'ipv6-ext-truncated', 14 + 40 + 16);
    // The length byte claims more than the IPv6 payload holds.
    expectMalformed(v6(Buffer.alloc(0), { ext: [{ type: 60, length: 16 }], payloadLength: 8 }), 'ipv6-ext-truncated');
  });

  it('bogus IPv6 extension chains', () => {
    expectMalformed(v6(tcp({ srcPort: 1, dstPort: 2 }), { ext: Array.from({ length: 9 }, () => ({ type: 60 })) }), 'ipv6-ext-too-many');
    expectMalformed(v6(tcp({ srcPort: 1, dstPort: 2 }), { ext: [{ type: 60 }, { type: 0 }] }), 'ipv6-hbh-not-first');
  });
});

describe('decode agrees with tshark', () => {
  const dir = mkdtempSync(join(tmpdir(), 'mf-decode-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const specs: PacketSpec[] = [
    { src: A, dst: B, proto: 'tcp', srcPort: 40000, dstPort: 443, tcpFlags: 0x12, payload: 10 },
    { src: A, dst: B, proto: 'tcp', srcPort: 1, dstPort: 65535, tcpFlags: 0x11, vlans: [42] },
    { src: A, dst: B, proto: 'udp', srcPort: 5353, dstPort: 53, payload: 30, vlans: [10, 20] },
    { src: A, dst: B, proto: 'icmp', icmpType: 11, icmpCode: 1 },
    { src: A6, dst: B6, proto: 'tcp', srcPort: 22, dstPort: 50000, tcpFlags: 0x04, v6ext: [{ type: 0 }, { type: 60, length: 16 }] },
    { src: A6, dst: B6, proto: 'udp', srcPort: 123, dstPort: 123, payload: 48 },
    { src: A6, dst: B6, proto: 'icmp', icmpType: 129 },
    { src: A, dst: B, proto: 47, payload: 12 },
  ];

  it('on protocol, ports, TCP flags and ICMP type/code', () => {
    const frames = specs.map(buildPacket);
    const path = join(dir, 'decode.pcap');
    writeFileSync(path, pcapFile(frames));
    const fields = ['ip.proto', 'ipv6.nxt', 'ipv6.hopopts.nxt', 'ipv6.routing.nxt', 'ipv6.dstopts.nxt', 'tcp.srcport', 'tcp.dstport', 'udp.srcport', 'udp.dstport', 'tcp.flags', 'icmp.type', 'icmp.code', 'icmpv6.type', 'tcp.len'];
    const out = execFileSync(
      'tshark',
      ['-r', path, '-n', '-T', 'fields', '-E', 'separator=;', '-E', 'occurrence=l', ...fields.flatMap((f) => ['-e', f])],
      { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] },
    );
    const rows = out.trim().split('\n').map((l) => l.split(';'));
    expect(rows).toHaveLength(frames.length);
    const num = (s: string | undefined): number => (s === undefined || s === '' ? 0 : Number(s));
    frames.forEach((frame, i) => {
      expect(run(frame)).toBe(DECODE_OK);
      const [ipProto, v6Next, hbhNext, rtNext, dstNext, tsp, tdp, usp, udp_, flags, icmpType, icmpCode, icmp6Type, tcpLen] = rows[i]!;
      // The transport is the one next-header value in the chain that is not an extension header.
      const theirProto = view.ipVersion === 4
        ? num(ipProto)
        : [v6Next, hbhNext, rtNext, dstNext].map(num).find((n) => ![0, 43, 44, 51, 60].includes(n));
      const mine = {
        protocol: view.protocol,
        srcPort: view.srcPort,
        dstPort: view.dstPort,
        tcpFlags: view.tcpFlags,
        icmpType: view.icmpType,
        icmpCode: view.icmpCode,
        tcpPayload: view.protocol === IPPROTO_TCP ? view.payloadLength : 0,
      };
      expect(mine, `frame ${i}`).toEqual({
        protocol: theirProto,
        srcPort: num(tsp) || num(usp),
        dstPort: num(tdp) || num(udp_),
        tcpFlags: num(flags) & 0xff,
        icmpType: num(icmpType) || num(icmp6Type),
        icmpCode: num(icmpCode),
        tcpPayload: num(tcpLen),
      });
    });
  });
});
