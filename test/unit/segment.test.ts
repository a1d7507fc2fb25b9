// The segmenter against aggregates built in code (TSO/GSO/GRO TCP over IPv4 and IPv6, VLAN
// tags, UDP GSO, ECN and AccECN, FIN/PSH, BIG TCP, a short last segment, header-only
// captures, nonsense): each segment's lengths, IP id, sequence number, flags and payload are
// checked here, and the checksums and per-segment sequence/length by tshark, which knows
// nothing of our code (checksum validation switched on).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { decode } from '../../agent/packet/decode.js';
import { GSO_NONE, GSO_TCPV4, GSO_TCPV6, GSO_UDP, GSO_UDP_L4, OffloadInfo } from '../../agent/packet/offload.js';
import { IPPROTO_TCP } from '../../agent/packet/offsets.js';
import { GSO_ENCAPSULATED, MAX_SEGMENTS, Segmenter } from '../../agent/packet/segment.js';
import { DECODE_OK, PacketView } from '../../agent/packet/view.js';
import { ACK, aggregate, GOOD, tshark as tsharkRead, vxlanAggregate, type AggregateSpec, type TsharkRow } from '../helpers/aggregate.js';

const FIN = 0x01;
const PSH = 0x08;
const ECE = 0x40;
const CWR = 0x80;

const dir = mkdtempSync(join(tmpdir(), 'mf-segment-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

interface Segment { frame: Buffer; caplen: number; wireLen: number }

function segmentAll(frame: Buffer, offload: OffloadInfo, opts: { caplen?: number; withPayload?: boolean } = {}): Segment[] {
  const seg = new Segmenter();
  const n = seg.begin(frame, opts.caplen ?? frame.length, frame.length, offload);
  expect(n, seg.malformedReason).toBeGreaterThan(0);
  const out: Segment[] = [];
  for (let k = 0; k < n; k++) {
    seg.build(k, opts.withPayload ?? true);
    out.push({ frame: Buffer.from(seg.frame.subarray(0, seg.caplen)), caplen: seg.caplen, wireLen: seg.wireLen });
  }
  return out;
}

/** tshark's reading of the segments (checksum validation on). */
function tshark(segments: Segment[], name: string): TsharkRow[] {
  return tsharkRead(segments.map((s) => s.frame), join(dir, `${name}.pcap`));
}

function viewOf(s: Segment): PacketView {
  const view = new PacketView();
  expect(decode(view, s.frame, s.caplen, s.wireLen), view.malformedReason).toBe(DECODE_OK);
  return view;
}

describe('TCP aggregates (TSO/GSO on transmit, GRO on receive)', () => {
  const cases: { name: string; spec: AggregateSpec }[] = [
    { name: 'IPv4, PSH|FIN on the aggregate, short last segment', spec: { family: 4, proto: 'tcp', payload: 1448 * 9 + 777, gsoSize: 1448, flags: ACK | PSH | FIN } },
    { name: 'IPv6 behind an 802.1Q tag', spec: { family: 6, proto: 'tcp', payload: 1428 * 12, gsoSize: 1428, flags: ACK | PSH, vlans: [42] } },
    { name: 'IPv4 behind QinQ tags, no TCP options', spec: { family: 4, proto: 'tcp', payload: 8000, gsoSize: 1460, vlans: [100, 200], tcpOptions: Buffer.alloc(0) } },
    { name: 'IPv6 with a destination options header', spec: { family: 6, proto: 'tcp', payload: 5000, gsoSize: 1400, v6ext: [{ type: 60, length: 16 }] } },
    { name: 'IPv4 sequence numbers wrapping past 2^32', spec: { family: 4, proto: 'tcp', payload: 6000, gsoSize: 1448, seq: 0xffffff00, ipId: 0xfffe } },
  ];

  it.each(cases)('$name: each segment as the wire carries it, tshark agrees', ({ name, spec }) => {
    const { frame, offload, payload } = aggregate(spec);
    const segments = segmentAll(frame, offload);
    const g = spec.gsoSize;
    const n = Math.ceil(spec.payload / g);
    expect(segments).toHaveLength(n);
    const seq0 = spec.seq ?? 1_000_000;
    const flags = spec.flags ?? ACK;
    segments.forEach((s, k) => {
      const v = viewOf(s);
      const len = k === n - 1 ? spec.payload - k * g : g;
      expect(s.caplen).toBe(s.wireLen);
      expect(v.payloadLength).toBe(len);
      expect(v.ipLength).toBe(s.wireLen - v.l3Offset);
      expect(v.tcpSeq).toBe((seq0 + k * g) >>> 0);
      expect(v.tcpFlags).toBe(k === n - 1 ? flags : flags & ~(FIN | PSH));
      expect(v.vlanTags).toBe(spec.vlans?.length ?? 0);
      if (v.ipVersion === 4) expect(v.fragId).toBe(((spec.ipId ?? 0x1234) + k) & 0xffff);
      expect(s.frame.subarray(s.caplen - len).equals(payload.subarray(k * g, k * g + len))).toBe(true);
    });
    const rows = tshark(segments, name.replace(/\W+/g, '-'));
    expect(rows).toHaveLength(n);
    rows.forEach((r, k) => {
      if (spec.family === 4) expect(r.ipCsum).toBe(GOOD);
      expect(r.l4Csum, `segment ${k}`).toBe(GOOD);
      expect(Number(r.seq)).toBe((seq0 + k * g) >>> 0);
      expect(Number(r.tcpLen)).toBe(k === n - 1 ? spec.payload - k * g : g);
    });
  });

  it('ECN: CWR on the first segment only, ECE on all; with AccECN CWR stays on all', () => {
    const classic = segmentAll(...fromAggregate({ family: 4, proto: 'tcp', payload: 4000, gsoSize: 1000, flags: ACK | CWR | ECE, ecn: true }));
    expect(classic.map((s) => viewOf(s).tcpFlags)).toEqual([ACK | CWR | ECE, ACK | ECE, ACK | ECE, ACK | ECE]);
    const accecn = segmentAll(...fromAggregate({ family: 6, proto: 'tcp', payload: 4000, gsoSize: 1000, flags: ACK | CWR, accecn: true }));
    expect(accecn.map((s) => viewOf(s).tcpFlags)).toEqual([ACK | CWR, ACK | CWR, ACK | CWR, ACK | CWR]);
    expect(tshark(accecn, 'accecn').every((r) => r.l4Csum === GOOD)).toBe(true);
  });

  it('BIG TCP over IPv4: total length 0, the frame\'s length counts', () => {
    const { frame, offload } = aggregate({ family: 4, proto: 'tcp', payload: 70_000, gsoSize: 1448, bigTcp: true });
    expect(frame.readUInt16BE(14 + 2)).toBe(0);
    const segments = segmentAll(frame, offload);
    expect(segments).toHaveLength(Math.ceil(70_000 / 1448));
    const rows = tshark(segments, 'big-tcp-v4');
    expect(rows.every((r) => r.ipCsum === GOOD && r.l4Csum === GOOD)).toBe(true);
    expect(rows.reduce((sum, r) => sum + Number(r.tcpLen), 0)).toBe(70_000);
  });

  it('BIG TCP over IPv6: payload length 0 and the jumbo hop-by-hop header, which segments do not carry', () => {
    const { frame, offload } = aggregate({ family: 6, proto: 'tcp', payload: 80_000, gsoSize: 1428, bigTcp: true, jumbo: true });
    const segments = segmentAll(frame, offload);
    expect(segments).toHaveLength(Math.ceil(80_000 / 1428));
    for (const s of segments) {
      const v = viewOf(s);
      expect(s.frame[14 + 6]).toBe(IPPROTO_TCP);
      expect(v.l4Offset).toBe(14 + 40);
    }
    const rows = tshark(segments, 'big-tcp-v6');
    expect(rows.every((r) => r.l4Csum === GOOD)).toBe(true);
    expect(rows.reduce((sum, r) => sum + Number(r.tcpLen), 0)).toBe(80_000);
    // Without the hop-by-hop header (payload length 0 alone) the result is the same.
    const bare = aggregate({ family: 6, proto: 'tcp', payload: 80_000, gsoSize: 1428, bigTcp: true });
    const again = segmentAll(bare.frame, bare.offload);
    expect(again.map((s) => s.frame.toString('hex'))).toEqual(segments.map((s) => s.frame.toString('hex')));
  });

  it('an aggregate no longer than one segment is one packet, its checksum completed', () => {
    const segments = segmentAll(...fromAggregate({ family: 4, proto: 'tcp', payload: 1000, gsoSize: 1448, flags: ACK | PSH }));
    expect(segments).toHaveLength(1);
    expect(viewOf(segments[0]!).tcpFlags).toBe(ACK | PSH);
    expect(tshark(segments, 'single')[0]!.l4Csum).toBe(GOOD);
  });
});

describe('a checksum that computes to 0', () => {
  /** Adjusts the first payload word so the segment's checksum comes out 0 (its folded sum 0xffff). */
  function zeroSumAggregate(proto: 'tcp' | 'udp'): Segment {
    const a = aggregate({ family: 4, proto, payload: 1000, gsoSize: 1448 });
    const at = a.offload.csumStart + a.offload.csumOffset;
    const first = segmentAll(a.frame, a.offload)[0]!;
    const sum = ~first.frame.readUInt16BE(at) & 0xffff;
    const word = a.frame.readUInt16BE(a.offload.hdrLen);
    let w = word + (0xffff - sum);
    w = (w & 0xffff) + (w >>> 16);
    a.frame.writeUInt16BE(w, a.offload.hdrLen);
    const [seg] = segmentAll(a.frame, a.offload);
    return seg!;
  }

  it('stays 0 in TCP, as tcp_gso_segment leaves it, and becomes 0xffff in UDP (RFC 768)', () => {
    const t = zeroSumAggregate('tcp');
    const u = zeroSumAggregate('udp');
    expect(t.frame.readUInt16BE(14 + 20 + 16)).toBe(0);
    expect(u.frame.readUInt16BE(14 + 20 + 6)).toBe(0xffff);
    expect(tshark([t, u], 'zero-sum').map((r) => r.l4Csum)).toEqual([GOOD, GOOD]);
  });
});

describe('UDP GSO (UDP_SEGMENT) and UDP GRO', () => {
  it.each([4, 6] as const)('IPv%s: own UDP length and valid checksum per datagram, short last one', (family) => {
    const { frame, offload, payload } = aggregate({ family, proto: 'udp', payload: 1200 * 7 + 300, gsoSize: 1200 });
    const segments = segmentAll(frame, offload);
    expect(segments).toHaveLength(8);
    segments.forEach((s, k) => {
      const v = viewOf(s);
      const len = k === 7 ? 300 : 1200;
      expect(v.payloadLength).toBe(len);
      expect(s.frame.readUInt16BE(v.l4Offset + 4)).toBe(8 + len);
      expect(s.frame.subarray(v.l4Offset + 8).equals(payload.subarray(k * 1200, k * 1200 + len))).toBe(true);
    });
    const rows = tshark(segments, `udp-gso-v${family}`);
    rows.forEach((r, k) => {
      expect(r.l4Csum).toBe(GOOD);
      expect(Number(r.udpLen)).toBe(k === 7 ? 308 : 1208);
      if (family === 4) {
        expect(r.ipCsum).toBe(GOOD);
        expect(Number(r.ipId)).toBe(0x1234 + k);
      }
    });
  });
});

describe('captures cut short (flow-log-only snap length)', () => {
  it('every segment keeps its headers and its wire length; the captured part of the payload is kept', () => {
    const { frame, offload } = aggregate({ family: 4, proto: 'tcp', payload: 1448 * 5, gsoSize: 1448, flags: ACK | PSH });
    const headerLen = frame.length - 1448 * 5;
    const cut = headerLen + 100;
    const segments = segmentAll(frame, offload, { caplen: cut });
    expect(segments.map((s) => s.caplen)).toEqual([cut, headerLen, headerLen, headerLen, headerLen]);
    expect(segments.map((s) => s.wireLen)).toEqual(Array(5).fill(headerLen + 1448));
    const views = segments.map(viewOf);
    expect(views.map((v) => v.payloadLength)).toEqual(Array(5).fill(1448));
    expect(views.map((v) => v.tcpSeq - 1_000_000)).toEqual([0, 1448, 2896, 4344, 5792]);
    expect(views.map((v) => v.tcpFlags)).toEqual([ACK, ACK, ACK, ACK, ACK | PSH]);
  });

  it('header-only builds from a whole capture carry no payload bytes', () => {
    const { frame, offload } = aggregate({ family: 6, proto: 'tcp', payload: 3000, gsoSize: 1000 });
    const segments = segmentAll(frame, offload, { withPayload: false });
    const headerLen = frame.length - 3000;
    expect(segments.map((s) => [s.caplen, s.wireLen])).toEqual(Array(3).fill([headerLen, headerLen + 1000]));
  });
});

describe('nonsense is counted, never thrown', () => {
  const good = () => aggregate({ family: 4, proto: 'tcp', payload: 5000, gsoSize: 1448 });
  const cases: { name: string; reason: string; make: () => { frame: Buffer; offload: OffloadInfo; caplen?: number; wireLen?: number } }[] = [
    { name: 'gsoSize 0', reason: 'gso-size-zero', make: () => { const a = good(); a.offload.gsoSize = 0; return a; } },
    { name: 'UFO (GSO_UDP), which Linux no longer reports', reason: 'gso-unsupported-type', make: () => { const a = good(); a.offload.gsoType = GSO_UDP; return a; } },
    { name: 'an unknown GSO type', reason: 'gso-unsupported-type', make: () => { const a = good(); a.offload.gsoType = 9; return a; } },
    { name: 'TCPV6 on an IPv4 frame', reason: 'gso-type-mismatch', make: () => { const a = good(); a.offload.gsoType = GSO_TCPV6; return a; } },
    { name: 'UDP_L4 on a TCP frame', reason: 'gso-type-mismatch', make: () => { const a = good(); a.offload.gsoType = GSO_UDP_L4; return a; } },
    { name: 'headers beyond the captured bytes', reason: 'gso-headers-truncated', make: () => ({ ...good(), caplen: 40 }) },
    { name: 'a runt', reason: 'gso-headers-truncated', make: () => ({ ...good(), caplen: 10 }) },
    { name: 'not IP', reason: 'gso-not-ip', make: () => { const a = good(); a.frame.writeUInt16BE(0x88cc, 12); return a; } },
    { name: 'an IPv4 fragment', reason: 'gso-fragment', make: () => { const a = good(); a.frame.writeUInt16BE(0x2000, 14 + 6); return a; } },
    { name: 'an IP length beyond the frame', reason: 'gso-bad-ip-length', make: () => { const a = good(); a.frame.writeUInt16BE(9000, 14 + 2); return a; } },
    { name: 'an IPv6 hop-by-hop header after another extension header', reason: 'gso-bad-ip-header', make: () => aggregate({ family: 6, proto: 'tcp', payload: 5000, gsoSize: 1400, v6ext: [{ type: 60 }, { type: 0 }] }) },
    { name: 'a TCP data offset below 5', reason: 'gso-bad-tcp-header', make: () => { const a = good(); a.frame[14 + 20 + 12] = 0x40; return a; } },
    { name: 'more segments than MAX_SEGMENTS', reason: 'gso-too-many-segments', make: () => { const a = aggregate({ family: 4, proto: 'tcp', payload: MAX_SEGMENTS + 1, gsoSize: 1 }); return a; } },
    { name: 'a segment too long for its IP header', reason: 'gso-size-too-large', make: () => aggregate({ family: 4, proto: 'tcp', payload: 70_000, gsoSize: 65_500, bigTcp: true }) },
  ];

  it.each(cases)('$name → $reason', ({ make, reason }) => {
    const { frame, offload, caplen, wireLen } = make();
    const seg = new Segmenter();
    expect(seg.begin(frame, caplen ?? frame.length, wireLen ?? frame.length, offload)).toBe(0);
    expect(seg.malformedReason).toBe(reason);
    expect(seg.count).toBe(0);
  });

  it.each(['tcp', 'udp'] as const)('a %s aggregate inside VXLAN is reported as encapsulated, not taken apart', (proto) => {
    const { frame, offload } = vxlanAggregate(aggregate({ family: 4, proto, payload: 6000, gsoSize: 1400 }));
    const seg = new Segmenter();
    expect(seg.begin(frame, frame.length, frame.length, offload)).toBe(0);
    expect(seg.malformedReason).toBe(GSO_ENCAPSULATED);
  });

  it('random frames with random offload information: no throw, segments always decode', () => {
    let state = 12345;
    const rand = (n: number): number => {
      state = (state * 1103515245 + 12345) >>> 0;
      return (state >>> 8) % n;
    };
    const seg = new Segmenter();
    const view = new PacketView();
    const offload = new OffloadInfo();
    let segmented = 0;
    for (let i = 0; i < 1000; i++) {
      const base = aggregate({ family: rand(2) ? 4 : 6, proto: rand(2) ? 'tcp' : 'udp', payload: 1 + rand(9000), gsoSize: 1 + rand(3000) });
      const frame = Buffer.from(base.frame);
      // Flip a few header bytes.
      for (let j = rand(4); j > 0; j--) frame[rand(Math.min(frame.length, 80))] = rand(256);
      offload.gsoType = rand(4) === 0 ? [GSO_NONE, GSO_TCPV4, GSO_TCPV6, GSO_UDP, GSO_UDP_L4][rand(5)]! : base.offload.gsoType;
      offload.gsoSize = rand(4) === 0 ? rand(3) : base.offload.gsoSize;
      const caplen = rand(3) === 0 ? rand(frame.length + 1) : frame.length;
      const n = seg.begin(frame, caplen, frame.length, offload);
      expect(n >= 0 && n <= MAX_SEGMENTS).toBe(true);
      if (n > 0) segmented++;
      for (let k = 0; k < n; k++) {
        seg.build(k, true);
        expect(seg.caplen).toBeLessThanOrEqual(seg.wireLen);
        expect(decode(view, seg.frame, seg.caplen, seg.wireLen), view.malformedReason).toBe(DECODE_OK);
      }
    }
    // The mutations leave many frames acceptable: the loop above did check segments.
    expect(segmented).toBeGreaterThan(100);
  });
});

describe('completeChecksum: a single CHECKSUM_PARTIAL packet', () => {
  it.each([
    { name: 'TCP over IPv4', spec: { family: 4, proto: 'tcp', payload: 333, gsoSize: 1448 } },
    { name: 'UDP over IPv6 behind a VLAN tag', spec: { family: 6, proto: 'udp', payload: 501, gsoSize: 1448, vlans: [7] } },
  ] as { name: string; spec: AggregateSpec }[])('$name: the pseudo-header sum becomes the real checksum', ({ name, spec }) => {
    const { frame, offload } = aggregate(spec);
    offload.gsoType = GSO_NONE;
    offload.gsoSize = 0;
    const view = new PacketView();
    expect(decode(view, frame, frame.length, frame.length)).toBe(DECODE_OK);
    expect(tshark([{ frame, caplen: frame.length, wireLen: frame.length }], `${name}-partial`.replace(/\W+/g, '-'))[0]!.l4Csum).not.toBe(GOOD);
    const before = Buffer.from(frame);
    const seg = new Segmenter();
    expect(seg.completeChecksum(view, offload)).toBe(true);
    expect(view.buf).toBe(seg.frame);
    expect(frame.equals(before)).toBe(true);
    const done = { frame: Buffer.from(seg.frame.subarray(0, view.caplen)), caplen: view.caplen, wireLen: view.wireLen };
    expect(tshark([done], `${name}-complete`.replace(/\W+/g, '-'))[0]!.l4Csum).toBe(GOOD);
  });

  it('a packet cut by the snap length is left as it is', () => {
    const { frame, offload } = aggregate({ family: 4, proto: 'tcp', payload: 1000, gsoSize: 1448 });
    offload.gsoType = GSO_NONE;
    const view = new PacketView();
    decode(view, frame, 200, frame.length);
    expect(new Segmenter().completeChecksum(view, offload)).toBe(false);
    expect(view.buf).toBe(frame);
  });
});

function fromAggregate(spec: AggregateSpec): [Buffer, OffloadInfo] {
  const { frame, offload } = aggregate(spec);
  return [frame, offload];
}
