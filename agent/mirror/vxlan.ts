// VXLAN (RFC 7348) framing shared by the live sender and the replay writer: the outer UDP
// header, the 8-byte VXLAN header and the truncation rule of SPEC §3.

export const UDP_HEADER_LEN = 8;
export const VXLAN_HEADER_LEN = 8;
/** Flags byte: the I bit says the VNI is valid. */
const VXLAN_FLAG_VNI = 0x08;
/** Outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14 (SPEC §3: path MTU − 50). */
export const OVERHEAD_IPV4 = 50;
/** Outer IPv6 40 + UDP 8 + VXLAN 8 + inner Ethernet 14 (SPEC §3: path MTU − 70). */
export const OVERHEAD_IPV6 = 70;
export const MAX_VNI = 0xffffff;

/** Largest inner frame that fits the path to a target of this family. */
export function frameLimit(pathMtu: number, family: 4 | 6, packetLength: number): number {
  return Math.max(0, Math.min(packetLength, pathMtu - (family === 6 ? OVERHEAD_IPV6 : OVERHEAD_IPV4)));
}

/** Writes the VXLAN header at `offset`: flags, 24 reserved bits, VNI, 8 reserved bits. */
export function writeVxlanHeader(out: Buffer, offset: number, vni: number): void {
  out[offset] = VXLAN_FLAG_VNI;
  out[offset + 1] = 0;
  out[offset + 2] = 0;
  out[offset + 3] = 0;
  out[offset + 4] = (vni >>> 16) & 0xff;
  out[offset + 5] = (vni >>> 8) & 0xff;
  out[offset + 6] = vni & 0xff;
  out[offset + 7] = 0;
}

/**
 * Writes the outer UDP header at `offset` for a VXLAN datagram carrying an inner frame of
 * `innerLength` bytes, checksum 0 (IPv4 may send none, as the vxlan driver does by default;
 * over IPv6 the kernel or the replay writer fills it in); returns the UDP length.
 */
export function writeOuterUdpHeader(out: Buffer, offset: number, sourcePort: number, targetPort: number, innerLength: number): number {
  const udpLength = UDP_HEADER_LEN + VXLAN_HEADER_LEN + innerLength;
  out.writeUInt16BE(sourcePort, offset);
  out.writeUInt16BE(targetPort, offset + 2);
  out.writeUInt16BE(udpLength, offset + 4);
  out.writeUInt16BE(0, offset + 6);
  return udpLength;
}
