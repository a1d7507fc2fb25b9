// Flow log records (SPEC §4) from built packets: fields and types, aligned windows, each
// packet in exactly one record, NODATA for an idle interface, SKIPDATA on capture drops
// and table overflow (evicted flows still reported), trafficType, and the TCP tracker's
// handshake RTT and retransmission bits.
import { describe, expect, it } from 'vitest';
import { buildPacket } from '../helpers/build-packet.js';
import { decode } from '../../agent/packet/decode.js';
import { DIR_IN, DIR_OUT, PacketView, type Direction } from '../../agent/packet/view.js';
import { ACTION_ACCEPT, ACTION_REJECT, FlowLogAggregator } from '../../agent/flow/aggregator.js';
import { EV_RETRANS, EV_RTT_CLIENT, EV_RTT_SERVER, EV_SYN_RETRANS, EV_ZERO_WINDOW, TcpTracker } from '../../agent/flow/tcp.js';
import type { FlowRecord } from '../../agent/flow/record.js';
import type { AgentSettings, FlowLog } from '../../agent/config/types.js';

const AGENT: AgentSettings = {
  vmId: 'host-1', vpcId: 'vpc-lab', vswitchId: 'vsw-lab', accountId: '1234567890', dataPlane: 'pcap', mirrorBudget: { pps: 0, bps: 0 },
  metrics: { listen: '' }, control: { socket: '/tmp/x.sock' }, log: { level: 'info' },
};
const WINDOW = 60;
const T0 = 1_700_000_400; // a multiple of 60

function flowLog(over: Partial<FlowLog> = {}): FlowLog {
  return { id: 'fl-1', name: '', enabled: true, sources: ['eth0', 'eth1'], trafficType: 'All', window: WINDOW, sink: { type: 'stdout' }, ...over };
}

function aggregator(over: Partial<FlowLog> = {}, maxFlows = 100) {
  const out: FlowRecord[] = [];
  const agg = new FlowLogAggregator({
    flowLog: flowLog(over), agent: AGENT, interfaces: ['eth0', 'eth1'], sessionIds: ['ts-1'], maxFlows,
    emit: (records) => out.push(...records),
  });
  return { agg, out };
}

const view = new PacketView();
function packet(frame: Buffer, tsSec: number, direction: Direction = DIR_OUT): PacketView {
  view.tsUs = Math.round(tsSec * 1e6);
  view.direction = direction;
  decode(view, frame, frame.length, frame.length);
  return view;
}

const tcpSyn = buildPacket({ src: '10.0.0.1', dst: '10.0.0.2', proto: 'tcp', srcPort: 43210, dstPort: 80, tcpFlags: 0x02 });
const udp = (port: number) => buildPacket({ src: '10.0.0.1', dst: '10.0.0.2', proto: 'udp', srcPort: port, dstPort: 53, payload: 20 });
const v6 = buildPacket({ src: 'fd00::1', dst: 'fd00:0:0:1::2', proto: 'udp', srcPort: 5000, dstPort: 6000, payload: 10 });

describe('flow log aggregator', () => {
  it('writes one record per flow and window with every SPEC §4 field, typed', () => {
    const { agg, out } = aggregator();
    agg.observe(0, packet(tcpSyn, T0 + 1), 0, -1, 0, ACTION_ACCEPT);
    agg.observe(0, packet(tcpSyn, T0 + 2), 0, 212, -1, ACTION_ACCEPT);
    agg.closeWindowsBefore(T0 + WINDOW);
    const ok = out.filter((r) => r['log-status'] === 'OK');
    expect(ok).toEqual([{
      version: 1, 'vswitch-id': 'vsw-lab', 'vm-id': 'host-1', 'vpc-id': 'vpc-lab', 'account-id': '1234567890',
      'eni-id': 'eth0', srcaddr: '10.0.0.1', srcport: 43210, dstaddr: '10.0.0.2', dstport: 80, protocol: 6,
      direction: 'out', packets: 2, bytes: 2 * (tcpSyn.length - 14), start: T0, end: T0 + WINDOW,
      'log-status': 'OK', action: 'ACCEPT', 'tcp-flags': 2, 'icmp-type': null, 'icmp-code': null, retrans: 0, 'zero-win': 0, 'rtt-us': 212,
      'mirrored-packets': 1, 'mirror-session': 'ts-1',
    }]);
  });

  it('keys ICMP flows per type and code (ports 0), on both families', () => {
    const { agg, out } = aggregator();
    const icmp = (src: string, dst: string, icmpType: number, icmpCode = 0) => buildPacket({ src, dst, proto: 'icmp', icmpType, icmpCode, payload: 8 });
    for (const frame of [icmp('10.0.0.1', '10.0.0.2', 8), icmp('10.0.0.1', '10.0.0.2', 8), icmp('10.0.0.1', '10.0.0.2', 3, 3), icmp('fd00::1', 'fd00::2', 1, 4)]) {
      agg.observe(0, packet(frame, T0 + 1), 0, -1, -1, ACTION_ACCEPT);
    }
    agg.observe(0, packet(udp(1), T0 + 1), 0, -1, -1, ACTION_ACCEPT);
    agg.flushAll();
    const rows = out.filter((r) => r['log-status'] === 'OK').map((r) => [r.protocol, r.srcport, r.dstport, r['icmp-type'], r['icmp-code'], r.packets]);
    expect(rows.sort()).toEqual([[1, 0, 0, 3, 3, 1], [1, 0, 0, 8, 0, 2], [17, 1, 53, null, null, 1], [58, 0, 0, 1, 4, 1]]);
  });

  it('aligns windows to multiples of the window and counts each packet in exactly one record', () => {
    const { agg, out } = aggregator();
    const times = [T0 + 5, T0 + 59.999, T0 + 60, T0 + 61, T0 + 185];
    for (const t of times) agg.observe(0, packet(udp(1000), t), 0, -1, -1, ACTION_ACCEPT);
    agg.flushAll();
    const ok = out.filter((r) => r['log-status'] === 'OK' && r['eni-id'] === 'eth0');
    expect(ok.map((r) => [r.start, r.end, r.packets])).toEqual([[T0, T0 + 60, 2], [T0 + 60, T0 + 120, 2], [T0 + 180, T0 + 240, 1]]);
    expect(ok.reduce((n, r) => n + r.packets!, 0)).toBe(times.length);
    for (const r of out) expect(r.start % WINDOW).toBe(0);
    // The window with no traffic at all is NODATA on both interfaces.
    expect(out.filter((r) => r['log-status'] === 'NODATA' && r.start === T0 + 120).map((r) => r['eni-id'])).toEqual(['eth0', 'eth1']);
  });

  it('writes NODATA with null 5-tuple fields for an idle interface', () => {
    const { agg, out } = aggregator();
    agg.observe(0, packet(udp(1000), T0 + 1), 0, -1, -1, ACTION_ACCEPT);
    agg.closeWindowsBefore(T0 + WINDOW);
    const nodata = out.filter((r) => r['log-status'] === 'NODATA');
    expect(nodata).toHaveLength(1);
    expect(nodata[0]).toMatchObject({ 'eni-id': 'eth1', srcaddr: null, srcport: null, dstaddr: null, dstport: null, protocol: null, packets: null, bytes: null, action: null, start: T0, end: T0 + WINDOW });
  });

  it('on overflow evicts (counted), still reports every packet, and adds SKIPDATA', () => {
    const { agg, out } = aggregator({}, 4);
    for (let port = 1; port <= 50; port++) agg.observe(0, packet(udp(port), T0 + 1 + port / 100), 0, -1, -1, ACTION_ACCEPT);
    agg.noteDrops(0, 7);
    agg.closeWindowsBefore(T0 + WINDOW);
    expect(agg.evictions).toBeGreaterThan(0);
    expect(agg.activeFlows).toBe(0);
    const ok = out.filter((r) => r['log-status'] === 'OK');
    expect(ok.reduce((n, r) => n + r.packets!, 0)).toBe(50);
    expect(new Set(ok.map((r) => r.srcport)).size).toBe(50);
    const skip = out.filter((r) => r['log-status'] === 'SKIPDATA');
    expect(skip).toEqual([expect.objectContaining({ 'eni-id': 'eth0', 'skipped-packets': 7, start: T0 })]);
    expect(agg.recordsByStatus).toEqual({ OK: 50, NODATA: 1, SKIPDATA: 1 });
  });

  it('keeps ACCEPT or REJECT records only, as trafficType says', () => {
    for (const [trafficType, want] of [['All', ['ACCEPT', 'REJECT']], ['Allow', ['ACCEPT']], ['Drop', ['REJECT']]] as const) {
      const { agg, out } = aggregator({ trafficType });
      agg.observe(0, packet(udp(1), T0 + 1), 0, -1, -1, ACTION_ACCEPT);
      agg.observe(0, packet(udp(2), T0 + 1), 0, -1, -1, ACTION_REJECT);
      agg.flushAll();
      expect(out.filter((r) => r['log-status'] === 'OK').map((r) => r.action).sort()).toEqual(want);
    }
  });

  it('formats IPv6 addresses, only covers its sources, and "*" covers all', () => {
    const { agg, out } = aggregator({ sources: ['eth1'] });
    expect([agg.covers(0), agg.covers(1)]).toEqual([false, true]);
    agg.observe(1, packet(v6, T0 + 1, DIR_IN), 0, -1, -1, ACTION_ACCEPT);
    agg.flushAll();
    expect(out[0]).toMatchObject({ srcaddr: 'fd00::1', dstaddr: 'fd00:0:0:1::2', protocol: 17, direction: 'in', 'tcp-flags': null, retrans: null });
    const all = aggregator({ sources: ['*'] }).agg;
    expect([all.covers(0), all.covers(1)]).toEqual([true, true]);
  });
});

describe('TCP tracker', () => {
  const c = '10.0.0.1';
  const s = '10.0.0.2';
  const seg = (from: 'c' | 's', flags: number, seq: number, ack: number, len = 0, win = 1000) => {
    const f = buildPacket({ src: from === 'c' ? c : s, dst: from === 'c' ? s : c, proto: 'tcp', srcPort: from === 'c' ? 40000 : 80, dstPort: from === 'c' ? 80 : 40000, tcpFlags: flags, payload: len });
    // seq, ack, window at their TCP header offsets (14 + 20 + 4/8/14).
    f.writeUInt32BE(seq, 38);
    f.writeUInt32BE(ack, 42);
    f.writeUInt16BE(win, 48);
    return f;
  };

  it('measures server and client handshake RTT and flags retransmissions, SYN ones apart', () => {
    const t = new TcpTracker(16);
    const ev = (f: Buffer, at: number) => t.observe(0, packet(f, at));
    expect(ev(seg('c', 0x02, 100, 0), 10)).toBe(0);
    expect(ev(seg('c', 0x02, 100, 0), 11) & (EV_RETRANS | EV_SYN_RETRANS)).toBe(EV_RETRANS | EV_SYN_RETRANS);
    expect(ev(seg('s', 0x12, 500, 101), 11.0002)).toBe(EV_RTT_SERVER);
    expect(t.lastRttServerUs).toBeCloseTo(200, 3);
    expect(ev(seg('c', 0x10, 101, 501), 11.0005)).toBe(EV_RTT_CLIENT);
    expect(t.lastRttClientUs).toBeCloseTo(300, 3);
    expect(t.lastHandshakeRttUs).toBeCloseTo(500, 3);
    expect(ev(seg('c', 0x18, 101, 501, 100), 11.001)).toBe(0);
    expect(ev(seg('c', 0x18, 101, 501, 100), 12)).toBe(EV_RETRANS);
    expect(ev(seg('s', 0x10, 501, 201, 0, 0), 12.1)).toBe(EV_ZERO_WINDOW);
    expect(t.retransmissions).toBe(2);
    expect(t.synRetransmissions).toBe(1);
  });

  it('stays within its connection limit under a flood of new connections, counting evictions', () => {
    const t = new TcpTracker(64);
    for (let port = 1; port <= 5000; port++) {
      const f = buildPacket({ src: c, dst: s, proto: 'tcp', srcPort: port, dstPort: 80, tcpFlags: 0x02 });
      t.observe(0, packet(f, T0 + port / 1000));
    }
    expect(t.active).toBeLessThanOrEqual(64);
    expect(t.evictions).toBe(5000 - 64);
  });
});
