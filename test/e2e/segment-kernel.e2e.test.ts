// Our segments against the kernel's: a bulk TCP transfer leaves src as TSO aggregates (the
// lab's veth, default offloads), captured with the AF_PACKET ring and run through the
// pipeline, whose copies are the segments the segmenter built. The peer router forwards the
// same aggregates (and UDP_SEGMENT sends) out of an interface with TSO, GSO and checksum offload off, so the kernel's
// software GSO segments them there with complete checksums; that capture is the reference.
// The two sets of frames must be equal byte for byte, once what forwarding changes (MACs,
// TTL / hop limit, the IPv4 header checksum) is blanked; tshark validates our checksums.
// And the TCP analysis on those segments, with TSO on and 2% loss at the receiver, counts
// the retransmissions the sender's kernel counts (TcpRetransSegs).
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createLabTopology, type NsRole, type Topology } from '../../agent/lab/topology.js';
import { MIRROR_SNAP_LENGTH, PacketRing } from '../../agent/capture/packet-ring.js';
import { parseConfig } from '../../agent/config/load.js';
import { compileRules } from '../../agent/rules/compile.js';
import { MirrorPipeline } from '../../agent/pipeline.js';
import { FlowStage } from '../../agent/flow/stage.js';
import { GSO_NONE } from '../../agent/packet/offload.js';
import { DIR_OUT } from '../../agent/packet/view.js';
import { inNetns } from './helpers/netns.js';
import { GOOD, tshark } from '../helpers/aggregate.js';
import { mirrorEgressConfig, RecordingOutput } from '../helpers/recording-output.js';

const TIMEOUT_MS = 120_000;
const IPERF_PORT = 5231;
const UDP_PORT = 5232;

/** Sends count UDP_SEGMENT (SOL_UDP 103) sends of size bytes in gso-byte datagrams. */
const PY_UDP_GSO_SENDER = `
import socket, sys
host, port, count, size, gso = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
s = socket.socket(socket.AF_INET6 if ':' in host else socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(17, 103, gso)
for i in range(count):
    s.sendto(bytes((i + j) & 0xff for j in range(size)), (host, port))
`;

let topo: Topology;

beforeAll(async () => {
  topo = await createLabTopology();
  // Only inside the lab's own namespace: the kernel segments (and checksums) in software here.
  await topo.exec('peer', 'ethtool', ['-K', topo.peerDstIf, 'tso', 'off', 'gso', 'off', 'tx', 'off']);
}, TIMEOUT_MS);

async function retransSegs(): Promise<number> {
  const { stdout } = await topo.exec('src', 'nstat', ['-az', '--json', 'TcpRetransSegs']);
  return (JSON.parse(stdout) as { kernel: { TcpRetransSegs: number } }).kernel.TcpRetransSegs;
}

afterAll(async () => {
  await topo?.destroy();
});

async function iperf(serverAddr: string, bytes: string): Promise<void> {
  const server = topo.spawn('dst', 'iperf3', ['-s', '-1', '--forceflush', '-B', serverAddr, '-p', String(IPERF_PORT)]);
  await server.waitForLine(/Server listening/, 10_000);
  try {
    await topo.exec('src', 'iperf3', ['-c', serverAddr, '-p', String(IPERF_PORT), '-n', bytes], { timeoutMs: 60_000 });
  } finally {
    // A one-off server ends with its client; never wait on it longer than that.
    await Promise.race([server.exited, new Promise((r) => setTimeout(r, 10_000))]);
    await server.stop('SIGTERM', 5000);
  }
}

function ring(role: NsRole, interfaceName: string, filterOut: string, onFrame: ConstructorParameters<typeof PacketRing>[0]['onFrame']): PacketRing {
  return inNetns(topo.ns[role], () => new PacketRing({
    interfaceName, filterIn: 'less 1', filterOut, snapLength: MIRROR_SNAP_LENGTH,
    bufferBytes: 64 << 20, bufferTimeoutMs: 10, onFrame,
    onWarning: (msg) => { throw new Error(`unexpected capture warning: ${msg}`); },
  }));
}

/** Blanks what forwarding changes: both MACs, TTL or hop limit, the IPv4 header checksum. */
function normalised(frame: Buffer): string {
  const f = Buffer.from(frame);
  f.fill(0, 0, 12);
  if (f.readUInt16BE(12) === 0x0800) {
    f[14 + 8] = 0;
    f.writeUInt16BE(0, 14 + 10);
  } else {
    f[14 + 7] = 0;
  }
  return f.toString('hex');
}

/** What one side has more of than the other (first 100 bytes of each frame's hex shown). */
function multisetDiff(ours: string[], kernel: string[]): { oursOnly: string[]; kernelOnly: string[] } {
  const count = new Map<string, number>();
  for (const h of ours) count.set(h, (count.get(h) ?? 0) + 1);
  for (const h of kernel) count.set(h, (count.get(h) ?? 0) - 1);
  const show = (h: string, n: number) => `${n}x ${h.length / 2} B ${h.slice(0, 200)}`;
  return {
    oursOnly: [...count].filter(([, n]) => n > 0).map(([h, n]) => show(h, n)),
    kernelOnly: [...count].filter(([, n]) => n < 0).map(([h, n]) => show(h, -n)),
  };
}

describe('segments built in user space equal the kernel\'s software GSO (root, namespaces)', () => {
  const cases = [
    { name: 'TCP/IPv4, 8 MB of TSO aggregates', family: 4, filter: `tcp port ${IPERF_PORT}`, minAggregates: 20 },
    { name: 'TCP/IPv6, 8 MB of TSO aggregates', family: 6, filter: `tcp port ${IPERF_PORT}`, minAggregates: 20 },
    { name: 'UDP/IPv4, 100 UDP_SEGMENT sends of 10.5 datagrams', family: 4, filter: `udp port ${UDP_PORT}`, minAggregates: 100 },
    { name: 'UDP/IPv6, 100 UDP_SEGMENT sends of 10.5 datagrams', family: 6, filter: `udp port ${UDP_PORT}`, minAggregates: 100 },
  ] as const;
  for (const { name, family, filter, minAggregates } of cases) {
    test(name, async () => {
      const config = parseConfig(mirrorEgressConfig(topo.srcIf, { flowLog: false }), { localAddresses: [] });
      const rules = compileRules(config);
      const output = new RecordingOutput();
      const pipeline = new MirrorPipeline(rules, [output]);
      let aggregates = 0;
      const ours = ring('src', topo.srcIf, filter, (buf, caplen, wireLen, ts, direction, offload) => {
        if (offload.gsoType !== GSO_NONE) aggregates++;
        pipeline.handleFrame(0, buf, caplen, wireLen, ts, direction, offload);
      });
      const kernel: Buffer[] = [];
      let kernelOffloaded = 0;
      const theirs = ring('peer', topo.peerDstIf, filter, (buf, caplen, wireLen, _ts, direction, offload) => {
        if (direction !== DIR_OUT) return;
        if (offload.gsoType !== GSO_NONE || offload.needsCsum || caplen !== wireLen) kernelOffloaded++;
        kernel.push(Buffer.from(buf.subarray(0, caplen)));
      });
      try {
        const dst = family === 4 ? topo.v4.dst : topo.v6.dst;
        if (filter.startsWith('tcp')) await iperf(dst, '8M');
        else await topo.exec('src', 'python3', ['-c', PY_UDP_GSO_SENDER, dst, String(UDP_PORT), '100', String(1400 * 10 + 700), '1400'], { timeoutMs: 60_000 });
        await new Promise((r) => setTimeout(r, 300));
        await Promise.all([ours.drain(), theirs.drain()]);
        const copies = output.copies.map((c) => c.frame);
        expect(ours.stats().dropped).toBe(0);
        expect(theirs.stats().dropped).toBe(0);
        console.log(`${name}: ${aggregates} aggregates on src, ${copies.length} segments built, ${kernel.length} from the kernel`);
        // The reference really is the kernel's segmentation: nothing offloaded left on that side.
        expect(kernelOffloaded).toBe(0);
        expect(aggregates).toBeGreaterThanOrEqual(minAggregates);
        expect(copies.length).toBe(kernel.length);
        expect(multisetDiff(copies.map(normalised), kernel.map(normalised))).toEqual({ oursOnly: [], kernelOnly: [] });
        const rows = tshark(copies, join(topo.workDir, `ours-${name.replace(/\W+/g, '-')}.pcap`));
        expect(rows.filter((r) => r.l4Csum !== GOOD || (family === 4 && r.ipCsum !== GOOD))).toEqual([]);
      } finally {
        ours.close();
        theirs.close();
      }
    }, TIMEOUT_MS);
  }

  test('TCP analysis on segments: with TSO on and 2% loss, retransmissions equal the sender\'s TcpRetransSegs', async () => {
    const config = parseConfig(mirrorEgressConfig(topo.srcIf, { flowLog: true }), { localAddresses: [] });
    const rules = compileRules(config);
    const flow = new FlowStage({ config, interfaces: rules.interfaces, emit: () => undefined });
    const pipeline = new MirrorPipeline(rules, [new RecordingOutput()], flow);
    let aggregates = 0;
    const ours = ring('src', topo.srcIf, `tcp port ${IPERF_PORT}`, (buf, caplen, wireLen, ts, direction, offload) => {
      if (offload.gsoType !== GSO_NONE) aggregates++;
      pipeline.handleFrame(0, buf, caplen, wireLen, ts, direction, offload);
    });
    // Losses at the receiver (iptables statistic, as tcp-scenarios does): src sees every segment it sends, and resends some.
    const drop = ['INPUT', '-p', 'tcp', '--dport', String(IPERF_PORT), '-m', 'statistic', '--mode', 'random', '--probability', '0.02', '-j', 'DROP'];
    await topo.exec('dst', 'iptables', ['-A', ...drop]);
    try {
      const before = await retransSegs();
      await iperf(topo.v4.dst, '8M');
      await new Promise((r) => setTimeout(r, 300));
      await ours.drain();
      const kernel = (await retransSegs()) - before;
      expect(ours.stats().dropped).toBe(0);
      const mine = flow.counters.retransmissions[0]!;
      console.log(`2% loss: ${aggregates} aggregates; retransmissions ${mine}, TcpRetransSegs +${kernel}`);
      expect(aggregates).toBeGreaterThan(20);
      expect(kernel).toBeGreaterThan(20);
      expect(Math.abs(mine - kernel)).toBeLessThanOrEqual(Math.ceil(kernel * 0.05));
    } finally {
      ours.close();
      await topo.exec('dst', 'iptables', ['-D', ...drop]);
    }
  }, TIMEOUT_MS);
});
