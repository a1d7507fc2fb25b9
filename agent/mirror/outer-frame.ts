// Whole outer frames (Ethernet / IPv4 or IPv6 / UDP / VXLAN / inner frame) for `mirrorflow
// replay`, which writes what the live sender would put on the wire into a pcap file. The
// live path never builds these: the kernel adds the outer headers to the UDP payload.
import { wireAddress } from '../packet/address.js';
import type { PacketView } from '../packet/view.js';
import type { MirrorOutput } from './output.js';
import { flowHash, flowSourcePort } from './flow-hash.js';
import { allHealthy, pickMember } from './pool.js';
import { frameLimit, UDP_HEADER_LEN, VXLAN_HEADER_LEN, writeOuterUdpHeader, writeVxlanHeader } from './vxlan.js';
import { checksumOf, WordSummer } from '../packet/checksum.js';

const ETH_LEN = 14;
const IPV4_LEN = 20;
const IPV6_LEN = 40;
const ETHERTYPE_IPV4 = 0x0800;
const ETHERTYPE_IPV6 = 0x86dd;
const IPPROTO_UDP = 17;
const TTL = 64;
/** Locally administered MACs: replay has no real next hop to name. */
const OUTER_SRC_MAC = Buffer.from('020000000001', 'hex');
const OUTER_DST_MAC = Buffer.from('020000000002', 'hex');

/** Receives finished frames (the replay's pcap writer). */
export interface FrameWriter {
  write(buf: Buffer, caplen: number, wireLen: number, tsUs: number): void;
}

export interface OuterFrameOptions {
  /** Outer source address: the address this host would send from. */
  sourceAddress: string;
  targetAddress: string;
  targetPort: number;
  pathMtu: number;
  /** A sensor pool's members (targetAddress is the first): each flow's copies go to the one
   * it hashes to with every member healthy (replay has no health checks). */
  members?: readonly string[];
}

/** A MirrorOutput that writes complete outer frames into a FrameWriter. */
export class OuterFrameOutput implements MirrorOutput {
  packets = 0;
  bytes = 0;
  truncated = 0;
  sendErrors = 0;
  dropped = 0;
  /** A capture file has no budget: replay writes every copy. */
  readonly budgetDrops = 0;
  private readonly family: 4 | 6;
  private readonly src: Buffer;
  /** One outer destination per pool member (one for a single target). */
  private readonly dst: Buffer[];
  private readonly frame = Buffer.alloc(65535);
  private readonly words = new WordSummer();

  constructor(private readonly opts: OuterFrameOptions, private readonly writer: FrameWriter) {
    // IPv4-mapped literals go out over IPv4, as a socket would send them.
    const src = wireAddress(opts.sourceAddress);
    const dst = wireAddress(opts.targetAddress);
    if (src.family !== dst.family) {
      throw new Error(`outer source ${opts.sourceAddress} and target ${opts.targetAddress} are not the same IP version`);
    }
    this.family = dst.family;
    this.src = Buffer.from(src.bytes);
    this.dst = (opts.members ?? [opts.targetAddress]).map((a) => Buffer.from(wireAddress(a).bytes));
  }

  send(view: PacketView, vni: number, packetLength: number): boolean {
    const len = Math.min(view.caplen, frameLimit(this.opts.pathMtu, this.family, packetLength));
    if (len < view.wireLen) this.truncated++;
    const f = this.frame;
    const dst = this.dst.length === 1 ? this.dst[0]! : this.dst[pickMember(flowHash(view), this.dst.length, allHealthy(this.dst.length))]!;
    OUTER_DST_MAC.copy(f, 0);
    OUTER_SRC_MAC.copy(f, 6);
    const ipLen = this.family === 4 ? IPV4_LEN : IPV6_LEN;
    const udp = ETH_LEN + ipLen;
    const udpLength = UDP_HEADER_LEN + VXLAN_HEADER_LEN + len;
    if (this.family === 4) {
      f.writeUInt16BE(ETHERTYPE_IPV4, 12);
      f.fill(0, ETH_LEN, udp);
      f[ETH_LEN] = 0x45;
      f.writeUInt16BE(IPV4_LEN + udpLength, ETH_LEN + 2);
      f.writeUInt16BE(0x4000, ETH_LEN + 6); // DF, as the kernel sends with path MTU discovery
      f[ETH_LEN + 8] = TTL;
      f[ETH_LEN + 9] = IPPROTO_UDP;
      this.src.copy(f, ETH_LEN + 12);
      dst.copy(f, ETH_LEN + 16);
      f.writeUInt16BE(checksumOf(this.words.sum(f, ETH_LEN, udp, 0)), ETH_LEN + 10);
    } else {
      f.writeUInt16BE(ETHERTYPE_IPV6, 12);
      f.writeUInt32BE(0x60000000, ETH_LEN);
      f.writeUInt16BE(udpLength, ETH_LEN + 4);
      f[ETH_LEN + 6] = IPPROTO_UDP;
      f[ETH_LEN + 7] = TTL;
      this.src.copy(f, ETH_LEN + 8);
      dst.copy(f, ETH_LEN + 24);
    }
    writeOuterUdpHeader(f, udp, flowSourcePort(view), this.opts.targetPort, len);
    writeVxlanHeader(f, udp + UDP_HEADER_LEN, vni);
    view.buf.copy(f, udp + UDP_HEADER_LEN + VXLAN_HEADER_LEN, 0, len);
    if (this.family === 6) {
      // IPv6 requires the UDP checksum: pseudo-header (addresses, length, next header) + datagram.
      const s = this.words.sum(f, ETH_LEN + 8, ETH_LEN + 40, udpLength + IPPROTO_UDP);
      f.writeUInt16BE(checksumOf(this.words.sum(f, udp, udp + udpLength, s)) || 0xffff, udp + 6);
    }
    const total = udp + udpLength;
    this.writer.write(f, total, total, view.tsUs);
    this.packets++;
    // SPEC §5: the inner Ethernet frame after the cut, as the live sender counts it.
    this.bytes += len;
    return true;
  }

  async close(): Promise<void> {}
}
