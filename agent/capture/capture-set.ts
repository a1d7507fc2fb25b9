// One generation's capture: a PacketRing per present source interface, opened paused next to
// the previous generation's and resumed from its last timestamp, so no frame is lost or seen
// twice across a reload. The pcap plane captures through it; an eBPF-plane generation holds
// an empty one (none()): the kernel mirrors and counts the flow logs itself.
import type { Logger } from '../log.js';
import type { Sample } from '../metrics/metrics.js';
import { DIR_IN, DIR_OUT, type Direction } from '../packet/view.js';
import type { MirrorPipeline } from '../pipeline.js';
import { prefilterExpression } from '../rules/prefilter.js';
import { MISSING } from './interface-state.js';
import { HEADER_SNAP_LENGTH, MIRROR_SNAP_LENGTH, PacketRing } from './packet-ring.js';

/** Capture ring per interface: ~210k 64-byte frames (160 bytes each in the ring), 0.2 s at 1 Mpps (docs/capture.md). */
const CAPTURE_BUFFER_BYTES = 32 * 1024 * 1024;
const CAPTURE_TIMEOUT_MS = 10;

export interface CaptureSetOptions {
  pipeline: MirrorPipeline;
  /** interfaceState() of each source interface when the generation was built. */
  states: ReadonlyMap<string, string>;
  /** The running generation's capture: interfaces it reads open paused (see resume). */
  previous: CaptureSet | undefined;
  log: Logger;
}

export class CaptureSet {
  private readonly rings: PacketRing[] = [];
  /** Capture drops already reported to the flow logs, by ifIndex. */
  private readonly dropsSeen: Float64Array;

  private constructor(private readonly pipeline: MirrorPipeline) {
    this.dropsSeen = new Float64Array(pipeline.rules.interfaces.length);
  }

  /** Opens the capture of every present interface; on failure closes what it opened and throws. */
  static open(opts: CaptureSetOptions): CaptureSet {
    const set = new CaptureSet(opts.pipeline);
    try {
      for (const [ifIndex, name] of opts.pipeline.rules.interfaces.entries()) {
        if (opts.states.get(name) === MISSING) {
          opts.log.warn({ interface: name }, 'source interface does not exist; capture starts when it appears');
          continue;
        }
        set.rings.push(set.ring(ifIndex, name, opts.previous?.has(name) ?? false, opts.log));
      }
    } catch (err) {
      set.close();
      throw err;
    }
    return set;
  }

  /** No capture at all (eBPF plane). */
  static none(pipeline: MirrorPipeline): CaptureSet {
    return new CaptureSet(pipeline);
  }

  private ring(ifIndex: number, name: string, paused: boolean, log: Logger): PacketRing {
    const { rules, flow } = this.pipeline;
    // Mirroring needs aggregates whole (their segments are cut from them); flow logs only headers.
    const mirrored = rules.chains[ifIndex * 2]!.length > 0 || rules.chains[ifIndex * 2 + 1]!.length > 0;
    // A flow log needs every IP packet of its interfaces, not only the mirrored ones.
    const allIp = flow?.covers(ifIndex) ?? false;
    const pipeline = this.pipeline;
    return new PacketRing({
      interfaceName: name,
      filterIn: prefilterExpression(rules, name, DIR_IN, { allIp }),
      filterOut: prefilterExpression(rules, name, DIR_OUT, { allIp }),
      snapLength: mirrored ? MIRROR_SNAP_LENGTH : HEADER_SNAP_LENGTH,
      bufferBytes: CAPTURE_BUFFER_BYTES,
      bufferTimeoutMs: CAPTURE_TIMEOUT_MS,
      paused,
      onFrame: (buf, caplen, wireLen, tsUs, direction: Direction, offload) =>
        pipeline.handleFrame(ifIndex, buf, caplen, wireLen, tsUs, direction, offload),
      onWarning: (msg) => log.warn({ interface: name }, msg),
    });
  }

  has(name: string): boolean {
    return this.rings.some((r) => r.interfaceName === name);
  }

  /** Starts delivering, after the last frame `previous` delivered on the same interface. */
  resume(previous: CaptureSet | undefined): void {
    const lastTs = new Map(previous?.rings.map((r) => [r.interfaceName, r.lastTsUs]) ?? []);
    for (const r of this.rings) r.resume(lastTs.get(r.interfaceName) ?? 0);
  }

  /** Reads every frame the rings hold (before retiring: they belong to this generation). */
  async drain(): Promise<void> {
    await Promise.all(this.rings.map((r) => r.drain()));
  }

  /** Frames capture lost since the last call, into the flow logs (SKIPDATA records). */
  noteDrops(): void {
    const flow = this.pipeline.flow;
    if (!flow) return;
    for (const r of this.rings) {
      const i = this.pipeline.rules.interfaceIndex(r.interfaceName);
      const dropped = r.stats().dropped;
      flow.noteDrops(i, dropped - this.dropsSeen[i]!);
      this.dropsSeen[i] = dropped;
    }
  }

  /** mirrorflow_capture_drops_total of this generation's rings. */
  dropSamples(): Sample[] {
    return this.rings.map((r) => [{ interface: r.interfaceName }, r.stats().dropped] as const);
  }

  close(): void {
    for (const r of this.rings) r.close();
  }
}
