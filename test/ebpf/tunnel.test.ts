// BPF_PROG_TEST_RUN of what the parity tests do not reach: mf_tunnel (the per-segment
// step on the segmenting veth: cut, count, redirect) and the counter maps the agent reads
// for its metrics (mf_session_stats, mf_iface_stats). Needs root (loading BPF programs).
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../agent/config/load.js';
import { MF_MARK_MAGIC } from '../../agent/ebpf/layout.js';
import { MirrorMaps } from '../../agent/ebpf/mirror-maps.js';
import { buildPacket } from '../helpers/build-packet.js';
import { decode } from '../../agent/packet/decode.js';
import { DIR_IN, DIR_OUT, PacketView } from '../../agent/packet/view.js';
import { flowHash, flowSourcePort, SOURCE_PORT_MAX, SOURCE_PORT_MIN } from '../../agent/mirror/flow-hash.js';
import { SKB_CB_OFFSET } from '../../agent/ebpf/libbpf.js';
import { compileRules } from '../../agent/rules/compile.js';

/** linux/pkt_cls.h */
const TC_ACT_SHOT = 2;
const TC_ACT_REDIRECT = 7;
const DEV = 'mftun0';
const TRUNC = 200;

const config = (iface: string) => parseConfig(JSON.stringify({
  filters: [{ id: 'tf', ingressRules: [{ priority: 1, action: 'accept', protocol: 'UDP', sourceCidrBlock: '0.0.0.0/0', destinationCidrBlock: '0.0.0.0/0' }], egressRules: [] }],
  sessions: [
    { id: 'ts-a', priority: 1, vni: 77, packetLength: TRUNC, filterId: 'tf', sources: [iface], target: { address: '192.0.2.9' } },
    { id: 'ts-b', priority: 2, vni: 78, packetLength: 1500, filterId: 'tf', sources: [iface], target: { address: '2001:db8::9' } },
  ],
}), { localAddresses: [] });

describe('mf_tunnel and the counter maps (BPF_PROG_TEST_RUN)', () => {
  let maps: MirrorMaps;
  let ifindex = 0;
  let slot = 0;
  const mark = (session: number) => (MF_MARK_MAGIC | (slot << 8) | session) >>> 0;

  beforeAll(() => {
    try { execFileSync('ip', ['link', 'del', DEV], { stdio: 'ignore' }); } catch { /* absent */ }
    execFileSync('ip', ['link', 'add', DEV, 'type', 'veth', 'peer', 'name', `${DEV}p`]);
    ifindex = Number(readFileSync(`/sys/class/net/${DEV}/ifindex`, 'utf8'));
    maps = MirrorMaps.open();
    const rules = compileRules(config(DEV));
    slot = maps.install({
      rules,
      ifindexes: new Map([[DEV, ifindex]]),
      // A VXLAN ifindex that exists: the test run returns the redirect verdict without sending.
      sessions: rules.sessions.map((s) => ({ vni: s.vni, truncLen: s.packetLength, vxlanIfindex: ifindex, family: s.targetFamily, remote: [0, 0, 0, 0] })),
      segIfindex: 0,
    });
  });

  afterAll(() => {
    maps?.close();
    try { execFileSync('ip', ['link', 'del', DEV], { stdio: 'ignore' }); } catch { /* already gone */ }
  });

  it('a segment longer than the session cut leaves cut, counted once, with the bytes after the cut', () => {
    const frame = buildPacket({ src: '10.1.0.1', dst: '10.1.0.2', proto: 'udp', srcPort: 1000, dstPort: 2000, payload: 900 });
    const before = maps.sessionStats(slot, 0);
    const out = maps.tunnel(frame, mark(0));
    expect(out.verdict).toBe(TC_ACT_REDIRECT);
    expect(out.frame.length).toBe(TRUNC);
    expect(out.frame.equals(frame.subarray(0, TRUNC))).toBe(true);
    const after = maps.sessionStats(slot, 0);
    expect({ packets: after.packets - before.packets, bytes: after.bytes - before.bytes, truncated: after.truncated - before.truncated, errors: after.errors - before.errors })
      .toEqual({ packets: 1, bytes: TRUNC, truncated: 1, errors: 0 });
  });

  it('a segment within the cut leaves whole and is not counted as cut; the session index comes from the mark', () => {
    const frame = buildPacket({ src: '10.1.0.1', dst: '10.1.0.2', proto: 'udp', srcPort: 1000, dstPort: 2000, payload: 600 });
    const a = maps.sessionStats(slot, 0);
    const b = maps.sessionStats(slot, 1);
    const out = maps.tunnel(frame, mark(1));
    expect(out.verdict).toBe(TC_ACT_REDIRECT);
    expect(out.frame.equals(frame)).toBe(true);
    const b2 = maps.sessionStats(slot, 1);
    expect({ packets: b2.packets - b.packets, bytes: b2.bytes - b.bytes, truncated: b2.truncated - b.truncated }).toEqual({ packets: 1, bytes: frame.length, truncated: 0 });
    expect(maps.sessionStats(slot, 0)).toEqual(a);
  });

  it('anything without our mark is dropped and counted nowhere', () => {
    const frame = buildPacket({ src: '10.1.0.1', dst: '10.1.0.2', proto: 'udp', srcPort: 1000, dstPort: 2000, payload: 100 });
    const before = [maps.sessionStats(slot, 0), maps.sessionStats(slot, 1)];
    for (const m of [0, 0x12345678, (0x4d470000 | (slot << 8)) >>> 0]) expect(maps.tunnel(frame, m).verdict).toBe(TC_ACT_SHOT);
    expect([maps.sessionStats(slot, 0), maps.sessionStats(slot, 1)]).toEqual(before);
  });

  it('the outer port\'s flow hash is the same in the kernel and in TypeScript, and the same both ways (SPEC §3)', () => {
    const view = new PacketView();
    const cases = [
      { src: '10.1.0.1', dst: '10.1.0.2', proto: 'tcp' as const, srcPort: 43210, dstPort: 80 },
      { src: '10.1.0.9', dst: '10.1.0.2', proto: 'udp' as const, srcPort: 5000, dstPort: 5000 },
      { src: '10.1.0.2', dst: '10.1.0.2', proto: 'udp' as const, srcPort: 1, dstPort: 2 },
      { src: 'fd00::1', dst: 'fd00::2:1', proto: 'tcp' as const, srcPort: 50000, dstPort: 443 },
      { src: '2001:db8::ffff:1', dst: '2001:db8::1', proto: 'udp' as const, srcPort: 53, dstPort: 33000 },
      { src: '10.1.0.1', dst: '10.1.0.2', proto: 'icmp' as const },
    ];
    const ports = new Set<number>();
    for (const c of cases) {
      const there = buildPacket({ ...c, payload: 20 });
      const back = buildPacket({ ...c, src: c.dst, dst: c.src, srcPort: c.dstPort, dstPort: c.srcPort, payload: 20 });
      const hashes = [there, back].map((frame) => {
        decode(view, frame, frame.length, frame.length);
        const ts = flowHash(view);
        const run = maps.tunnel(frame, mark(1));
        expect(run.verdict).toBe(TC_ACT_REDIRECT);
        return { ts, bpf: run.ctxOut.readUInt32LE(SKB_CB_OFFSET + 4), port: flowSourcePort(view) };
      });
      expect(hashes[0]!.bpf).toBe(hashes[0]!.ts);
      expect(hashes[1]!.bpf).toBe(hashes[1]!.ts);
      expect(hashes[1]!.ts).toBe(hashes[0]!.ts);
      expect(hashes[0]!.port).toBe(hashes[1]!.port);
      expect(hashes[0]!.port).toBeGreaterThanOrEqual(SOURCE_PORT_MIN);
      expect(hashes[0]!.port).toBeLessThan(SOURCE_PORT_MAX);
      ports.add(hashes[0]!.port);
    }
    // Different flows spread over the range.
    expect(ports.size).toBeGreaterThan(cases.length - 2);
  });

  it('the decision programs count per interface and direction: packets, bytes and the decision', () => {
    const accepted = buildPacket({ src: '10.1.0.1', dst: '10.1.0.2', proto: 'udp', srcPort: 1000, dstPort: 2000, payload: 50 });
    const tcp = buildPacket({ src: '10.1.0.1', dst: '10.1.0.2', proto: 'tcp', srcPort: 1000, dstPort: 2000, payload: 10 });
    const inBefore = maps.ifaceStats(ifindex, DIR_IN);
    const outBefore = maps.ifaceStats(ifindex, DIR_OUT);
    expect(maps.decide(accepted, ifindex, DIR_IN).decision).toBe(0);
    expect(maps.decide(tcp, ifindex, DIR_IN).decision).toBe(-1);
    expect(maps.decide(accepted, ifindex, DIR_OUT).decision).toBe(-1);
    const inAfter = maps.ifaceStats(ifindex, DIR_IN);
    const outAfter = maps.ifaceStats(ifindex, DIR_OUT);
    expect(inAfter.packets - inBefore.packets).toBe(2);
    expect(inAfter.bytes - inBefore.bytes).toBe(accepted.length + tcp.length);
    // decisions[0] counts accepted packets, decisions[-code] every other outcome.
    expect(inAfter.decisions[0]! - inBefore.decisions[0]!).toBe(1);
    expect(inAfter.decisions[1]! - inBefore.decisions[1]!).toBe(1);
    expect(outAfter.packets - outBefore.packets).toBe(1);
    expect(outAfter.decisions[1]! - outBefore.decisions[1]!).toBe(1);
  });

  it('a GSO aggregate counts as its wire segments (capture_packets_total in both planes), its bytes once', () => {
    const segs = 7;
    const aggregate = buildPacket({ src: '10.1.0.1', dst: '10.1.0.2', proto: 'udp', srcPort: 1000, dstPort: 2000, payload: 1400 });
    const tcp = buildPacket({ src: '10.1.0.1', dst: '10.1.0.2', proto: 'tcp', srcPort: 1000, dstPort: 2000, payload: 1400 });
    const before = maps.ifaceStats(ifindex, DIR_IN);
    expect(maps.decide(aggregate, ifindex, DIR_IN, 1, segs).decision).toBe(0);
    expect(maps.decide(tcp, ifindex, DIR_IN, 1, segs).decision).toBe(-1);
    // gso_segs 1 (a TCP skb within one MSS) is one packet, like 0.
    expect(maps.decide(tcp, ifindex, DIR_IN, 1, 1).decision).toBe(-1);
    const after = maps.ifaceStats(ifindex, DIR_IN);
    expect(after.packets - before.packets).toBe(2 * segs + 1);
    expect(after.bytes - before.bytes).toBe(aggregate.length + 2 * tcp.length);
    expect(after.decisions[0]! - before.decisions[0]!).toBe(segs);
    expect(after.decisions[1]! - before.decisions[1]!).toBe(segs + 1);
    expect(after.decisions.reduce((a, b) => a + b, 0) - before.decisions.reduce((a, b) => a + b, 0)).toBe(after.packets - before.packets);
  });
});
