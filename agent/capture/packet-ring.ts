// Live capture of one interface over our own AF_PACKET socket with a TPACKET_V3 receive ring
// (docs/capture.md). What libpcap could not give us:
// - PACKET_VNET_HDR: the kernel writes a virtio_net_hdr before each frame, so the agent
//   knows a frame is a TSO/GSO/GRO aggregate, its segment size and whether its transport
//   checksum is only the pseudo-header sum (OffloadInfo, agent/packet/offload.ts).
// - the packet type of each frame (sockaddr_ll.sll_pkttype): the direction, for free.
// - a close() that releases the ring at once (munmap + close), whatever state reads are in.
// Layouts are Linux's uapi (include/uapi/linux/if_packet.h), identical on x86-64 and aarch64.
import koffi from 'koffi';
import { NativeMemory } from '../native-memory.js';
import { SOCK_CLOEXEC, SOCK_NONBLOCK, SOL_SOCKET, errnoText, int32, libc, socketCalls } from '../libc.js';
import { OffloadInfo } from '../packet/offload.js';
import { DIR_IN, DIR_OUT, type Direction } from '../packet/view.js';
import { BPF_INSN_LEN, directionalProgram } from './bpf-filter.js';
import { ringWaker, type Wakeable } from './ring-waker.js';
import { ErrorCode, MirrorflowError } from '../errors.js';

const sys = {
  ...socketCalls,
  getsockopt: libc.func('int getsockopt(int fd, int level, int name, void *value, void *len)'),
  mmap: libc.func('void *mmap(void *addr, size_t len, int prot, int flags, int fd, int64_t offset)'),
  munmap: libc.func('int munmap(void *addr, size_t len)'),
  ifNameToIndex: libc.func('unsigned int if_nametoindex(const char *name)'),
};

const AF_PACKET = 17;
const SOCK_RAW = 3;
const ETH_P_ALL = 0x0003;
const SO_ERROR = 4;
const SO_ATTACH_FILTER = 26;
const SOL_PACKET = 263;
const PACKET_RX_RING = 5;
const PACKET_STATISTICS = 6;
const PACKET_VERSION = 10;
const PACKET_VNET_HDR = 15;
const TPACKET_V3 = 2;
const PROT_READ = 1;
const PROT_WRITE = 2;
const MAP_SHARED = 1;
const MAP_FAILED = 2n ** 64n - 1n;
/** sll_pkttype of a frame this host transmitted. */
const PACKET_OUTGOING = 4;

const TP_STATUS_KERNEL = 0;
const TP_STATUS_USER = 1;
const TP_STATUS_VLAN_VALID = 1 << 4;
const TP_STATUS_VLAN_TPID_VALID = 1 << 6;
const ETHERTYPE_VLAN = 0x8100;

// struct tpacket_block_desc: version, offset_to_priv, then struct tpacket_hdr_v1.
const BLOCK_STATUS = 8;
const BLOCK_NUM_PKTS = 12;
const BLOCK_FIRST_PKT = 16;
/** TPACKET_ALIGN(sizeof(struct tpacket_block_desc)): the kernel's per-block header. */
const BLOCK_HEADER_LEN = 48;
// struct tpacket3_hdr.
const TP_NEXT_OFFSET = 0;
const TP_SEC = 4;
const TP_NSEC = 8;
const TP_SNAPLEN = 12;
const TP_LEN = 16;
const TP_STATUS = 20;
const TP_MAC = 24;
const TP_VLAN_TCI = 32;
const TP_VLAN_TPID = 36;
/** TPACKET_ALIGN(sizeof(struct tpacket3_hdr)): where the struct sockaddr_ll starts. */
const TP_SLL = 48;
const SLL_IFINDEX = 4;
const SLL_PKTTYPE = 10;
const SOCKADDR_LL_LEN = 20;
/** sizeof(struct tpacket_req3), struct tpacket_stats_v3, struct sock_fprog. */
const TPACKET_REQ3_LEN = 28;
const TPACKET_STATS_V3_LEN = 12;
const SOCK_FPROG_LEN = 16;
/** sizeof(struct virtio_net_hdr): PACKET_VNET_HDR puts it right before the MAC header. */
const VNET_HDR_LEN = 10;
const VLAN_TAG_LEN = 4;
const MAC_ADDRS_LEN = 12;

/**
 * Bytes a frame takes in a block besides its data: tpacket3_hdr, sockaddr_ll, the vnet
 * header and alignment (tpacket_rcv: macoff = TPACKET_ALIGN(68 + maclen) + 10 - maclen = 92
 * for Ethernet, then the next frame starts on a 16-byte boundary).
 */
const FRAME_OVERHEAD = 128;
const MIN_BLOCK_BYTES = 128 * 1024;
/** The kernel needs at least a few blocks to rotate through; below that, retire latency dominates. */
const MIN_BLOCKS = 8;
/** tp_frame_size: unused by TPACKET_V3 reads but validated by the kernel (a divisor of the block size). */
const REQ_FRAME_SIZE = 2048;

/**
 * Snap length for an interface some session mirrors: whole aggregates. 64 KiB is the most a
 * device builds or merges unless BIG TCP was turned on for it (gso_max_size/gro_max_size
 * above 65,536, an explicit `ip link set` setting); larger aggregates are captured cut here
 * (caplen < wireLen). Bigger would mean bigger blocks, so fewer of them, and a paused ring
 * (a reload) would fill sooner at low rates (docs/capture.md).
 */
export const MIRROR_SNAP_LENGTH = 65_536 + 64;
/** Snap length for an interface only flow logs need: every header the decoder reads (VLANs, IPv6 extensions, TCP options). */
export const HEADER_SNAP_LENGTH = 256;

/**
 * Only if the wake-up thread (ring-waker.ts) fails: how often the rings are looked at
 * instead. The kernel makes a block visible when it fills or after bufferTimeoutMs, so this
 * adds at most 5 ms to that latency, at 2-4 % of a core for an idle agent (docs/capture.md).
 */
export const POLL_INTERVAL_MS = 5;
/**
 * Longest stretch of frame processing before the event loop gets a turn (timers, send
 * completions, sink writes). The read then continues where it stopped on the next turn:
 * no frame is skipped; if the agent is slower than the traffic, the ring fills and the
 * kernel drops (and counts) new frames, so memory stays bounded and loss is counted.
 */
export const READ_SLICE_MS = 20;
/** Frames between two clock reads while checking the slice. */
const SLICE_CHECK_EVERY = 64;

/**
 * Receives each captured frame; buf is reused for the next frame once this returns.
 * `offload` is the kernel's virtio_net_hdr for this frame (refilled per frame, never keep it).
 */
export type FrameHandler = (
  buf: Buffer, caplen: number, wireLen: number, tsUs: number, direction: Direction, offload: OffloadInfo,
) => void;

/** One interface, with libpcap filter expressions for what may be mirrored or logged in each direction ('' = all). */
interface OneInterface {
  interfaceName: string;
  filterIn: string;
  filterOut: string;
}

/**
 * Every interface of the namespace (bound to ifindex 0): `filter` is a whole classic BPF
 * program, which picks the interfaces (SKF_AD_IFINDEX, bpf-filter.ts interfaceDispatch);
 * frameIfIndex tells each frame's interface.
 */
interface AllInterfaces {
  interfaceName?: undefined;
  filter: Buffer;
}

export type PacketRingOptions = (OneInterface | AllInterfaces) & {
  /** Bytes of each frame the kernel copies (MIRROR_SNAP_LENGTH or HEADER_SNAP_LENGTH). */
  snapLength: number;
  /** Ring size; rounded down to whole blocks. */
  bufferBytes: number;
  /** How long the kernel may hold a partly filled block before handing it over (tp_retire_blk_tov). */
  bufferTimeoutMs: number;
  onFrame: FrameHandler;
  onWarning: (msg: string) => void;
  /**
   * Open without delivering: the kernel fills the ring until resume(). A reload opens the
   * new ring paused, drains and closes the old one, then resumes the new one; SharedCapture
   * skips, per interface, the frames up to the old one's last timestamp, so no frame is
   * lost or seen twice.
   */
  paused?: boolean;
};

/** PacketRing.interfaceName of a ring bound to every interface. */
export const ALL_INTERFACES_LABEL = '*';

export interface CaptureStats {
  /** Frames the filter accepted, including those dropped (the kernel's tp_packets). */
  received: number;
  /** Frames lost before the pipeline saw them: the ring was full (tp_drops). */
  dropped: number;
  /** Times the kernel found the next block still ours and stopped filling (tp_freeze_q_cnt). */
  queueFreezes: number;
}

/**
 * Block size for a snap length: one whole frame at least (the kernel cuts a frame to what a
 * block holds), a power of two (the kernel wants pages), and small, because at low rates
 * every block the timeout retires is used up however little it holds.
 */
export function ringBlockBytes(snapLength: number): number {
  let size = MIN_BLOCK_BYTES;
  while (size < snapLength + FRAME_OVERHEAD) size *= 2;
  return size;
}

/** Rings due a look on the next poll tick (open, not paused, and the waker failed). */
const polled = new Set<PacketRing>();
let pollTimer: NodeJS.Timeout | undefined;

function pollAll(): void {
  for (const ring of polled) ring.read(READ_SLICE_MS);
}

function startPolling(ring: PacketRing): void {
  polled.add(ring);
  pollTimer ??= setInterval(pollAll, POLL_INTERVAL_MS);
}

function stopPolling(ring: PacketRing): void {
  polled.delete(ring);
  if (polled.size === 0 && pollTimer !== undefined) {
    clearInterval(pollTimer);
    pollTimer = undefined;
  }
}

/** Captures one interface (both directions) into a TPACKET_V3 ring with vnet headers. */
export class PacketRing implements Wakeable {
  readonly interfaceName: string;
  /** The kernel's index of the interface, as the ring reports it per frame (0: every interface). */
  readonly ifIndex: number;
  readonly blockBytes: number;
  readonly blockCount: number;
  private readonly fd: number;
  private readonly mapping: unknown;
  private readonly ring: Buffer;
  /** The same memory as 32-bit words, for the atomic block status handshake with the kernel. */
  private readonly words: Int32Array;
  private readonly frame: Buffer;
  private readonly offload = new OffloadInfo();
  private readonly onFrame: FrameHandler;
  private readonly onWarning: (msg: string) => void;
  /** Block being read, its next frame's ring offset and frames left in it (0: not opened yet). */
  private block = 0;
  private frameAt = 0;
  private framesLeft = 0;
  private lastTs = 0;
  private frameIf = 0;
  /** Blocks handed back to the kernel since open. */
  private released = 0;
  private readonly blockTimeoutMs: number;
  private continuation: NodeJS.Immediate | undefined;
  private readonly counters: CaptureStats = { received: 0, dropped: 0, queueFreezes: 0 };
  /** getsockopt's value and length for PACKET_STATISTICS and SO_ERROR. */
  private readonly optValue = Buffer.alloc(TPACKET_STATS_V3_LEN);
  private readonly optLen = Buffer.alloc(4);
  /** Slot in the wake-up thread's epoll set; -1 when not watched (paused, closed, or polled). */
  private slot = -1;
  private closed = false;

  constructor(opts: PacketRingOptions) {
    this.interfaceName = opts.interfaceName ?? ALL_INTERFACES_LABEL;
    this.onFrame = opts.onFrame;
    this.onWarning = opts.onWarning;
    this.blockTimeoutMs = opts.bufferTimeoutMs;
    // ifindex 0 in bind(): frames of every interface, each with its sll_ifindex.
    const ifIndex = opts.interfaceName === undefined ? 0 : (sys.ifNameToIndex(opts.interfaceName) as number);
    if (ifIndex === 0 && opts.interfaceName !== undefined) {
      throw new MirrorflowError(ErrorCode.CAPTURE_OPEN, `capture ${opts.interfaceName}: no such interface (${errnoText(koffi.errno())})`);
    }
    this.ifIndex = ifIndex;
    this.blockBytes = ringBlockBytes(opts.snapLength);
    this.blockCount = Math.max(MIN_BLOCKS, Math.floor(opts.bufferBytes / this.blockBytes));
    // Protocol 0: the socket sees nothing until bind(), so no frame of another interface
    // or from before the filter lands in the ring.
    const fd = sys.socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, 0) as number;
    if (fd < 0) throw new MirrorflowError(ErrorCode.CAPTURE_OPEN, `capture ${opts.interfaceName}: AF_PACKET socket: ${errnoText(koffi.errno())}`);
    this.fd = fd;
    let mapping: unknown;
    try {
      // The vnet header and the version must be set before the ring exists (EBUSY after).
      this.setOption(SOL_PACKET, PACKET_VNET_HDR, int32(1), 'PACKET_VNET_HDR');
      this.setOption(SOL_PACKET, PACKET_VERSION, int32(TPACKET_V3), 'PACKET_VERSION');
      this.attachFilter(opts.interfaceName === undefined ? opts.filter : directionalProgram(opts.filterIn, opts.filterOut, opts.snapLength));
      const req = Buffer.alloc(TPACKET_REQ3_LEN);
      req.writeUInt32LE(this.blockBytes, 0);
      req.writeUInt32LE(this.blockCount, 4);
      req.writeUInt32LE(REQ_FRAME_SIZE, 8);
      req.writeUInt32LE((this.blockBytes / REQ_FRAME_SIZE) * this.blockCount, 12);
      req.writeUInt32LE(Math.max(1, Math.round(opts.bufferTimeoutMs)), 16);
      this.setOption(SOL_PACKET, PACKET_RX_RING, req, 'PACKET_RX_RING');
      const bytes = this.blockBytes * this.blockCount;
      mapping = sys.mmap(null, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
      if (BigInt(koffi.address(mapping) as bigint) === MAP_FAILED) {
        mapping = undefined;
        throw new MirrorflowError(ErrorCode.CAPTURE_OPEN, `capture ${opts.interfaceName}: mmap of the ${bytes >> 20} MiB ring: ${errnoText(koffi.errno())}`);
      }
      const memory = koffi.view(mapping, bytes) as ArrayBuffer;
      this.ring = Buffer.from(memory);
      this.words = new Int32Array(memory);
      const sll = Buffer.alloc(SOCKADDR_LL_LEN);
      sll.writeUInt16LE(AF_PACKET, 0);
      sll.writeUInt16BE(ETH_P_ALL, 2);
      sll.writeInt32LE(ifIndex, SLL_IFINDEX);
      if (sys.bind(fd, sll, SOCKADDR_LL_LEN) !== 0) {
        throw new MirrorflowError(ErrorCode.CAPTURE_OPEN, `capture ${opts.interfaceName}: bind to ifindex ${ifIndex}: ${errnoText(koffi.errno())}`);
      }
    } catch (err) {
      if (mapping !== undefined) sys.munmap(mapping, this.blockBytes * this.blockCount);
      sys.close(fd);
      throw err;
    }
    this.mapping = mapping;
    // Room for a kernel-stripped VLAN tag put back.
    this.frame = Buffer.alloc(opts.snapLength + VLAN_TAG_LEN);
    if (opts.paused !== true) this.startWaking();
  }

  /** Capture time of the last frame delivered (µs since the epoch), 0 before the first. */
  get lastTsUs(): number {
    return this.lastTs;
  }

  /** Kernel index of the interface of the frame being delivered (read it in onFrame). */
  get frameIfIndex(): number {
    return this.frameIf;
  }

  /** Starts delivering a paused ring (the frames a handover skips are SharedCapture's to skip, per interface). */
  resume(): void {
    if (this.closed) return;
    this.startWaking();
  }

  /** The socket is readable (a block is ready) or reports an error. */
  wake(): void {
    this.checkSocketError();
    this.read(READ_SLICE_MS);
  }

  wakerFailed(reason: string): void {
    this.slot = -1;
    this.onWarning(`capture wake-up thread failed (${reason}); polling every ${POLL_INTERVAL_MS} ms instead`);
    startPolling(this);
  }

  /**
   * Delivers what the kernel holds now. Frames sit in a block until it fills or its timeout
   * retires it, so wait past that timeout, then read, yielding between slices, at most one
   * ring's worth of blocks (under overload the kernel refills it faster than it empties;
   * what follows is in the next generation's ring, which was open before this drain).
   */
  async drain(): Promise<void> {
    if (this.closed) return;
    await new Promise<void>((resolve) => setTimeout(resolve, 2 * this.blockTimeoutMs + 1));
    const enough = this.released + this.blockCount;
    while (this.read(READ_SLICE_MS) && this.released < enough) {
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
  }

  /**
   * Reads ready blocks for up to `sliceMs`. Returns true when it stopped with frames still
   * waiting (it then continues on the next event-loop turn by itself).
   */
  read(sliceMs: number): boolean {
    if (this.closed) return false;
    if (this.continuation !== undefined) {
      clearImmediate(this.continuation);
      this.continuation = undefined;
    }
    const ring = this.ring;
    const start = performance.now();
    let checks = 0;
    for (;;) {
      if (this.framesLeft === 0 && !this.openBlock()) {
        // Caught up with the kernel: the next retired block may wake us again.
        if (this.slot >= 0) ringWaker.rearm(this.fd, this.slot);
        return false;
      }
      const f = this.frameAt;
      this.deliver(f);
      if (this.closed) return false;
      if (--this.framesLeft === 0) this.releaseBlock();
      else this.frameAt = f + ring.readUInt32LE(f + TP_NEXT_OFFSET);
      if (++checks === SLICE_CHECK_EVERY) {
        checks = 0;
        if (performance.now() - start > sliceMs) {
          this.continuation = setImmediate(() => this.read(READ_SLICE_MS));
          return true;
        }
      }
    }
  }

  /** Kernel counters since open (the kernel resets them on each read; they are summed here). */
  stats(): CaptureStats {
    if (this.closed) return this.counters;
    const buf = this.optValue;
    this.optLen.writeUInt32LE(TPACKET_STATS_V3_LEN, 0);
    if (sys.getsockopt(this.fd, SOL_PACKET, PACKET_STATISTICS, buf, this.optLen) === 0) {
      this.counters.received += buf.readUInt32LE(0);
      this.counters.dropped += buf.readUInt32LE(4);
      this.counters.queueFreezes += buf.readUInt32LE(8);
    }
    this.checkSocketError();
    return this.counters;
  }

  /** Releases the socket and the ring now; nothing is read afterwards. */
  close(): void {
    if (this.closed) return;
    this.stats();
    this.closed = true;
    if (this.slot >= 0) ringWaker.unwatch(this.fd, this.slot);
    this.slot = -1;
    stopPolling(this);
    if (this.continuation !== undefined) clearImmediate(this.continuation);
    this.continuation = undefined;
    sys.munmap(this.mapping, this.blockBytes * this.blockCount);
    sys.close(this.fd);
  }

  private startWaking(): void {
    if (this.closed || this.slot >= 0) return;
    this.slot = ringWaker.watch(this.fd, this);
    if (this.slot < 0) startPolling(this);
  }

  /** Takes the next block when the kernel has handed it over; false when it still fills it. */
  private openBlock(): boolean {
    const base = this.block * this.blockBytes;
    if ((Atomics.load(this.words, (base + BLOCK_STATUS) >> 2) & TP_STATUS_USER) === 0) return false;
    this.framesLeft = this.ring.readUInt32LE(base + BLOCK_NUM_PKTS);
    this.frameAt = base + this.ring.readUInt32LE(base + BLOCK_FIRST_PKT);
    if (this.framesLeft === 0) {
      this.releaseBlock();
      return this.openBlock();
    }
    return true;
  }

  /** Hands the current block back to the kernel and moves to the next. */
  private releaseBlock(): void {
    Atomics.store(this.words, (this.block * this.blockBytes + BLOCK_STATUS) >> 2, TP_STATUS_KERNEL);
    this.block = this.block + 1 === this.blockCount ? 0 : this.block + 1;
    this.released++;
  }

  /** Passes the frame whose tpacket3_hdr is at ring offset f to onFrame. */
  private deliver(f: number): void {
    const ring = this.ring;
    const tsUs = ring.readUInt32LE(f + TP_SEC) * 1e6 + Math.floor(ring.readUInt32LE(f + TP_NSEC) / 1000);
    this.lastTs = tsUs;
    const mac = f + ring.readUInt16LE(f + TP_MAC);
    let caplen = ring.readUInt32LE(f + TP_SNAPLEN);
    let wireLen = ring.readUInt32LE(f + TP_LEN);
    const status = ring.readUInt32LE(f + TP_STATUS);
    const direction = ring[f + TP_SLL + SLL_PKTTYPE] === PACKET_OUTGOING ? DIR_OUT : DIR_IN;
    this.frameIf = ring.readInt32LE(f + TP_SLL + SLL_IFINDEX);
    const offload = this.offload;
    offload.readVnetHeader(ring, mac - VNET_HDR_LEN);
    const frame = this.frame;
    if ((status & TP_STATUS_VLAN_VALID) === 0) {
      if (caplen > frame.length) caplen = frame.length;
      ring.copy(frame, 0, mac, mac + caplen);
    } else {
      // The kernel (or the NIC) took the tag out of the data; put it back where the wire has it.
      if (caplen > frame.length - VLAN_TAG_LEN) caplen = frame.length - VLAN_TAG_LEN;
      const head = caplen < MAC_ADDRS_LEN ? caplen : MAC_ADDRS_LEN;
      ring.copy(frame, 0, mac, mac + head);
      frame.writeUInt16BE((status & TP_STATUS_VLAN_TPID_VALID) !== 0 ? ring.readUInt16LE(f + TP_VLAN_TPID) : ETHERTYPE_VLAN, MAC_ADDRS_LEN);
      frame.writeUInt16BE(ring.readUInt32LE(f + TP_VLAN_TCI) & 0xffff, MAC_ADDRS_LEN + 2);
      ring.copy(frame, MAC_ADDRS_LEN + VLAN_TAG_LEN, mac + head, mac + caplen);
      caplen += VLAN_TAG_LEN;
      wireLen += VLAN_TAG_LEN;
      if (offload.needsCsum) offload.csumStart += VLAN_TAG_LEN;
    }
    this.onFrame(frame, caplen, wireLen, tsUs, direction, offload);
  }

  /** Attaches the classic BPF program; its accept value is the snap length. */
  private attachFilter(insns: Buffer): void {
    const code = new NativeMemory(insns.length);
    try {
      insns.copy(code.view);
      const fprog = Buffer.alloc(SOCK_FPROG_LEN);
      fprog.writeUInt16LE(insns.length / BPF_INSN_LEN, 0);
      fprog.writeUIntLE(code.address, 8, 6);
      this.setOption(SOL_SOCKET, SO_ATTACH_FILTER, fprog, 'SO_ATTACH_FILTER');
    } finally {
      code.release();
    }
  }

  private setOption(level: number, name: number, value: Buffer, label: string): void {
    if (sys.setsockopt(this.fd, level, name, value, value.length) !== 0) {
      throw new MirrorflowError(ErrorCode.CAPTURE_OPEN, `capture ${this.interfaceName}: ${label}: ${errnoText(koffi.errno())}`);
    }
  }

  /**
   * The socket reports ENETDOWN when its interface goes away or down; the ring stays (the
   * kernel re-attaches it when the link comes back) and the agent's interface watcher
   * replaces it if the interface is re-created. The kernel sets the error once per outage,
   * and reading it clears it.
   */
  private checkSocketError(): void {
    this.optLen.writeUInt32LE(4, 0);
    if (sys.getsockopt(this.fd, SOL_SOCKET, SO_ERROR, this.optValue, this.optLen) !== 0) return;
    const errno = this.optValue.readInt32LE(0);
    if (errno !== 0) this.onWarning(`capture socket error ${errnoText(errno)}: interface down or gone`);
  }
}
