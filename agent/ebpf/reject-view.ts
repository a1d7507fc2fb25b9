// A drained REJECT entry as the PacketView the flow stage counts with: 5-tuple, direction,
// and the wall-clock time of the last dropped packet (the kernel stamps CLOCK_MONOTONIC,
// the same clock as process.hrtime).
import { PacketView } from '../packet/view.js';
import type { RejectedFlow } from './layout.js';

export function fillRejectView(view: PacketView, r: RejectedFlow, nowWallUs: number, nowMonoNs: bigint): PacketView {
  for (let i = 0; i < 4; i++) {
    view.src[i] = r.src[i]!;
    view.dst[i] = r.dst[i]!;
  }
  view.ipVersion = r.family;
  view.protocol = r.protocol;
  view.srcPort = r.srcPort;
  view.dstPort = r.dstPort;
  view.direction = r.dir;
  view.tsUs = nowWallUs - Number(nowMonoNs - r.lastNs) / 1000;
  return view;
}
