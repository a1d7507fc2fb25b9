// The pcap plane's capture of every source interface through one AF_PACKET socket and one
// TPACKET_V3 ring (docs/capture.md), instead of a ring per interface: the socket is bound to
// no interface (ifindex 0), its classic BPF filter picks the covered interfaces by the
// frame's ifindex and cuts each to its own snap length (bpf-filter.ts interfaceDispatch),
// and each frame's sockaddr_ll names its interface, mapped here to the rules' interface
// index through a typed array (O(1), no allocation per frame).
//
// A generation's capture covers a fixed set of interfaces; when interfaces come or go the
// agent opens the next generation's (paused, then resume()). The kernel's drop counter is
// the socket's; drops are split over the interfaces in proportion to the frames each
// delivered since the last reading (dropsByIndex).
import type { OffloadInfo } from '../packet/offload.js';
import type { Direction } from '../packet/view.js';
import { directionalProgram, interfaceDispatch, type InterfaceFilter } from './bpf-filter.js';
import { PacketRing, type CaptureStats } from './packet-ring.js';

/** One interface the capture covers. */
export interface CapturedInterface {
  /** The kernel's ifindex now. */
  ifindex: number;
  /** The rules' interface index the pipeline gets for its frames. */
  index: number;
  /** libpcap expressions per direction (agent/rules/prefilter.ts). */
  filterIn: string;
  filterOut: string;
  /** MIRROR_SNAP_LENGTH or HEADER_SNAP_LENGTH: what the filter cuts this interface's frames to. */
  snapLength: number;
}

/** Receives each frame with the rules' interface index; buf is reused once this returns. */
export type IndexedFrameHandler = (
  index: number, buf: Buffer, caplen: number, wireLen: number, tsUs: number, direction: Direction, offload: OffloadInfo,
) => void;

export interface SharedCaptureOptions {
  interfaces: readonly CapturedInterface[];
  /** The ring's frame room: the largest snap length any interface may get while it runs. */
  maxSnapLength: number;
  bufferBytes: number;
  bufferTimeoutMs: number;
  onFrame: IndexedFrameHandler;
  onWarning: (msg: string) => void;
  paused?: boolean;
}

const UNMAPPED = -1;

export class SharedCapture {
  private readonly ring: PacketRing;
  /** Rules' interface index by kernel ifindex (UNMAPPED for interfaces not covered). */
  private indexOf = new Int32Array(0);
  /** Frames delivered per rules' index since the last drop reading, and the drops given to each so far. */
  private delivered = new Float64Array(0);
  private dropped = new Float64Array(0);
  private droppedSeen = 0;
  /** By rules' index: frames at or before this time (µs) were delivered by the previous capture (see resume). */
  private skipUs = new Float64Array(0);
  /** Compiled directional programs by expression and snap: interfaces with the same filter share one. */
  private programs = new Map<string, Buffer>();
  private readonly covered: readonly CapturedInterface[];

  constructor(private readonly opts: SharedCaptureOptions) {
    this.map(opts.interfaces);
    const handler = opts.onFrame;
    this.ring = new PacketRing({
      filter: this.program(opts.interfaces),
      snapLength: opts.maxSnapLength,
      bufferBytes: opts.bufferBytes,
      bufferTimeoutMs: opts.bufferTimeoutMs,
      paused: opts.paused,
      onWarning: opts.onWarning,
      onFrame: (buf, caplen, wireLen, tsUs, direction, offload) => {
        const ifindex = this.ring.frameIfIndex;
        const index = ifindex < this.indexOf.length ? this.indexOf[ifindex]! : UNMAPPED;
        // Only covered interfaces pass the kernel filter; the check costs one compare and keeps an index in range.
        if (index === UNMAPPED || tsUs <= this.skipUs[index]!) return;
        this.delivered[index]! += 1;
        handler(index, buf, caplen, wireLen, tsUs, direction, offload);
      },
    });
    this.covered = opts.interfaces;
  }

  /** Capture time of the last frame delivered (µs since the epoch), 0 before the first. */
  get lastTsUs(): number {
    return this.ring.lastTsUs;
  }

  /** The interfaces covered now. */
  get interfaces(): readonly CapturedInterface[] {
    return this.covered;
  }

  /** Ring geometry, for the bench and status: bytes of kernel memory it pins. */
  get ringBytes(): number {
    return this.ring.blockBytes * this.ring.blockCount;
  }

  /**
   * Starts delivering a capture opened paused. Interfaces `previous` covered skip the frames
   * it delivered (at or before its last time stamp): each frame once across the handover.
   * Interfaces new in this capture skip nothing (the previous one never had their frames).
   */
  resume(previous: SharedCapture | undefined): void {
    if (previous !== undefined) {
      const before = new Set(previous.covered.map((c) => c.ifindex));
      for (const c of this.covered) if (before.has(c.ifindex)) this.skipUs[c.index] = previous.lastTsUs;
    }
    this.ring.resume();
  }

  /** Delivers what the kernel holds now (see PacketRing.drain). */
  drain(): Promise<void> {
    return this.ring.drain();
  }

  /** Socket counters (the kernel's; see PacketRing.stats). */
  stats(): CaptureStats {
    return this.ring.stats();
  }

  /**
   * Cumulative drops per rules' index: each new kernel drop goes to the interfaces in
   * proportion to the frames they delivered since the last call (largest remainder, so the
   * parts add up to the kernel's count exactly); with none delivered, evenly over the covered
   * ones. An estimate per interface, exact in total: one ring has one drop counter.
   */
  dropsByIndex(): Float64Array {
    const total = this.ring.stats().dropped;
    const fresh = total - this.droppedSeen;
    this.droppedSeen = total;
    if (fresh > 0) splitDrops(fresh, this.delivered, this.covered.map((c) => c.index), this.dropped);
    this.delivered.fill(0);
    return this.dropped;
  }

  close(): void {
    this.ring.close();
  }

  private map(interfaces: readonly CapturedInterface[]): void {
    const maxIfindex = interfaces.reduce((m, c) => Math.max(m, c.ifindex), 0);
    const maxIndex = interfaces.reduce((m, c) => Math.max(m, c.index), -1);
    const indexOf = new Int32Array(maxIfindex + 1).fill(UNMAPPED);
    for (const c of interfaces) indexOf[c.ifindex] = c.index;
    this.indexOf = indexOf;
    if (maxIndex >= this.delivered.length) {
      this.delivered = grow(this.delivered, maxIndex + 1);
      this.dropped = grow(this.dropped, maxIndex + 1);
      this.skipUs = grow(this.skipUs, maxIndex + 1);
    }
  }

  /** The dispatch program; directional programs are compiled once per distinct filter and kept while in use. */
  private program(interfaces: readonly CapturedInterface[]): Buffer {
    const used = new Map<string, Buffer>();
    const filters: InterfaceFilter[] = interfaces.map((c) => {
      const key = `${c.snapLength}\n${c.filterIn}\n${c.filterOut}`;
      let program = used.get(key) ?? this.programs.get(key);
      program ??= directionalProgram(c.filterIn, c.filterOut, c.snapLength);
      used.set(key, program);
      return { ifindex: c.ifindex, program };
    });
    this.programs = used;
    return interfaceDispatch(filters);
  }
}

function grow(a: Float64Array<ArrayBuffer>, length: number): Float64Array<ArrayBuffer> {
  const b = new Float64Array(Math.max(length, a.length * 2));
  b.set(a);
  return b;
}

/** Adds `drops` to `into` over `indexes`, weighted by `weights` (largest remainder), evenly when all weigh 0. */
export function splitDrops(drops: number, weights: Float64Array, indexes: readonly number[], into: Float64Array): void {
  if (indexes.length === 0) return;
  let sum = 0;
  for (const i of indexes) sum += weights[i]!;
  const share = (i: number) => (sum > 0 ? (drops * weights[i]!) / sum : drops / indexes.length);
  let given = 0;
  const remainders = indexes.map((i) => {
    const whole = Math.floor(share(i));
    into[i]! += whole;
    given += whole;
    return { i, rest: share(i) - whole };
  });
  remainders.sort((a, b) => b.rest - a.rest || a.i - b.i);
  for (let k = 0; k < drops - given; k++) into[remainders[k % remainders.length]!.i]! += 1;
}
