// Offloaded aggregates built in code, as a PACKET_VNET_HDR capture reports them (the frame and
// its virtio_net_hdr), and tshark's independent reading of frames (checksum validation on),
// for the segmenter's and the pipeline's tests.
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { ethernet, ipv4, ipv6, pcapFile, tcp, udp } from './build-packet.js';
import { GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4, OffloadInfo } from '../../agent/packet/offload.js';
import { ETHERTYPE_IPV4, ETHERTYPE_IPV6, IPPROTO_TCP, IPPROTO_UDP } from '../../agent/packet/offsets.js';
import { GSO_ACCECN } from '../../agent/packet/segment.js';
import { fold, WordSummer } from '../../agent/packet/checksum.js';

export const A4 = '198.18.0.1';
export const B4 = '198.18.0.2';
export const A6 = 'fd00::1';
export const B6 = 'fd00::2';
export const ACK = 0x10;
/** A TCP timestamp option (NOP NOP TS), as Linux sends on every segment of a bulk stream. */
const TS_OPTION = Buffer.from([1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);

/** Payload bytes no two segments share, so a misplaced slice shows. */
export function payloadOf(n: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + (i >> 8) * 7 + 5) & 0xff;
  return b;
}

export interface AggregateSpec {
  family: 4 | 6;
  proto: 'tcp' | 'udp';
  payload: number;
  gsoSize: number;
  flags?: number;
  seq?: number;
  ipId?: number;
  vlans?: number[];
  tcpOptions?: Buffer;
  /** BIG TCP: IPv4 total length 0 / IPv6 payload length 0 (plus the jumbo hop-by-hop header when jumbo). */
  bigTcp?: boolean;
  jumbo?: boolean;
  /** IPv6 extension headers GSO copies into each segment. */
  v6ext?: { type: number; length?: number }[];
  /** The virtio header's ECN bit (OffloadInfo.ecn), or AccECN (its own gso_type bit). */
  ecn?: boolean;
  accecn?: boolean;
}

/** An aggregate as a PACKET_VNET_HDR capture reports it: the frame, with the pseudo-header sum in its checksum field. */
export function aggregate(spec: AggregateSpec): { frame: Buffer; offload: OffloadInfo; payload: Buffer } {
  const payload = payloadOf(spec.payload);
  const l4 = spec.proto === 'tcp'
    ? tcp({ srcPort: 40000, dstPort: 5201, seq: spec.seq ?? 1_000_000, ack: 77, flags: spec.flags ?? ACK, options: spec.tcpOptions ?? TS_OPTION, payload })
    : udp({ srcPort: 40000, dstPort: 4433, payload });
  const protocol = spec.proto === 'tcp' ? IPPROTO_TCP : IPPROTO_UDP;
  const ext = [...(spec.jumbo ? [{ type: 0, length: 8 }] : []), ...(spec.v6ext ?? [])];
  const ip = spec.family === 4
    ? ipv4({ src: A4, dst: B4, protocol, id: spec.ipId ?? 0x1234, dontFragment: true, payload: l4, totalLength: spec.bigTcp ? 0 : undefined })
    : ipv6({ src: A6, dst: B6, nextHeader: protocol, ext, payload: l4, payloadLength: spec.bigTcp ? 0 : undefined });
  if (spec.jumbo) {
    ip[40 + 2] = 0xc2;
    ip[40 + 3] = 4;
    ip.writeUInt32BE(ip.length - 40, 40 + 4);
  }
  const frame = ethernet({ etherType: spec.family === 4 ? ETHERTYPE_IPV4 : ETHERTYPE_IPV6, vlans: spec.vlans?.map((vid) => ({ vid })), payload: ip });
  const l3 = 14 + 4 * (spec.vlans?.length ?? 0);
  const l4At = frame.length - l4.length;
  // CHECKSUM_PARTIAL: the field holds the folded pseudo-header sum for the aggregate's length.
  const words = new WordSummer();
  const addresses = spec.family === 4 ? words.sum(frame, l3 + 12, l3 + 20, 0) : words.sum(frame, l3 + 8, l3 + 40, 0);
  const checkAt = l4At + (spec.proto === 'tcp' ? 16 : 6);
  frame.writeUInt16BE(fold(addresses + protocol + (l4.length & 0xffff)), checkAt);
  if (spec.proto === 'udp') frame.writeUInt16BE(l4.length & 0xffff, l4At + 4);
  const offload = new OffloadInfo();
  offload.gsoType = (spec.family === 4 ? GSO_TCPV4 : GSO_TCPV6) | (spec.accecn ? GSO_ACCECN : 0);
  offload.ecn = spec.ecn ?? false;
  if (spec.proto === 'udp') offload.gsoType = GSO_UDP_L4;
  offload.gsoSize = spec.gsoSize;
  offload.needsCsum = true;
  offload.csumStart = l4At;
  offload.csumOffset = spec.proto === 'tcp' ? 16 : 6;
  offload.hdrLen = l4At + (spec.proto === 'tcp' ? l4.length - payload.length : 8);
  return { frame, offload, payload };
}

/**
 * The aggregate of `inner` as a tunnel carries it (TSO through a vxlan device): outer
 * IPv4/UDP 4789/VXLAN around the inner frame, the virtio header still the inner packet's.
 */
export function vxlanAggregate(inner: { frame: Buffer; offload: OffloadInfo }): { frame: Buffer; offload: OffloadInfo } {
  const vxlan = Buffer.alloc(8);
  vxlan[0] = 0x08;
  const outer = ethernet({
    etherType: ETHERTYPE_IPV4,
    payload: ipv4({ src: '198.19.0.1', dst: '198.19.0.2', protocol: IPPROTO_UDP, dontFragment: true, payload: udp({ srcPort: 50000, dstPort: 4789, payload: Buffer.concat([vxlan, inner.frame]) }) }),
  });
  const offload = new OffloadInfo();
  Object.assign(offload, inner.offload);
  const outerLen = outer.length - inner.frame.length;
  offload.csumStart += outerLen;
  offload.hdrLen += outerLen;
  return { frame: outer, offload };
}

export interface TsharkRow { ipCsum: string; l4Csum: string; seq: string; tcpLen: string; udpLen: string; ipId: string; flags: string }

/** tshark's reading of the segments, checksum validation on for IPv4, TCP and UDP. */
export function tshark(frames: readonly Buffer[], path: string): TsharkRow[] {
  writeFileSync(path, pcapFile(frames));
  const fields = ['ip.checksum.status', 'tcp.checksum.status', 'udp.checksum.status', 'tcp.seq_raw', 'tcp.len', 'udp.length', 'ip.id', 'tcp.flags'];
  const out = execFileSync('tshark', [
    '-r', path, '-n', '-o', 'tcp.check_checksum:TRUE', '-o', 'udp.check_checksum:TRUE', '-o', 'ip.check_checksum:TRUE',
    '-T', 'fields', '-E', 'separator=;', ...fields.flatMap((f) => ['-e', f]),
  ], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  return out.trim().split('\n').map((line) => {
    const [ipCsum = '', tcpCsum = '', udpCsum = '', seq = '', tcpLen = '', udpLen = '', ipId = '', flags = ''] = line.split(';');
    return { ipCsum, l4Csum: tcpCsum || udpCsum, seq, tcpLen, udpLen, ipId, flags };
  });
}

/** Wireshark's PROTO_CHECKSUM_E_GOOD. */
export const GOOD = '1';

