// The VXLAN source port carries the inner flow's entropy (RFC 7348 §5) so ECMP and RSS on
// the way to the destination spread flows but keep each one on one path.
import type { PacketView } from '../packet/view.js';
import { fmix32, FNV_OFFSET, fnvStep } from '../packet/hash.js';

export const SOURCE_PORT_MIN = 49152;
export const SOURCE_PORT_MAX = 65535;

/** 32-bit hash of the inner 5-tuple (addresses, protocol, ports); integer math only. */
export function flowHash(view: PacketView): number {
  let h = FNV_OFFSET ^ view.protocol;
  const src = view.src;
  const dst = view.dst;
  for (let i = 0; i < 4; i++) {
    h = fnvStep(h, src[i]!);
    h = fnvStep(h, dst[i]!);
  }
  return fmix32(fnvStep(h, (view.srcPort << 16) | view.dstPort));
}

/** A port in 49152..65535 for the flow: stable for the 5-tuple. */
export function flowSourcePort(view: PacketView): number {
  return SOURCE_PORT_MIN + (flowHash(view) % (SOURCE_PORT_MAX - SOURCE_PORT_MIN + 1));
}
