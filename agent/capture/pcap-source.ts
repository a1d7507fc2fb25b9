import { createRequire } from 'node:module';
import { DIR_IN, DIR_OUT, type Direction } from '../packet/view.js';

// node-pcap's PcapSession wrapper allocates an object and emits an event for every packet;
// we drive its native binding directly so the only per-packet work is one copy into a
// Buffer we own and one call into the pipeline.
const require = createRequire(import.meta.url);
const binding = require('pcap/build/Release/pcap_binding.node') as PcapBinding;

interface NativeSession {
  open_live(
    device: string, filter: string, bufferSize: number, snapLength: number, outfile: string,
    packetReady: () => void, monitor: boolean, bufferTimeoutMs: number,
    warning: (msg: string) => void, promiscuous: boolean,
  ): string;
  dispatch(buf: Buffer, header: Buffer): number;
  start_polling(): void;
  close(): void;
  stats(): { ps_recv: number; ps_drop: number; ps_ifdrop: number };
  read_callback?: () => void;
}
interface PcapBinding {
  PcapSession: new () => NativeSession;
  lib_version(): string;
}

/** Receives each captured frame; buf is reused for the next frame once this returns. */
export type FrameHandler = (
  buf: Buffer, caplen: number, wireLen: number, tsUs: number, direction: Direction,
) => void;

export interface PcapSourceOptions {
  interfaceName: string;
  /** The interface's own MAC address (aa:bb:cc:dd:ee:ff): frames it sent are outbound. */
  macAddress: string;
  /** libpcap filters for what may be mirrored or logged in each direction. */
  filterIn: string;
  filterOut: string;
  snapLength: number;
  bufferBytes: number;
  /** How long the kernel may hold a block of packets before waking us (TPACKET_V3). */
  bufferTimeoutMs: number;
  onFrame: FrameHandler;
  onWarning: (msg: string) => void;
  /**
   * Open without delivering: the kernel buffers frames until resume(). A reload opens the
   * new handle paused, drains and closes the old one, then resumes the new one from the
   * old one's last timestamp, so no frame is lost or seen twice.
   */
  paused?: boolean;
}

export interface CaptureStats {
  received: number;
  /** Frames lost before the pipeline saw them: the kernel's drops plus the agent's overload skims. */
  dropped: number;
  ifDropped: number;
}

/**
 * node-pcap's native dispatch reads until the ring is empty, so under sustained overload it
 * would never return and the event loop (timers, send completions, sinks) would starve
 * while memory grows. After this long in one read, the rest of what is waiting is skimmed:
 * read and counted as dropped, not processed, so the ring empties and the loop runs again.
 * Reads at a sustainable rate are long too (the kernel hands over blocks: ~300 ms for 20k
 * frames of mirroring with flow logs here), so the budget is a second, not less.
 */
export const READ_BUDGET_MS = 1000;
/** Frames between two clock reads while checking the budget. */
const BUDGET_CHECK_EVERY = 256;

/**
 * Captures one interface with one libpcap handle. The direction is the Ethernet source:
 * frames that carry the interface's own MAC were transmitted by this host. libpcap's
 * `inbound`/`outbound` keywords would say it from the kernel's packet type, but with
 * TPACKET_V3 they lose frames that the kernel filter let through (seen on veth with
 * libpcap 1.10: whole flows missing), so the agent does not rely on them.
 * Limitation: on a bridge port, frames forwarded for other hosts count as inbound.
 */
export class PcapSource {
  readonly interfaceName: string;
  private readonly native: NativeSession;
  private readonly blockTimeoutMs: number;
  private readonly clock: CaptureClock = { lastTsUs: 0, skipThroughUs: 0, readStartMs: 0, frames: 0, skimming: false, skimmed: 0 };
  private lastStats: CaptureStats = { received: 0, dropped: 0, ifDropped: 0 };
  private closed = false;

  constructor(opts: PcapSourceOptions) {
    this.interfaceName = opts.interfaceName;
    this.blockTimeoutMs = opts.bufferTimeoutMs;
    this.native = openHandle(opts, this.clock);
  }

  /** Capture time of the last frame delivered (µs since the epoch), 0 before the first. */
  get lastTsUs(): number {
    return this.clock.lastTsUs;
  }

  /** Starts delivering a paused source, skipping frames at or before `skipThroughUs`. */
  resume(skipThroughUs: number): void {
    if (this.closed) return;
    this.clock.skipThroughUs = skipThroughUs;
    this.native.start_polling();
    process.nextTick(() => this.native.read_callback?.());
  }

  /**
   * Delivers what the kernel still holds. Frames sit in a TPACKET_V3 block until the block
   * fills or its timeout retires it, so wait past that timeout, then read to the end.
   */
  async drain(): Promise<void> {
    if (this.closed) return;
    await new Promise<void>((resolve) => setTimeout(resolve, 2 * this.blockTimeoutMs + 1));
    this.native.read_callback?.();
  }

  /** Kernel counters since open. */
  stats(): CaptureStats {
    if (!this.closed) {
      try {
        const s = this.native.stats();
        this.lastStats = { received: s.ps_recv, dropped: s.ps_drop + this.clock.skimmed, ifDropped: s.ps_ifdrop };
      } catch {
        // A failed handle keeps its last counters.
      }
    }
    return this.lastStats;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.native.read_callback = undefined;
    this.native.close();
    // close() only breaks the loop; the next dispatch sees it and releases the handle,
    // which also stops the poll watcher that would keep the event loop alive.
    this.native.dispatch(SCRATCH_FRAME, SCRATCH_HEADER);
  }
}

const SCRATCH_FRAME = Buffer.alloc(64);
const SCRATCH_HEADER = Buffer.alloc(16);

// pcap_session.cc copies struct pcap_pkthdr fields to these offsets of the header buffer.
const HDR_TV_SEC = 0;
const HDR_TV_USEC = 4;
const HDR_CAPLEN = 8;
const HDR_LEN = 12;
const ETH_SRC_OFFSET = 6;
/** pcap_dispatch's answer after pcap_breakloop (our own close). */
const PCAP_ERROR_BREAK = -2;
const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i;

/** The kernel-side filter: each direction's expression, told apart by the source MAC. */
export function directionalFilter(macAddress: string, filterIn: string, filterOut: string): string {
  if (!MAC_RE.test(macAddress)) throw new Error(`not a MAC address: ${JSON.stringify(macAddress)}`);
  return `(ether src ${macAddress} and (${filterOut})) or (not ether src ${macAddress} and (${filterIn}))`;
}

/** Per-handle read state shared with the native callbacks. */
interface CaptureClock {
  lastTsUs: number;
  skipThroughUs: number;
  /** When the current read began, frames since the last budget check, and whether it skims. */
  readStartMs: number;
  frames: number;
  skimming: boolean;
  /** Frames counted as dropped because a read ran over READ_BUDGET_MS. */
  skimmed: number;
}

function openHandle(opts: PcapSourceOptions, clock: CaptureClock): NativeSession {
  const native = new binding.PcapSession();
  const frame = Buffer.alloc(opts.snapLength);
  const header = Buffer.alloc(16);
  const onFrame = opts.onFrame;
  const mac = Buffer.from(opts.macAddress.replaceAll(':', ''), 'hex');
  const macHigh = mac.readUInt32BE(0);
  const macLow = mac.readUInt16BE(4);
  const packetReady = (): void => {
    const tsUs = header.readUInt32LE(HDR_TV_SEC) * 1e6 + header.readUInt32LE(HDR_TV_USEC);
    if (tsUs <= clock.skipThroughUs) return;
    clock.lastTsUs = tsUs;
    if (++clock.frames === BUDGET_CHECK_EVERY) {
      clock.frames = 0;
      if (!clock.skimming && performance.now() - clock.readStartMs > READ_BUDGET_MS) clock.skimming = true;
    }
    if (clock.skimming) {
      clock.skimmed++;
      return;
    }
    const caplen = header.readUInt32LE(HDR_CAPLEN);
    const outbound =
      caplen >= ETH_SRC_OFFSET + 6 &&
      frame.readUInt32BE(ETH_SRC_OFFSET) === macHigh &&
      frame.readUInt16BE(ETH_SRC_OFFSET + 4) === macLow;
    onFrame(
      frame,
      caplen < frame.length ? caplen : frame.length,
      header.readUInt32LE(HDR_LEN),
      tsUs,
      outbound ? DIR_OUT : DIR_IN,
    );
  };
  native.open_live(
    opts.interfaceName, directionalFilter(opts.macAddress, opts.filterIn, opts.filterOut), opts.bufferBytes,
    opts.snapLength, '', packetReady, false, opts.bufferTimeoutMs, opts.onWarning, false,
  );
  // pcap_dispatch fails (-1, or -9 "interface not up") when the interface goes down or away.
  // The handle stays open: the kernel re-attaches it when the link comes back up, and the
  // agent's interface watcher replaces it if the interface is re-created. Say so once per outage.
  let failing = false;
  native.read_callback = () => {
    clock.readStartMs = performance.now();
    clock.frames = 0;
    clock.skimming = false;
    const n = native.dispatch(frame, header);
    if (n < 0 && n !== PCAP_ERROR_BREAK) {
      if (!failing) opts.onWarning(`capture read failed (pcap error ${n}): interface down or gone`);
      failing = true;
    } else if (n > 0) {
      failing = false;
    }
  };
  if (opts.paused !== true) {
    native.start_polling();
    // Packets may already be waiting before the poll watcher's first wake-up.
    process.nextTick(native.read_callback);
  }
  return native;
}

export const libpcapVersion = (): string => binding.lib_version();
