// A session mirrored by the kernel, seen from the pipeline: send() only tells the flow
// stage the packet is mirrored (the TC program already cloned it); the counters are the
// kernel's, read from the session's slot when metrics or status ask.

import type { MirrorOutput, TargetCounters } from '../mirror/output.js';
import { PoolHealth } from '../mirror/health.js';
import type { Logger } from '../log.js';
import type { CompiledSession } from '../rules/compile.js';
import { frameLimit } from '../mirror/vxlan.js';
import type { MirrorMaps } from './mirror-maps.js';

export class KernelSessionOutput implements MirrorOutput {
  constructor(
    protected readonly maps: MirrorMaps,
    protected readonly slot: number,
    protected readonly session: number,
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

/**
 * A session with a sensor pool mirrored by the kernel: mf_tunnel picks the member per copy
 * from the healthy mask this output keeps in mf_pools as its health checks change.
 */
export class KernelPoolOutput extends KernelSessionOutput {
  constructor(
    maps: MirrorMaps, slot: number, session: number, cut: { family: 4 | 6; packetLength: number },
    private readonly members: readonly string[], private readonly port: number, readonly health: PoolHealth,
  ) {
    super(maps, slot, session, cut);
  }

  /** The health mask changed; before the slot is installed, install() reads `health.healthy` itself. */
  applyHealth(healthy: number): void {
    this.maps.setPoolHealth(this.slot, this.session, healthy);
  }

  /** For install(): the mask to write with the slot. */
  get healthy(): number {
    return this.health.healthy;
  }

  targets(): TargetCounters[] {
    return this.members.map((address, i) => ({
      target: `${address}:${this.port}`,
      packets: this.maps.memberStats(this.slot, this.session, i).packets,
      healthy: this.health.isHealthy(i),
    }));
  }

  override async close(): Promise<void> {
    this.health.stop();
  }
}

/** The kernel output of a pool session, its health checks started and wired to mf_pools. */
export function openKernelPool(
  maps: MirrorMaps, slot: number, s: CompiledSession, log: Logger,
): KernelPoolOutput {
  let output: KernelPoolOutput | undefined;
  const health = new PoolHealth({
    session: s.id, members: s.members, port: s.targetPort, family: s.targetFamily, check: s.healthCheck, log,
    onChange: (mask) => output?.applyHealth(mask),
  });
  output = new KernelPoolOutput(maps, slot, s.index, { family: s.targetFamily, packetLength: s.packetLength }, s.members, s.targetPort, health);
  health.start();
  return output;
}
