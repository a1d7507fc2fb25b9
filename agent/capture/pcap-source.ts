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
  /** libpcap filter for one direction; the source adds `inbound`/`outbound` itself. */
  filterIn: string;
  filterOut: string;
  snapLength: number;
  bufferBytes: number;
  /** How long the kernel may hold a block of packets before waking us (TPACKET_V3). */
  bufferTimeoutMs: number;
  onFrame: FrameHandler;
  onWarning: (msg: string) => void;
}

export interface CaptureStats {
  received: number;
  dropped: number;
  ifDropped: number;
}

/**
 * Captures one interface with two libpcap handles, one per direction. Linux tells a
 * packet socket whether a frame was outgoing; the `inbound`/`outbound` filter keywords
 * test exactly that in the kernel, so the direction is known without guessing from MACs.
 */
export class PcapSource {
  readonly interfaceName: string;
  private readonly handles: { native: NativeSession; direction: Direction }[] = [];
  private closed = false;

  constructor(opts: PcapSourceOptions) {
    this.interfaceName = opts.interfaceName;
    try {
      this.handles.push(openHandle(opts, DIR_IN, opts.filterIn));
      this.handles.push(openHandle(opts, DIR_OUT, opts.filterOut));
    } catch (err) {
      this.close();
      throw err;
    }
  }

  /** Kernel counters summed over both directions since open. */
  stats(): CaptureStats {
    const total = { received: 0, dropped: 0, ifDropped: 0 };
    if (this.closed) return total;
    for (const h of this.handles) {
      const s = h.native.stats();
      total.received += s.ps_recv;
      total.dropped += s.ps_drop;
      total.ifDropped += s.ps_ifdrop;
    }
    return total;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const h of this.handles) {
      h.native.read_callback = undefined;
      h.native.close();
      // close() only breaks the loop; the next dispatch sees it and releases the handle,
      // which also stops the poll watcher that would keep the event loop alive.
      h.native.dispatch(SCRATCH_FRAME, SCRATCH_HEADER);
    }
  }
}

const SCRATCH_FRAME = Buffer.alloc(64);
const SCRATCH_HEADER = Buffer.alloc(16);

// pcap_session.cc copies struct pcap_pkthdr fields to these offsets of the header buffer.
const HDR_TV_SEC = 0;
const HDR_TV_USEC = 4;
const HDR_CAPLEN = 8;
const HDR_LEN = 12;

function openHandle(opts: PcapSourceOptions, direction: Direction, filter: string) {
  const native = new binding.PcapSession();
  const frame = Buffer.alloc(opts.snapLength);
  const header = Buffer.alloc(16);
  const onFrame = opts.onFrame;
  const packetReady = (): void => {
    const caplen = header.readUInt32LE(HDR_CAPLEN);
    onFrame(
      frame,
      caplen < frame.length ? caplen : frame.length,
      header.readUInt32LE(HDR_LEN),
      header.readUInt32LE(HDR_TV_SEC) * 1e6 + header.readUInt32LE(HDR_TV_USEC),
      direction,
    );
  };
  const keyword = direction === DIR_IN ? 'inbound' : 'outbound';
  native.open_live(
    opts.interfaceName, `${keyword} and (${filter})`, opts.bufferBytes, opts.snapLength, '',
    packetReady, false, opts.bufferTimeoutMs, opts.onWarning, false,
  );
  native.read_callback = () => {
    native.dispatch(frame, header);
  };
  native.start_polling();
  // Packets may already be waiting before the poll watcher's first wake-up.
  process.nextTick(native.read_callback);
  return { native, direction };
}

export const libpcapVersion = (): string => binding.lib_version();
