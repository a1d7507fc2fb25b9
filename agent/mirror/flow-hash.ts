// The VXLAN source port carries the inner flow's entropy (RFC 7348 §5) so ECMP and RSS on
// the way to the destination spread flows but keep each one on one path. The hash is
// symmetric (SPEC §3): both directions of a connection get the same value, so a sensor or
// a load balancer hashing the outer 5-tuple keeps a connection together. Must be in sync
// with bpf/flow_hash.bpf.h (the eBPF plane computes it in the kernel); test/ebpf/tunnel.test.ts
// compares the two.
import type { PacketView } from '../packet/view.js';
import { fmix32, FNV_OFFSET, fnvStep } from '../packet/hash.js';

export const SOURCE_PORT_MIN = 49152;
export const SOURCE_PORT_MAX = 65535;
const TWO_32 = 2 ** 32;

/** < 0 when (src, srcPort) sorts before (dst, dstPort), 0 when equal, > 0 after. */
function endpointOrder(view: PacketView): number {
  for (let i = 0; i < 4; i++) {
    const s = view.src[i]!;
    const d = view.dst[i]!;
    if (s !== d) return s < d ? -1 : 1;
  }
  return view.srcPort - view.dstPort;
}

/**
 * 32-bit hash of the inner 5-tuple (addresses, protocol, ports), the same for both
 * directions: the lower endpoint goes first. Never 0 (the vxlan driver reads 0 as none).
 */
export function flowHash(view: PacketView): number {
  const swap = endpointOrder(view) > 0;
  // No destructuring: this runs per copy, and an array per call would be garbage.
  const a = swap ? view.dst : view.src;
  const b = swap ? view.src : view.dst;
  let h = FNV_OFFSET ^ view.protocol;
  for (let i = 0; i < 4; i++) {
    h = fnvStep(h, a[i]!);
    h = fnvStep(h, b[i]!);
  }
  const ports = swap ? ((view.dstPort << 16) | view.srcPort) : ((view.srcPort << 16) | view.dstPort);
  return fmix32(fnvStep(h, ports)) || 1;
}

/**
 * The outer source port for the flow as the Linux vxlan driver derives it from the hash
 * (udp_flow_src_port with the eBPF plane's device range 49152..65535): the same port in
 * `replay` as on the wire from the eBPF plane.
 */
export function flowSourcePort(view: PacketView): number {
  const h = flowHash(view);
  const mixed = (h ^ (h << 16)) >>> 0;
  return SOURCE_PORT_MIN + Math.floor((mixed * (SOURCE_PORT_MAX - SOURCE_PORT_MIN)) / TWO_32);
}
