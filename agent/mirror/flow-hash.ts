// The VXLAN source port carries the inner flow's entropy (RFC 7348 §5) so ECMP and RSS on
// the way to the destination spread flows but keep each one on one path.
import type { PacketView } from '../packet/view.js';

export const SOURCE_PORT_MIN = 49152;
export const SOURCE_PORT_MAX = 65535;

/** 32-bit hash of the inner 5-tuple (addresses, protocol, ports); integer math only. */
export function flowHash(view: PacketView): number {
  let h = 0x811c9dc5 ^ view.protocol;
  const src = view.src;
  const dst = view.dst;
  for (let i = 0; i < 4; i++) {
    h = Math.imul(h ^ src[i]!, 0x01000193);
    h = Math.imul(h ^ dst[i]!, 0x01000193);
  }
  h = Math.imul(h ^ ((view.srcPort << 16) | view.dstPort), 0x01000193);
  // Final avalanche (murmur3 fmix32) so nearby tuples land far apart.
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** A port in 49152..65535 for the flow: stable for the 5-tuple. */
export function flowSourcePort(view: PacketView): number {
  return SOURCE_PORT_MIN + (flowHash(view) % (SOURCE_PORT_MAX - SOURCE_PORT_MIN + 1));
}
