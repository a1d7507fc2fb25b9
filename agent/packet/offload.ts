// What the kernel says about a frame beyond its bytes: the virtio_net_hdr that an AF_PACKET
// socket with PACKET_VNET_HDR puts before each frame (include/uapi/linux/virtio_net.h).
// A frame with gsoType !== GSO_NONE is an aggregate (TSO/GSO on transmit, GRO on receive,
// UDP GSO/GRO, BIG TCP) that stands for several wire segments of gsoSize payload bytes each;
// needsCsum says the transport checksum field holds only the pseudo-header sum
// (CHECKSUM_PARTIAL) and the real one must be computed from csumStart, stored at
// csumStart + csumOffset. One OffloadInfo is owned by each capture and refilled per frame:
// read it during the frame callback, never keep it.

/** virtio_net_hdr.gso_type values (the ECN bit masked off). */
export const GSO_NONE = 0;
export const GSO_TCPV4 = 1;
export const GSO_UDP = 3;
export const GSO_TCPV6 = 4;
export const GSO_UDP_L4 = 5;
/** virtio_net_hdr.gso_type bit: the aggregate carries ECN (CWR set on its first segment only). */
export const GSO_ECN = 0x80;
/** virtio_net_hdr.flags bits. */
export const VNET_F_NEEDS_CSUM = 1;
export const VNET_F_DATA_VALID = 2;
/** sizeof(struct virtio_net_hdr). */
export const VNET_HDR_LEN = 10;

export class OffloadInfo {
  /** GSO_* without the ECN bit; GSO_NONE for a frame that is one wire packet. */
  gsoType = GSO_NONE;
  /** The ECN bit of gso_type. */
  ecn = false;
  /** Transport payload bytes per segment (the last may be shorter). */
  gsoSize = 0;
  /** Header bytes the kernel reports (a hint: the segmenter parses the headers itself). */
  hdrLen = 0;
  /** The checksum at csumStart + csumOffset is a pseudo-header sum, to be completed. */
  needsCsum = false;
  /** Offsets from the start of the Ethernet frame as delivered. */
  csumStart = 0;
  csumOffset = 0;

  /** Back to "one wire packet, checksums as they are". */
  reset(): void {
    this.gsoType = GSO_NONE;
    this.ecn = false;
    this.gsoSize = 0;
    this.hdrLen = 0;
    this.needsCsum = false;
    this.csumStart = 0;
    this.csumOffset = 0;
  }

  /** Fills this from a virtio_net_hdr (little-endian, as AF_PACKET writes it) at buf[off]. */
  readVnetHeader(buf: Buffer, off: number): void {
    const flags = buf[off]!;
    const type = buf[off + 1]!;
    this.gsoType = type & ~GSO_ECN;
    this.ecn = (type & GSO_ECN) !== 0;
    this.hdrLen = buf.readUInt16LE(off + 2);
    this.gsoSize = buf.readUInt16LE(off + 4);
    this.needsCsum = (flags & VNET_F_NEEDS_CSUM) !== 0;
    this.csumStart = buf.readUInt16LE(off + 6);
    this.csumOffset = buf.readUInt16LE(off + 8);
  }
}

/** For frames whose capture carries no offload information (pcap files): one wire packet each. */
export const NO_OFFLOAD: Readonly<OffloadInfo> = Object.freeze(new OffloadInfo());
