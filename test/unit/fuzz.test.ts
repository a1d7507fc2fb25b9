// Hostile traffic: one million random and mutated frames (bit flips, truncation at every
// header boundary, wrong lengths, bogus IPv4 IHL and IPv6 next headers, deep VLAN stacks)
// through the whole user-space path: decode → match → mirror output → TCP analysis → flow
// table. Nothing may throw, nothing may be read past caplen, and every frame is counted
// exactly once. Seeded: a failure prints the seed that reproduces it.
import { describe, expect, it } from 'vitest';
import { buildPacket, arpRequest } from '../../agent/packet/build.js';
import { parseConfig } from '../../agent/config/load.js';
import { compileRules } from '../../agent/rules/compile.js';
import { MirrorPipeline } from '../../agent/pipeline.js';
import { FlowStage } from '../../agent/flow/stage.js';
import { DECODE_ARP, DECODE_MALFORMED, DECODE_NON_IP, DECODE_OK, DIR_IN, DIR_OUT, PacketView } from '../../agent/packet/view.js';
import { decode } from '../../agent/packet/decode.js';
import type { MirrorOutput } from '../../agent/mirror/output.js';
import type { PacketView as View } from '../../agent/packet/view.js';

const FRAMES = 1_000_000;
const SEED = Number(process.env.FUZZ_SEED ?? 0x6d66);

/** xorshift32: fast, seeded, reproducible. */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
}

const CONFIG = `
agent: { vmId: fuzz, metrics: { listen: "" } }
filters:
  - id: tf-1
    ingressRules:
      - { priority: 1, action: drop, protocol: UDP, sourceCidrBlock: 0.0.0.0/0, destinationCidrBlock: 0.0.0.0/0, destinationPortRange: 53/53 }
      - { priority: 2, action: accept, protocol: ALL, sourceCidrBlock: 0.0.0.0/0, destinationCidrBlock: 0.0.0.0/0 }
      - { priority: 3, action: accept, protocol: ALL, sourceCidrBlock: "::/0", destinationCidrBlock: "::/0" }
    egressRules:
      - { priority: 1, action: accept, protocol: TCP, sourceCidrBlock: 10.0.0.0/8, destinationCidrBlock: 0.0.0.0/0, destinationPortRange: 1/1024 }
      - { priority: 2, action: accept, protocol: ICMP, sourceCidrBlock: "::/0", destinationCidrBlock: "::/0" }
sessions:
  - { id: ts-1, priority: 1, vni: 10, filterId: tf-1, sources: [eth0], target: { address: 192.0.2.10 } }
flowLogs:
  - { id: fl-1, sources: ["*"], window: 60, sink: { type: stdout } }
`;

/** Valid frames the mutator starts from: every protocol and header form the decoder knows. */
const SEEDS: Buffer[] = [
  buildPacket({ src: '10.0.0.1', dst: '10.0.0.2', proto: 'tcp', srcPort: 40000, dstPort: 80, tcpFlags: 0x12, payload: 64 }),
  buildPacket({ src: '10.0.0.1', dst: '10.0.0.2', proto: 'udp', srcPort: 40000, dstPort: 53, payload: 40, vlans: [10] }),
  buildPacket({ src: '10.0.0.1', dst: '10.0.0.2', proto: 'udp', srcPort: 1, dstPort: 2, payload: 300, vlans: [10, 20] }),
  buildPacket({ src: '10.0.0.1', dst: '10.0.0.2', proto: 'icmp', payload: 56 }),
  buildPacket({ src: '10.0.0.1', dst: '10.0.0.2', proto: 'udp', srcPort: 1, dstPort: 2, payload: 100, ipId: 7, fragment: { offset: 0, more: true } }),
  buildPacket({ src: '10.0.0.1', dst: '10.0.0.2', proto: 'udp', payload: 100, ipId: 7, fragment: { offset: 800, more: false } }),
  buildPacket({ src: 'fd00::1', dst: 'fd00::2', proto: 'tcp', srcPort: 5, dstPort: 443, tcpFlags: 0x02 }),
  buildPacket({ src: 'fd00::1', dst: 'fd00::2', proto: 'icmp', payload: 16, v6ext: [{ type: 0, length: 8 }, { type: 60, length: 16 }] }),
  buildPacket({ src: 'fd00::1', dst: 'fd00::2', proto: 'udp', srcPort: 9, dstPort: 10, payload: 30, fragment: { offset: 0, more: true } }),
  arpRequest('10.0.0.1', '10.0.0.2'),
];

/** Offsets worth cutting at or corrupting: header boundaries and length fields. */
const HOT = [12, 13, 14, 15, 16, 17, 18, 22, 23, 24, 26, 30, 34, 38, 42, 46, 47, 54, 58, 62];

function mutate(r: () => number, out: Buffer): number {
  const kind = r() % 8;
  if (kind === 0) {
    // Pure noise, any length.
    const len = r() % 200;
    for (let i = 0; i < len; i++) out[i] = r() & 0xff;
    return len;
  }
  const seed = SEEDS[r() % SEEDS.length]!;
  seed.copy(out);
  let len = seed.length;
  const flips = 1 + (r() % 4);
  for (let i = 0; i < flips; i++) {
    const at = kind <= 3 ? HOT[r() % HOT.length]! : r() % len;
    if (at < len) out[at] = kind === 1 ? r() & 0xff : out[at]! ^ (1 << (r() % 8));
  }
  if (kind === 4) len = r() % (len + 1); // truncation anywhere
  if (kind === 5) len = HOT[r() % HOT.length]! % (len + 1); // truncation at a header boundary
  if (kind === 6) {
    // A deep VLAN stack in front of the payload.
    const tags = 1 + (r() % 5);
    out.copyWithin(12 + tags * 4, 12, len);
    for (let t = 0; t < tags; t++) {
      out.writeUInt16BE(t % 2 === 0 ? 0x8100 : 0x88a8, 12 + t * 4);
      out.writeUInt16BE(r() & 0xfff, 14 + t * 4);
    }
    len += tags * 4;
  }
  if (kind === 7) out[r() % 2 === 0 ? 14 : 20] = r() & 0xff; // IPv4 ver/IHL or IPv6 next header
  return len;
}

class CountingOutput implements MirrorOutput {
  packets = 0;
  bytes = 0;
  truncated = 0;
  sendErrors = 0;
  dropped = 0;
  send(view: View): boolean {
    // What the live sender copies must lie inside the frame.
    if (view.caplen > view.buf.length) throw new Error('caplen beyond the buffer');
    this.packets++;
    return true;
  }
  async close(): Promise<void> {}
}

describe('fuzz: a million hostile frames through the user-space path', () => {
  it(`never throws, never reads past caplen, and counts every frame once (seed ${SEED})`, () => {
    const config = parseConfig(CONFIG, { localAddresses: [] });
    const rules = compileRules(config);
    const output = new CountingOutput();
    const flow = new FlowStage({ config, interfaces: rules.interfaces, emit: () => undefined, maxFlows: 4096, maxConnections: 4096 });
    const pipeline = new MirrorPipeline(rules, [output], flow);
    const r = rng(SEED);
    const scratch = Buffer.alloc(2048);
    const probe = new PacketView();
    const byStatus = [0, 0, 0];
    let malformed = 0;
    let t = 1_700_000_000_000_000;
    for (let n = 0; n < FRAMES; n++) {
      const len = mutate(r, scratch);
      // An exact-length view: any read past caplen hits the end of the Buffer.
      const frame = scratch.subarray(0, len);
      const dir = r() & 1 ? DIR_OUT : DIR_IN;
      t += 1 + (r() % 1000);
      try {
        probe.tsUs = t;
        probe.direction = dir;
        const wire = len + (r() % 3);
        const status = decode(probe, frame, len, wire);
        if (status >= DECODE_MALFORMED) malformed++;
        else byStatus[status === DECODE_OK ? 0 : status === DECODE_NON_IP ? 1 : status === DECODE_ARP ? 2 : 0]! += 1;
        if (status < DECODE_MALFORMED && probe.l4Offset > probe.caplen) throw new Error(`l4Offset ${probe.l4Offset} past caplen ${probe.caplen}`);
        pipeline.handleFrame(0, frame, len, wire, t, dir);
      } catch (err) {
        throw new Error(`seed ${SEED}, frame ${n} (${frame.toString('hex')}): ${(err as Error).message}`);
      }
    }
    flow.flushAll();
    const captured = pipeline.captured[0]! + pipeline.captured[1]!;
    const malformedCounted = [...pipeline.malformed.values()].reduce((a, b) => a + b, 0);
    const notMirrored = pipeline.notMirrored.reduce((a, b) => a + b, 0);
    expect(captured).toBe(FRAMES);
    expect(malformedCounted).toBe(malformed);
    // Every well-formed frame was either mirrored or counted with a reason.
    expect(output.packets + notMirrored + malformedCounted).toBe(FRAMES);
    expect(malformed).toBeGreaterThan(FRAMES / 20);
    expect(byStatus[0]).toBeGreaterThan(FRAMES / 20);
    expect(flow.tcp.active).toBeLessThanOrEqual(4096);
    expect(flow.aggregators[0]!.activeFlows).toBeLessThanOrEqual(4096);
  }, 120_000);
});
