// A bulk TCP transfer through the mirrored interface, with the lab's offloads as the kernel
// has them (TSO/GSO aggregates on the veths), and what the destination made of its copies:
// one copy per wire segment, and the copies' sequence ranges (from their TCP headers,
// which a cut leaves whole) covering every byte the receiver got.
import { join } from 'node:path';
import { run } from '../exec.js';
import type { NsRole, Topology } from './topology.js';

/** Outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8. */
const OUTER_V4 = 50;
const ETH = 14;
const TIMEOUT_MS = 120_000;
/** Snap length for captures of VXLAN copies on the underlay: a jumbo copy (9000-byte path) fits whole. */
export const COPY_SNAP_LENGTH = 9100;

export interface SeqRange {
  seq: number;
  len: number;
}

/**
 * Bytes covered by the union of [seq, seq + len) in 32-bit sequence space, counted from
 * the lowest start; -1 when the union has a hole.
 */
export function coveredWithoutHoles(ranges: readonly SeqRange[]): number {
  if (ranges.length === 0) return 0;
  const base = ranges.reduce((m, r) => (((r.seq - m) | 0) < 0 ? r.seq : m), ranges[0]!.seq);
  const rel = ranges.map((r) => ({ start: (r.seq - base) >>> 0, end: ((r.seq - base) >>> 0) + r.len })).sort((a, b) => a.start - b.start);
  let end = 0;
  for (const r of rel) {
    if (r.start > end) return -1;
    end = Math.max(end, r.end);
  }
  return end;
}

/**
 * Bytes the receiving iperf3 read, from iperf3 -J. Not what the sender wrote: with -n the
 * test ends once the sender has written its bytes, and the receiver stops reading then,
 * so the tail of what was written may never cross the wire (a zero window holds it back).
 */
export function receivedBytes(iperfJson: string): number {
  return (JSON.parse(iperfJson) as { end: { sum_received: { bytes: number } } }).end.sum_received.bytes;
}

export interface BulkResult {
  /** What iperf3's receiver got. */
  received: number;
  /** Copies of the data direction that carry payload. */
  dataCopies: number;
  /** Of those, cut to the path (SPEC §3). */
  cut: number;
  /** Largest inner frame that arrived. */
  largestFrame: number;
  /** Bytes of the stream the copies cover without a hole; -1 when there is one. */
  covered: number;
  /** What the destination's own capture lost (tcpdump's kernel drops): copies that arrived but were not seen. */
  captureDrops: number;
}

/**
 * Runs `iperf3 -n bytes -b pace` from src to an iperf3 server on dst's `port` with a
 * capture of dst's underlay, and measures the copies of the data connection (VNI `vni`).
 */
export async function bulkTransfer(topo: Topology, vni: number, port: number, bytes: number, pace: string): Promise<BulkResult> {
  const file = join(topo.workDir, 'bulk.pcap');
  const server = topo.spawn('dst', 'iperf3', ['-s', '-1', '--forceflush', '-p', String(port)]);
  await server.waitForLine(/Server listening/, 10_000, { stream: 'stdout' });
  const cap = await startCopyCapture(topo, file);
  const cport = 42000 + Math.floor(Math.random() * 1000);
  const { stdout } = await topo.exec('src', 'iperf3', ['-c', topo.v4.dst, '-p', String(port), '-n', String(bytes), '-b', pace, '--cport', String(cport), '-J'], { timeoutMs: TIMEOUT_MS });
  const received = receivedBytes(stdout);
  const captureDrops = await cap.stop();
  const { stdout: rows } = await run('tshark', ['-r', file, '-n', '-Y', `vxlan.vni == ${vni} && tcp.srcport == ${cport}`, '-T', 'fields',
    '-E', 'separator=/t', '-E', 'occurrence=l', '-e', 'frame.len', '-e', 'ip.len', '-e', 'ip.hdr_len', '-e', 'tcp.hdr_len', '-e', 'tcp.seq_raw'], { timeoutMs: TIMEOUT_MS });
  const ranges: SeqRange[] = [];
  let cut = 0;
  let largestFrame = 0;
  for (const line of rows.split('\n')) {
    if (line === '') continue;
    const [frameLen = 0, ipLen = 0, ipHdr = 0, tcpHdr = 0, seq = 0] = line.split('\t').map(Number);
    const payload = ipLen - ipHdr - tcpHdr;
    if (payload <= 0) continue;
    const inner = frameLen - OUTER_V4;
    largestFrame = Math.max(largestFrame, inner);
    if (inner < ETH + ipLen) cut++;
    ranges.push({ seq, len: payload });
  }
  return { received, dataCopies: ranges.length, cut, largestFrame, covered: coveredWithoutHoles(ranges), captureDrops };
}

export interface CopyCapture {
  file: string;
  /**
   * Waits until what was on its way is in the file, stops tcpdump and resolves with its
   * kernel drop count (copies that arrived but were not seen; NaN when tcpdump failed or
   * did not say).
   */
  stop(): Promise<number>;
}

/**
 * tcpdump -w of the VXLAN copies on dst's underlay. No printing: a bulk transfer's copies
 * outrun tcpdump's text output. Immediate mode: a ring block still waiting for its timeout
 * when tcpdump stops would be lost (the tail). In immediate mode libpcap uses a TPACKET_V2
 * ring of snap-length slots, so -s 0 (256 KiB) would leave a 256 MiB buffer only ~1000
 * slots and drop under a bulk transfer's burst of copies.
 */
export async function startCopyCapture(topo: Topology, file: string): Promise<CopyCapture> {
  const proc = topo.spawn('dst', 'tcpdump', ['-i', topo.dstIf, '-n', '-U', '--immediate-mode', '-B', '262144', '-s', String(COPY_SNAP_LENGTH), '-Z', 'root', '-w', file, 'udp', 'port', '4789']);
  await proc.waitForLine(/listening on/, 10_000, { stream: 'stderr' });
  return {
    file,
    stop: async () => {
      await waitForQuietFile(topo, 'dst', file);
      // A tcpdump that failed says nothing trustworthy about what it saw.
      if ((await proc.stop('SIGTERM')).code !== 0) return NaN;
      return Number(proc.lines.stderr.map((l) => /^(\d+) packets? dropped by kernel/.exec(l)?.[1]).find((n) => n !== undefined) ?? NaN);
    },
  };
}

/**
 * Resolves once a capture file (written with tcpdump -U --immediate-mode, so each packet
 * reaches the file as it arrives) has not grown for 300 ms: what was on its way is in.
 */
async function waitForQuietFile(topo: Topology, role: NsRole, file: string): Promise<void> {
  const size = async () => Number((await topo.exec(role, 'stat', ['-c', '%s', file])).stdout.trim());
  let last = -1;
  for (let now = await size(); now !== last; now = await size()) {
    last = now;
    await new Promise((r) => setTimeout(r, 300));
  }
}
