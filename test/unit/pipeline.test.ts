// The pipeline with offload information: an aggregate is matched once and then mirrored,
// counted and analysed as the wire segments it stands for — one copy per segment (valid
// checksums by tshark), flow records with packets = segments and bytes = their IP bytes,
// retransmissions counted per segment as the sender's TcpRetransSegs, capture and
// not-mirrored counters in wire packets; a CHECKSUM_PARTIAL single packet gets its checksum.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeEach, describe, expect, it } from 'vitest';
import { parseConfig } from '../../agent/config/load.js';
import { compileRules } from '../../agent/rules/compile.js';
import { MirrorPipeline, REASON_SLOTS } from '../../agent/pipeline.js';
import { FlowStage } from '../../agent/flow/stage.js';
import type { FlowRecord } from '../../agent/flow/record.js';
import { decode } from '../../agent/packet/decode.js';
import { GSO_NONE, GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4, NO_OFFLOAD } from '../../agent/packet/offload.js';
import { DECODE_OK, DIR_IN, DIR_OUT, PacketView } from '../../agent/packet/view.js';
import { mirrorEgressConfig, RecordingOutput } from '../helpers/recording-output.js';
import { ACK, aggregate, GOOD, tshark, vxlanAggregate } from '../helpers/aggregate.js';

const dir = mkdtempSync(join(tmpdir(), 'mf-pipeline-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let output: RecordingOutput;
let records: FlowRecord[];
let flow: FlowStage;
let pipeline: MirrorPipeline;
const TS = 1_700_000_000_000_000;

beforeEach(() => {
  const config = parseConfig(mirrorEgressConfig('eth0', { flowLog: true }), { localAddresses: [] });
  const rules = compileRules(config);
  output = new RecordingOutput();
  records = [];
  flow = new FlowStage({ config, interfaces: rules.interfaces, emit: (_id, r) => records.push(...r) });
  pipeline = new MirrorPipeline(rules, [output], flow);
});

function okRecords(): FlowRecord[] {
  flow.flushAll();
  return records.filter((r) => r['log-status'] === 'OK');
}

describe('MirrorPipeline with offloaded aggregates', () => {
  it('one outbound TSO aggregate of N segments: N copies, a record of N packets and their IP bytes', () => {
    const payload = 1448 * 11 + 500;
    const { frame, offload } = aggregate({ family: 4, proto: 'tcp', payload, gsoSize: 1448, flags: ACK | 0x08 });
    pipeline.handleFrame(0, frame, frame.length, frame.length, TS, DIR_OUT, offload);
    const n = 12;
    expect(output.copies).toHaveLength(n);
    const view = new PacketView();
    let ipBytes = 0;
    output.copies.forEach((c, k) => {
      expect(decode(view, c.frame, c.frame.length, c.wireLen)).toBe(DECODE_OK);
      expect(c.frame.length).toBe(c.wireLen);
      expect(view.tcpSeq).toBe(1_000_000 + k * 1448);
      ipBytes += view.ipLength;
    });
    // IP header 20 + TCP header 32 per segment, plus the payload once.
    expect(ipBytes).toBe(n * 52 + payload);
    const rows = tshark(output.copies.map((c) => c.frame), join(dir, 'tso.pcap'));
    expect(rows.map((r) => [r.ipCsum, r.l4Csum])).toEqual(Array(n).fill([GOOD, GOOD]));
    expect(pipeline.captured[0 * 2 + DIR_OUT]).toBe(n);
    const [record, ...others] = okRecords();
    expect(others).toEqual([]);
    expect(record).toMatchObject({ direction: 'out', packets: n, bytes: ipBytes, 'mirrored-packets': n, 'mirror-session': 'ts-1', 'tcp-flags': ACK | 0x08 });
  });

  it('an inbound GRO aggregate no rule mirrors: counted in wire packets, no copy', () => {
    const { frame, offload } = aggregate({ family: 6, proto: 'tcp', payload: 1428 * 20, gsoSize: 1428 });
    pipeline.handleFrame(0, frame, frame.length, frame.length, TS, DIR_IN, offload);
    expect(output.copies).toHaveLength(0);
    expect(pipeline.captured[0 * 2 + DIR_IN]).toBe(20);
    expect(pipeline.notMirrored.slice(0, REASON_SLOTS).reduce((a, b) => a + b, 0)).toBe(20);
    const [record] = okRecords();
    expect(record).toMatchObject({ direction: 'in', packets: 20, bytes: 20 * (40 + 32) + 1428 * 20, 'mirrored-packets': 0 });
  });

  it('a UDP GSO send: one copy per datagram', () => {
    const { frame, offload } = aggregate({ family: 6, proto: 'udp', payload: 1200 * 5, gsoSize: 1200 });
    pipeline.handleFrame(0, frame, frame.length, frame.length, TS, DIR_OUT, offload);
    expect(output.copies.map((c) => c.wireLen)).toEqual(Array(5).fill(14 + 40 + 8 + 1200));
    expect(tshark(output.copies.map((c) => c.frame), join(dir, 'ugso.pcap')).every((r) => r.l4Csum === GOOD)).toBe(true);
    expect(okRecords()[0]).toMatchObject({ protocol: 17, packets: 5, bytes: 5 * (40 + 8 + 1200) });
  });

  it('a retransmitted aggregate counts one retransmission per segment, as TcpRetransSegs does', () => {
    const { frame, offload } = aggregate({ family: 4, proto: 'tcp', payload: 1448 * 8, gsoSize: 1448 });
    pipeline.handleFrame(0, frame, frame.length, frame.length, TS, DIR_OUT, offload);
    pipeline.handleFrame(0, frame, frame.length, frame.length, TS + 200_000, DIR_OUT, offload);
    expect(flow.counters.retransmissions[0]).toBe(8);
    expect(okRecords()[0]).toMatchObject({ packets: 16, retrans: 8 });
  });

  it('a header-only capture still counts every segment with its wire length', () => {
    const { frame, offload } = aggregate({ family: 4, proto: 'tcp', payload: 1448 * 6, gsoSize: 1448 });
    pipeline.handleFrame(0, frame, 128, frame.length, TS, DIR_OUT, offload);
    expect(output.copies).toHaveLength(6);
    expect(output.truncated).toBe(6);
    expect(output.copies.map((c) => c.wireLen)).toEqual(Array(6).fill(14 + 52 + 1448));
    expect(okRecords()[0]).toMatchObject({ packets: 6, bytes: 6 * (52 + 1448) });
  });

  it('a malformed aggregate is one frame, counted by reason, never thrown', () => {
    const { frame, offload } = aggregate({ family: 4, proto: 'tcp', payload: 5000, gsoSize: 1448 });
    offload.gsoSize = 0;
    pipeline.handleFrame(0, frame, frame.length, frame.length, TS, DIR_OUT, offload);
    expect(pipeline.captured[0 * 2 + DIR_OUT]).toBe(1);
    expect(pipeline.malformed.get('gso-size-zero')).toBe(1);
    expect(output.copies).toHaveLength(0);
    expect(okRecords()).toEqual([]);
  });

  it('a tunnel aggregate (TSO through VXLAN) is passed on as one packet and counted as unsegmented', () => {
    const { frame, offload } = vxlanAggregate(aggregate({ family: 4, proto: 'tcp', payload: 1448 * 4, gsoSize: 1448 }));
    pipeline.handleFrame(0, frame, frame.length, frame.length, TS, DIR_OUT, offload);
    expect(output.copies.map((c) => c.frame.equals(frame))).toEqual([true]);
    expect(pipeline.captured[0 * 2 + DIR_OUT]).toBe(1);
    expect(pipeline.unsegmented[0 * 2 + DIR_OUT]).toBe(1);
    expect(pipeline.malformed.size).toBe(0);
    expect(okRecords()[0]).toMatchObject({ protocol: 17, dstport: 4789, packets: 1, bytes: frame.length - 14 });
  });

  it('a single CHECKSUM_PARTIAL packet is mirrored with its checksum completed; the capture buffer is not touched', () => {
    const { frame, offload } = aggregate({ family: 4, proto: 'tcp', payload: 700, gsoSize: 1448 });
    offload.gsoType = GSO_NONE;
    const before = Buffer.from(frame);
    pipeline.handleFrame(0, frame, frame.length, frame.length, TS, DIR_OUT, offload);
    expect(frame.equals(before)).toBe(true);
    expect(tshark([output.copies[0]!.frame], join(dir, 'partial-copy.pcap'))[0]!.l4Csum).toBe(GOOD);
    // Without offload information (a pcap file), the same frame is mirrored as it is.
    pipeline.handleFrame(0, frame, frame.length, frame.length, TS + 1, DIR_OUT, NO_OFFLOAD);
    expect(output.copies[1]!.frame.equals(frame)).toBe(true);
  });

  it('mutated aggregates with random offload information: every wire packet is counted once, copied, skipped or malformed', () => {
    let state = 777;
    const rand = (n: number): number => {
      state = (state * 1103515245 + 12345) >>> 0;
      return (state >>> 8) % n;
    };
    const total = (a: Float64Array): number => a.reduce((x, y) => x + y, 0);
    const malformed = (): number => [...pipeline.malformed.values()].reduce((x, y) => x + y, 0);
    let segmented = 0;
    for (let i = 0; i < 500; i++) {
      const a = aggregate({ family: rand(2) ? 4 : 6, proto: rand(2) ? 'tcp' : 'udp', payload: 1 + rand(20_000), gsoSize: 1 + rand(2000), vlans: rand(4) === 0 ? [5] : undefined });
      for (let j = rand(3); j > 0; j--) a.frame[rand(70)] = rand(256);
      if (rand(4) === 0) a.offload.gsoType = [GSO_NONE, GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4][rand(4)]!;
      const caplen = rand(4) === 0 ? rand(a.frame.length + 1) : a.frame.length;
      const before = { captured: total(pipeline.captured), copies: output.copies.length, skipped: total(pipeline.notMirrored), malformed: malformed() };
      pipeline.handleFrame(0, a.frame, caplen, a.frame.length, TS + i * 1000, rand(2) ? DIR_OUT : DIR_IN, a.offload);
      const captured = total(pipeline.captured) - before.captured;
      const accounted = (output.copies.length - before.copies) + (total(pipeline.notMirrored) - before.skipped) + (malformed() - before.malformed);
      expect(accounted, `frame ${i}`).toBe(captured);
      if (captured > 1) segmented++;
    }
    expect(segmented).toBeGreaterThan(50);
    expect(output.copies.every((c) => c.frame.length <= c.wireLen)).toBe(true);
  });
});
