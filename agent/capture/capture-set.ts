// One generation's capture: every present source interface through one AF_PACKET socket
// and ring (shared-capture.ts), opened paused next to the previous generation's and resumed
// after the frames it delivered, so no frame is lost or seen twice across a rebuild. The
// pcap plane captures through it; an eBPF-plane generation holds an empty one (none()): the
// kernel mirrors and counts the flow logs itself.
import type { Logger } from '../log.js';
import type { Sample } from '../metrics/metrics.js';
import { DIR_IN, DIR_OUT, type Direction } from '../packet/view.js';
import type { MirrorPipeline } from '../pipeline.js';
import { prefilterExpression } from '../rules/prefilter.js';
import { HEADER_SNAP_LENGTH, MIRROR_SNAP_LENGTH } from './packet-ring.js';
import { SharedCapture, type CapturedInterface } from './shared-capture.js';

/** The ring: ~210k 64-byte frames (160 bytes each in the ring), 0.2 s at 1 Mpps, whatever the interface count (docs/capture.md). */
const CAPTURE_BUFFER_BYTES = 32 * 1024 * 1024;
const CAPTURE_TIMEOUT_MS = 10;

export interface CaptureSetOptions {
  pipeline: MirrorPipeline;
  /** Kernel ifindex of each source interface present now; a missing one gets no capture until it appears. */
  ifindexes: ReadonlyMap<string, number>;
  /** The running generation's capture: with one, this one opens paused (see resume). */
  previous: CaptureSet | undefined;
  log: Logger;
}

export class CaptureSet {
  /** Capture drops already reported to the flow logs, by ifIndex. */
  private readonly dropsSeen: Float64Array;

  private constructor(private readonly pipeline: MirrorPipeline, private readonly shared?: SharedCapture) {
    this.dropsSeen = new Float64Array(pipeline.rules.interfaces.length);
  }

  /** Opens the capture of every present interface (none: no socket); throws naming the failure. */
  static open(opts: CaptureSetOptions): CaptureSet {
    const { rules, flow } = opts.pipeline;
    const interfaces: CapturedInterface[] = [];
    for (const [index, name] of rules.interfaces.entries()) {
      // A reserved slot of a gone interface captures nothing.
      if (rules.live[index] === 0) continue;
      const ifindex = opts.ifindexes.get(name);
      if (ifindex === undefined) {
        opts.log.warn({ interface: name }, 'source interface does not exist; capture starts when it appears');
        continue;
      }
      // A flow log needs every IP packet of its interfaces, not only the mirrored ones.
      const allIp = flow?.covers(index) ?? false;
      // Mirroring needs aggregates whole (their segments are cut from them); flow logs only headers.
      const mirrored = rules.chains[index * 2]!.length > 0 || rules.chains[index * 2 + 1]!.length > 0;
      interfaces.push({
        ifindex, index,
        filterIn: prefilterExpression(rules, name, DIR_IN, { allIp }),
        filterOut: prefilterExpression(rules, name, DIR_OUT, { allIp }),
        snapLength: mirrored ? MIRROR_SNAP_LENGTH : HEADER_SNAP_LENGTH,
      });
    }
    if (interfaces.length === 0) return new CaptureSet(opts.pipeline);
    return new CaptureSet(opts.pipeline, openShared(opts.pipeline, interfaces, opts.previous?.shared !== undefined, opts.log));
  }

  /** No capture at all (eBPF plane). */
  static none(pipeline: MirrorPipeline): CaptureSet {
    return new CaptureSet(pipeline);
  }

  /** Starts delivering, after the frames `previous` delivered on the interfaces it covered. */
  resume(previous: CaptureSet | undefined): void {
    this.shared?.resume(previous?.shared);
  }

  /** Reads every frame the ring holds (before retiring: they belong to this generation). */
  async drain(): Promise<void> {
    await this.shared?.drain();
  }

  /** Frames capture lost since the last call, into the flow logs (SKIPDATA records). */
  noteDrops(): void {
    const flow = this.pipeline.flow;
    if (!flow || !this.shared) return;
    const dropped = this.shared.dropsByIndex();
    for (const { index } of this.shared.interfaces) {
      flow.noteDrops(index, dropped[index]! - this.dropsSeen[index]!);
      this.dropsSeen[index] = dropped[index]!;
    }
  }

  /** mirrorflow_capture_drops_total of this generation's capture, by interface. */
  dropSamples(): Sample[] {
    if (!this.shared) return [];
    const dropped = this.shared.dropsByIndex();
    const names = this.pipeline.rules.interfaces;
    return this.shared.interfaces.map(({ index }) => [{ interface: names[index]! }, dropped[index]!] as const);
  }

  /** Releases the ring; its last time stamp stays for the next generation's resume(). */
  close(): void {
    this.shared?.close();
  }
}

/**
 * The socket and ring. Its own function so that the frame handler's closure holds the
 * pipeline and the logger only: a closure over CaptureSet.open's options would hold the
 * previous generation's capture, and through it every generation before (a leak of one
 * ring's bookkeeping and pipeline per reload, found by soak.e2e's RSS check).
 */
function openShared(pipeline: MirrorPipeline, interfaces: CapturedInterface[], paused: boolean, log: Logger): SharedCapture {
  return new SharedCapture({
    interfaces,
    maxSnapLength: Math.max(...interfaces.map((c) => c.snapLength)),
    bufferBytes: CAPTURE_BUFFER_BYTES,
    bufferTimeoutMs: CAPTURE_TIMEOUT_MS,
    paused,
    onFrame: (index, buf, caplen, wireLen, tsUs, direction: Direction, offload) =>
      pipeline.handleFrame(index, buf, caplen, wireLen, tsUs, direction, offload),
    onWarning: (msg) => log.warn({ interfaces: interfaces.length }, msg),
  });
}
