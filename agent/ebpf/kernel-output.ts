// A session mirrored by the kernel, seen from the pipeline: send() only tells the flow
// stage the packet is mirrored (the TC program already cloned it); the counters are the
// kernel's, read from the session's slot when metrics or status ask.

import type { MirrorOutput } from '../mirror/output.js';
import { frameLimit } from '../mirror/vxlan.js';
import type { MirrorMaps } from './mirror-maps.js';

export class KernelSessionOutput implements MirrorOutput {
  constructor(
    private readonly maps: MirrorMaps,
    private readonly slot: number,
    private readonly session: number,
    private readonly cut: { family: 4 | 6; packetLength: number },
  ) {}

  /** The path MTU to the target changed: the kernel cuts this session's copies to fit it. */
  setPathMtu(mtu: number): void {
    this.maps.setTruncLen(this.slot, this.session, frameLimit(mtu, this.cut.family, this.cut.packetLength));
  }

  send(): boolean {
    return true;
  }

  get packets(): number {
    return this.maps.sessionStats(this.slot, this.session).packets;
  }

  get bytes(): number {
    return this.maps.sessionStats(this.slot, this.session).bytes;
  }

  get truncated(): number {
    return this.maps.sessionStats(this.slot, this.session).truncated;
  }

  get sendErrors(): number {
    return this.maps.sessionStats(this.slot, this.session).errors;
  }

  get budgetDrops(): number {
    return this.maps.sessionStats(this.slot, this.session).shed;
  }

  /** The kernel never queues a clone: nothing is dropped for back-pressure. */
  readonly dropped = 0;

  async close(): Promise<void> {}
}
