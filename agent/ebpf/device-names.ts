// Names of the devices the eBPF plane creates. Kept apart from data-plane.ts (which loads
// libbpf) so config code can tell the agent's own devices from a source without loading it.

/** Our VXLAN devices are mf-vxlan-<port>; nothing else on the host may use the prefix. */
export const VXLAN_PREFIX = 'mf-vxlan-';
/**
 * The segmenting veth pair: clones go out of SEG_TX, whose segmentation and checksum
 * offloads are off, so the kernel's GSO code turns an aggregate into the wire segments it
 * stands for (complete checksums included); each arrives on SEG_RX, where mf_tunnel cuts,
 * counts and sends it to the VXLAN device. Only these two devices have their offloads
 * changed, and they are ours.
 */
export const SEG_TX = 'mf-seg';
export const SEG_RX = 'mf-seg-rx';

/** True for a device of the agent's own: `*` and patterns never cover it (its traffic is our copies). */
export function isOwnDevice(name: string): boolean {
  return name === SEG_TX || name === SEG_RX || name.startsWith(VXLAN_PREFIX);
}
