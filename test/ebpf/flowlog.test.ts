// Flow logs from the kernel (bpf/flowlog.bpf.h), run with BPF_PROG_TEST_RUN through
// mf_ingress/mf_egress on a flow-logged interface: what the flow map holds after a drain
// (wire packets and bytes of aggregates, ICMP per type and code, the double-buffered
// slots), a full table reported as skipped packets, and the TCP analysis against
// agent/flow/tcp.ts on the same segments: the records a FlowStage writes from the kernel's
// counts equal those it writes from the packets. Needs root.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../agent/config/load.js';
import { MirrorMaps } from '../../agent/ebpf/mirror-maps.js';
import { fillRejectView } from '../../agent/ebpf/reject-view.js';
import type { KernelFlow } from '../../agent/ebpf/layout.js';
import { FlowStage } from '../../agent/flow/stage.js';
import type { FlowRecord } from '../../agent/flow/record.js';
import { decode } from '../../agent/packet/decode.js';
import { DIR_IN, DIR_OUT, PacketView, type Direction } from '../../agent/packet/view.js';
import { compileRules } from '../../agent/rules/compile.js';
import { buildPacket, ethernet, ipv4, tcp } from '../helpers/build-packet.js';
import { ETHERTYPE_IPV4, IPPROTO_TCP } from '../../agent/packet/offsets.js';

const DEV = 'mfflw0';
const A = '198.18.0.1';
const B = '198.18.0.2';
const FIN = 0x01;
const SYN = 0x02;
const RST = 0x04;
const PSH = 0x08;
const ACK = 0x10;

const config = () => parseConfig(JSON.stringify({
  filters: [{ id: 'tf', ingressRules: [], egressRules: [{ priority: 1, action: 'accept', protocol: 'UDP', sourceCidrBlock: '0.0.0.0/0', destinationCidrBlock: '0.0.0.0/0' }] }],
  sessions: [{ id: 'ts-a', priority: 1, vni: 77, filterId: 'tf', sources: [DEV], target: { address: '192.0.2.9' } }],
  flowLogs: [{ id: 'fl', sources: [DEV], window: 600, sink: { type: 'stdout' } }],
}), { localAddresses: [] });

/** A TCP segment between A:40000 (this host's side) and B:80, as a frame. */
function segment(dir: Direction, seq: number, ack: number, flags: number, payload = 0, window = 64240): Buffer {
  const [src, dst, sport, dport] = dir === DIR_OUT ? [A, B, 40000, 80] : [B, A, 80, 40000];
  return ethernet({
    etherType: ETHERTYPE_IPV4,
    payload: ipv4({ src, dst, protocol: IPPROTO_TCP, payload: tcp({ srcPort: sport, dstPort: dport, seq, ack, flags, window, payload: Buffer.alloc(payload) }) }),
  });
}

const without = (r: FlowRecord, ...fields: (keyof FlowRecord)[]) => Object.fromEntries(Object.entries(r).filter(([k]) => !fields.includes(k as keyof FlowRecord)));
const byTuple = (a: FlowRecord, b: FlowRecord) => JSON.stringify([a.direction, a.srcport, a.protocol]).localeCompare(JSON.stringify([b.direction, b.srcport, b.protocol]));

describe('flow logs in mf_ingress/mf_egress (BPF_PROG_TEST_RUN)', () => {
  let maps: MirrorMaps;
  let ifindex = 0;

  /** Everything the programs counted since the last drain (no program runs meanwhile: no grace needed). */
  const drainAll = (m = maps): Promise<KernelFlow[]> => {
    m.flipCountSlot();
    return m.takeFlows('all');
  };
  /** A flow's key and counts in one object, to match against. */
  const flat = (f: KernelFlow) => ({ ...f.key, ...f.counts });

  beforeAll(() => {
    try { execFileSync('ip', ['link', 'del', DEV], { stdio: 'ignore' }); } catch { /* absent */ }
    execFileSync('ip', ['link', 'add', DEV, 'type', 'veth', 'peer', 'name', `${DEV}p`]);
    ifindex = Number(readFileSync(`/sys/class/net/${DEV}/ifindex`, 'utf8'));
    maps = MirrorMaps.open();
    const rules = compileRules(config());
    maps.install({
      rules,
      ifindexes: new Map([[DEV, ifindex]]),
      // A down veth as the segmenter: the clone is refused, nothing leaves the host.
      sessions: rules.sessions.map((s) => ({ vni: s.vni, truncLen: 1500, vxlanIfindex: ifindex, family: s.targetFamily, remote: [0, 0, 0, 0] })),
      segIfindex: 0,
    });
  }, 300_000);

  afterAll(() => {
    maps?.close();
    try { execFileSync('ip', ['link', 'del', DEV], { stdio: 'ignore' }); } catch { /* already gone */ }
  });

  it('counts nothing on an interface no flow log covers', async () => {
    maps.setFlowInterfaces([]);
    await drainAll();
    maps.decide(buildPacket({ src: A, dst: B, proto: 'udp', srcPort: 1, dstPort: 2, payload: 10 }), ifindex, DIR_OUT);
    expect(await drainAll()).toEqual([]);
  });

  it('counts wire packets and IP bytes per direction and 5-tuple, ICMP per type and code, taken by count slot', async () => {
    maps.setFlowInterfaces([ifindex]);
    await drainAll();
    const udp = buildPacket({ src: A, dst: B, proto: 'udp', srcPort: 5000, dstPort: 53, payload: 100 });
    for (let i = 0; i < 3; i++) maps.decide(udp, ifindex, DIR_OUT);
    maps.decide(buildPacket({ src: B, dst: A, proto: 'icmp', icmpType: 3, icmpCode: 1, payload: 28 }), ifindex, DIR_IN);
    // A TSO aggregate of 3 segments of 1000 bytes (a test run's frame must fit in a page):
    // each wire segment repeats the 40 bytes of headers.
    maps.decide(segment(DIR_OUT, 1, 1, ACK | PSH, 3000), ifindex, DIR_OUT, 1, 3, 1000);

    // Counted in the slot being written: a take of the other slot finds none of it.
    const slot = maps.flipCountSlot();
    expect(await maps.takeFlows(slot ^ 1)).toEqual([]);
    const flows = (await maps.takeFlows(slot)).map(flat);
    expect(await maps.takeFlows('all')).toEqual([]);
    const pick = (protocol: number) => flows.find((f) => f.protocol === protocol)!;
    expect(flows).toHaveLength(3);
    expect(pick(17)).toMatchObject({ ifindex, dir: DIR_OUT, family: 4, srcPort: 5000, dstPort: 53, packets: 3, bytes: 3 * (20 + 8 + 100), session: -1, mirrored: 0 });
    expect(pick(1)).toMatchObject({ dir: DIR_IN, srcPort: 0, dstPort: (3 << 8) | 1, packets: 1, bytes: 20 + 8 + 28 });
    expect(pick(6)).toMatchObject({ packets: 3, bytes: 3 * (20 + 20 + 1000), tcpFlags: ACK | PSH, retrans: 0 });
    // The time of the last packet is the kernel's monotonic clock, as process.hrtime reads it.
    const now = process.hrtime.bigint();
    for (const f of flows) expect(Number(now - f.lastNs)).toBeGreaterThan(0);
    for (const f of flows) expect(Number(now - f.lastNs)).toBeLessThan(60e9);
  });

  it('a drain of more flows than one batch syscall returns takes every one once, and leaves none behind', async () => {
    maps.setFlowInterfaces([ifindex]);
    await drainAll();
    const frame = buildPacket({ src: A, dst: B, proto: 'udp', srcPort: 1, dstPort: 7, payload: 1 });
    const n = 10_000;
    for (let i = 0; i < n; i++) {
      frame.writeUInt16BE(1 + i, 14 + 20);
      maps.decide(frame, ifindex, DIR_OUT);
    }
    const flows = await drainAll();
    expect(flows).toHaveLength(n);
    expect(new Set(flows.map((f) => f.key.srcPort)).size).toBe(n);
    expect(flows.every((f) => f.counts.packets === 1)).toBe(true);
    expect(await drainAll()).toEqual([]);
  });

  it('a full flow table counts the packets of flows it cannot hold as skipped, per interface and direction', async () => {
    const small = MirrorMaps.open(undefined, { flows: 2 });
    try {
      small.install({ rules: compileRules(config()), ifindexes: new Map([[DEV, ifindex]]), sessions: [], segIfindex: 0 });
      small.setFlowInterfaces([ifindex]);
      for (let port = 1; port <= 6; port++) small.decide(buildPacket({ src: A, dst: B, proto: 'udp', srcPort: port, dstPort: 9, payload: 1 }), ifindex, DIR_OUT);
      const counted = (await drainAll(small)).reduce((n, f) => n + f.counts.packets, 0);
      const skipped = small.ifaceStats(ifindex, DIR_OUT).flowSkipped;
      expect(counted).toBeGreaterThan(0);
      expect(counted).toBeLessThanOrEqual(2);
      expect(counted + skipped).toBe(6);
    } finally {
      small.close();
    }
  }, 300_000);

  it('TCP: the records from the kernel\'s counts equal those from the same segments through agent/flow (tcp.ts)', async () => {
    maps.setFlowInterfaces([ifindex]);
    await drainAll();
    const interfaces = [DEV];
    const records = { user: [] as FlowRecord[], kernel: [] as FlowRecord[] };
    const rtt = { user: [] as string[], kernel: [] as string[] };
    const stage = (into: 'user' | 'kernel') => new FlowStage({
      config: config(), interfaces, emit: (_, r) => records[into].push(...r),
      rtt: { server: () => rtt[into].push('server'), client: () => rtt[into].push('client') },
    });
    const user = stage('user');
    const kernel = stage('kernel');
    const view = new PacketView();
    // User space stamps each segment on the kernel's clock (CLOCK_MONOTONIC), moved to wall time.
    const wallMinusMonoUs = Date.now() * 1000 - Number(process.hrtime.bigint() / 1000n);
    const send = (dir: Direction, seq: number, ack: number, flags: number, payload = 0, window = 64240) => {
      const frame = segment(dir, seq, ack, flags, payload, window);
      view.direction = dir;
      view.tsUs = wallMinusMonoUs + Number(process.hrtime.bigint() / 1000n);
      decode(view, frame, frame.length, frame.length);
      user.observe(0, view, -1);
      maps.decide(frame, ifindex, dir);
    };
    send(DIR_OUT, 1000, 0, SYN);
    send(DIR_OUT, 1000, 0, SYN); // SYN retransmission
    send(DIR_IN, 5000, 1001, SYN | ACK);
    send(DIR_OUT, 1001, 5001, ACK); // handshake done
    send(DIR_OUT, 1001, 5001, ACK | PSH, 100);
    send(DIR_OUT, 1101, 5001, ACK | PSH, 100);
    send(DIR_OUT, 1001, 5001, ACK | PSH, 100); // data retransmission
    send(DIR_IN, 5001, 1201, ACK, 0, 0); // zero window
    send(DIR_IN, 5001, 1201, ACK | PSH, 50);
    send(DIR_IN, 5001, 1201, ACK | PSH, 50); // retransmission that ends at nextseq (not out of order)
    send(DIR_OUT, 1200, 5051, ACK, 0); // keep-alive: not a retransmission
    send(DIR_OUT, 1201, 5051, FIN | ACK);
    send(DIR_IN, 5051, 1202, RST);

    const nowWallUs = Date.now() * 1000;
    const nowMonoNs = process.hrtime.bigint();
    const flowView = new PacketView();
    for (const f of await drainAll()) kernel.observeCounted(0, fillRejectView(flowView, f.key, nowWallUs, nowMonoNs), f.counts);
    user.flushAll();
    kernel.flushAll();

    const ok = (r: FlowRecord[]) => r.filter((x) => x['log-status'] === 'OK').sort(byTuple);
    expect(ok(records.kernel)).toHaveLength(2);
    expect(ok(records.kernel).map((r) => without(r, 'rtt-us', 'start', 'end'))).toEqual(ok(records.user).map((r) => without(r, 'rtt-us', 'start', 'end')));
    const out = ok(records.kernel).find((r) => r.direction === 'out')!;
    expect(out).toMatchObject({ retrans: 2, packets: 8, 'tcp-flags': SYN | ACK | PSH | FIN, 'zero-win': 0 });
    expect(ok(records.kernel).find((r) => r.direction === 'in')).toMatchObject({ retrans: 1, 'zero-win': 1, 'tcp-flags': SYN | ACK | PSH | RST });
    // The handshake RTT is the kernel's own clock's: both saw a handshake, neither value is the other's.
    expect(out['rtt-us']).toBeGreaterThan(0);
    expect(ok(records.user).find((r) => r.direction === 'out')!['rtt-us']).toBeGreaterThan(0);
    expect(rtt.kernel.sort()).toEqual(rtt.user.sort());
    for (const counter of ['retransmissions', 'synRetransmissions', 'zeroWindows', 'resets'] as const) {
      expect([counter, kernel.counters[counter][0]]).toEqual([counter, user.counters[counter][0]]);
    }
    expect(kernel.counters.synRetransmissions[0]).toBe(1);
    expect(kernel.counters.resets[0]).toBe(1);
  });

  it('TCP aggregates: a retransmitted aggregate counts each wire segment below nextseq, as tcp.ts counts the segments user space cuts', async () => {
    maps.setFlowInterfaces([ifindex]);
    await drainAll();
    // Its own connection (port 41000), so the state of the test above does not matter.
    const frame = (seq: number, ack: number, flags: number, payload = 0) => {
      const f = segment(DIR_OUT, seq, ack, flags, payload);
      f.writeUInt16BE(41000, 14 + 20);
      return f;
    };
    maps.decide(frame(1000, 0, SYN), ifindex, DIR_OUT);
    maps.decide(frame(1001, 5001, ACK), ifindex, DIR_OUT);
    maps.decide(frame(1001, 5001, ACK | PSH, 3000), ifindex, DIR_OUT, 1, 3, 1000); // new: 1001..4000
    maps.decide(frame(1001, 5001, ACK | PSH, 3000), ifindex, DIR_OUT, 1, 3, 1000); // all 3 segments again
    maps.decide(frame(3001, 5001, ACK | PSH, 3000), ifindex, DIR_OUT, 1, 3, 1000); // 3001..4000 again, then new
    const flow = (await drainAll()).map(flat).find((f) => f.srcPort === 41000)!;
    expect(flow).toMatchObject({ packets: 2 + 9, retrans: 3 + 1, synRetrans: 0 });
  });
});

