// A drained kernel flow (mf_flows or mf_rejects entry) as the PacketView the flow stage
// counts with: 5-tuple, direction, and the wall-clock time of its last packet (the kernel
// stamps CLOCK_MONOTONIC, the same clock as process.hrtime).
import { IPPROTO_ICMP, IPPROTO_ICMPV6 } from '../packet/offsets.js';
import { PacketView } from '../packet/view.js';
import type { KernelFlowKey } from './layout.js';

export function fillRejectView(view: PacketView, r: KernelFlowKey, nowWallUs: number, nowMonoNs: bigint): PacketView {
  for (let i = 0; i < 4; i++) {
    view.src[i] = r.src[i]!;
    view.dst[i] = r.dst[i]!;
  }
  view.ipVersion = r.family;
  view.protocol = r.protocol;
  // The kernel keys ICMP flows per type and code, in the destination port slot.
  const icmp = r.protocol === IPPROTO_ICMP || r.protocol === IPPROTO_ICMPV6;
  view.srcPort = icmp ? 0 : r.srcPort;
  view.dstPort = icmp ? 0 : r.dstPort;
  view.icmpType = icmp ? r.dstPort >> 8 : 0;
  view.icmpCode = icmp ? r.dstPort & 0xff : 0;
  view.direction = r.dir;
  view.tsUs = nowWallUs - Number(nowMonoNs - r.lastNs) / 1000;
  return view;
}
