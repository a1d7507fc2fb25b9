// Live VXLAN sender for one target: one raw UDP socket (udp-socket.ts) connected to it. The
// agent writes the outer UDP header (and over IPv4 the IP header's template, which the
// kernel completes), so each copy's source port is its flow's symmetric
// port (flowSourcePort, SPEC §3): both directions of a connection, the eBPF plane and
// `replay` put the same port on the wire. The connected socket gets the kernel's route and
// source address, and IP_RECVERR reports ICMP errors about the copies (ECONNREFUSED from
// the target) and makes a full local queue (ENOBUFS) an error.
//
// Copies are batched: send() writes the UDP and VXLAN headers and the inner frame into an
// off-heap arena, and the batch goes to the kernel with one sendmmsg when the capture
// callback yields (setImmediate) or the arena fills. Nothing queues beyond the arena: a
// send buffer that stays full drops the rest of the batch, counted.
import type { PacketView } from '../packet/view.js';
import type { Logger } from '../log.js';
import type { MirrorOutput } from './output.js';
import { flowSourcePort } from './flow-hash.js';
import { frameLimit, UDP_HEADER_LEN, VXLAN_HEADER_LEN, writeOuterUdpHeader, writeVxlanHeader } from './vxlan.js';
import { NativeMemory } from '../native-memory.js';
import type { SessionBudget } from './budget.js';
import { EAGAIN, EINTR, ENOBUFS, errnoText, ipv4HeaderTemplate, MessageVector, RawUdpSocket, socketAddress } from './udp-socket.js';

export interface VxlanSenderOptions {
  address: string;
  port: number;
  family: 4 | 6;
  pathMtu: number;
  logger: Logger;
  /** The session's mirror budget; absent: every copy is sent. */
  budget?: SessionBudget;
}

const NS_PER_US = 1e3;
const SEND_BUFFER_BYTES = 4 * 1024 * 1024;
/** Copies and bytes held for one batch; a batch is flushed early when either fills. */
const BATCH_MESSAGES = 1024;
const ARENA_BYTES = 1024 * 1024;
const RECONNECT_MS = 1000;
/** How often the ICMP error queue is read when no send failed (the IPv6 raw socket's sends never fail on it). */
const ERROR_QUEUE_POLL_MS = 50;
const OUTER_HEADERS_LEN = UDP_HEADER_LEN + VXLAN_HEADER_LEN;
const ERROR_LOG_INTERVAL_MS = 10_000;
const UNREACHABLE = 'target not reachable yet (connect failed); retrying';

export class VxlanSender implements MirrorOutput {
  packets = 0;
  bytes = 0;
  truncated = 0;
  sendErrors = 0;
  dropped = 0;
  private socket: RawUdpSocket | undefined;
  /** IPv4: the header template written before each copy's UDP header. */
  private readonly ipv4Header: Uint32Array;
  /** IP header bytes written per copy (20 over IPv4, 0 over IPv6), then UDP and VXLAN. */
  private headersLength = OUTER_HEADERS_LEN;
  private connected = false;
  private readonly target: Buffer;
  private readonly arena = new NativeMemory(ARENA_BYTES);
  /** The batch: entry k is the k-th copy, in arrival order. */
  private readonly vector = new MessageVector(BATCH_MESSAGES);
  /** Datagram length of each entry, so a send counts its bytes. */
  private readonly lengthOf = new Uint32Array(BATCH_MESSAGES);
  private count = 0;
  private used = 0;
  private flushPending = false;
  private closed = false;
  private reconnectTimer: NodeJS.Timeout | undefined;
  /** Follows the route to the target (setPathMtu); starts as opts.pathMtu. */
  private pathMtu: number;
  private lastErrorLog = 0;
  private errorsSinceLog = 0;
  private lastErrorQueueRead = 0;
  private readonly flushSoon = (): void => {
    this.flushPending = false;
    this.flush();
  };

  private constructor(private readonly opts: VxlanSenderOptions) {
    // A raw socket has no ports: the destination port goes into each UDP header.
    this.target = socketAddress(opts.family, opts.address, 0);
    this.ipv4Header = opts.family === 4 ? ipv4HeaderTemplate(opts.address) : new Uint32Array(0);
    this.pathMtu = opts.pathMtu;
  }

  static async open(opts: VxlanSenderOptions): Promise<VxlanSender> {
    const sender = new VxlanSender(opts);
    try {
      sender.socket = RawUdpSocket.open(opts.family, SEND_BUFFER_BYTES);
      sender.headersLength = sender.socket.ipHeaderLength + OUTER_HEADERS_LEN;
    } catch (err) {
      await sender.close();
      throw err;
    }
    sender.connect();
    return sender;
  }

  /** Copies the budget shed (one per wire packet handed to send). */
  get budgetDrops(): number {
    return this.opts.budget?.shed ?? 0;
  }

  send(view: PacketView, vni: number, packetLength: number): boolean {
    if (this.closed) return false;
    if (!this.connected) {
      this.failed(UNREACHABLE);
      return false;
    }
    const len = Math.min(view.caplen, frameLimit(this.pathMtu, this.opts.family, packetLength));
    // Shed before any work is done for the copy: production traffic wins. Charged at the
    // packet's capture time (budget.ts: a backlog is not a burst).
    if (this.opts.budget !== undefined && !this.opts.budget.admit(1, len, view.tsUs * NS_PER_US)) return false;
    const size = this.headersLength + len;
    if (this.count === BATCH_MESSAGES || this.used + size > ARENA_BYTES) this.flush();
    if (len < view.wireLen) this.truncated++;
    const start = this.used;
    const out = this.arena.view;
    let at = start;
    const ip = this.ipv4Header;
    for (let w = 0; w < ip.length; w++, at += 4) out.writeUInt32BE(ip[w]!, at);
    writeOuterUdpHeader(out, at, flowSourcePort(view), this.opts.port, len);
    writeVxlanHeader(out, at + UDP_HEADER_LEN, vni);
    view.buf.copy(out, at + OUTER_HEADERS_LEN, 0, len);
    this.vector.set(this.count, this.arena.address + start, size);
    this.lengthOf[this.count] = size;
    this.count++;
    // 8-byte aligned copies.
    this.used = (start + size + 7) & ~7;
    if (!this.flushPending) {
      this.flushPending = true;
      setImmediate(this.flushSoon);
    }
    return true;
  }

  /** Hands the batch to the kernel in arrival order, then reads the ICMP error queue when it is due. */
  flush(): void {
    const n = this.count;
    if (n === 0) return;
    this.sendRun(this.socket!, n);
    this.count = 0;
    this.used = 0;
    const now = performance.now();
    if (now - this.lastErrorQueueRead >= ERROR_QUEUE_POLL_MS) {
      this.lastErrorQueueRead = now;
      this.readErrorQueue(this.socket!);
    }
  }

  /**
   * sendmmsg stops at the first message that fails and reports the errno only when that
   * message came first, so after a partial send the failing message is tried again at the
   * head of the next call. A send buffer that is full drops the rest of the batch as
   * back-pressure (counted) rather than trying copy by copy: EAGAIN over IPv4 (IP_HDRINCL
   * allocates like a UDP socket), ENOBUFS over IPv6, where a qdisc drop is ENOBUFS too, so
   * there it takes a second one in a row. A pending ICMP error (the IPv4 socket can report it on
   * the next send too; IP_RECVERR has queued it, one entry per ICMP message) fails a send
   * without sending it: queued errors about our copies are counted and that message is
   * tried once more.
   * Any other failure loses its message, counted with its errno.
   */
  private sendRun(socket: RawUdpSocket, end: number): void {
    let k = 0;
    let retried = -1;
    let lastErrno = 0;
    while (k < end) {
      const r = socket.sendBatch(this.vector, k, end - k);
      if (r > 0) {
        this.countSent(k, r);
        k += r;
        lastErrno = 0;
        continue;
      }
      if (r === -EINTR) continue;
      const queued = this.readErrorQueue(socket);
      if (r === -EAGAIN || (r === -ENOBUFS && lastErrno === ENOBUFS)) {
        this.dropped += end - k;
        return;
      }
      lastErrno = -r;
      if (queued > 0 && retried !== k) {
        retried = k;
        continue;
      }
      if (queued === 0) this.failed(errnoText(-r));
      k++;
    }
  }

  /**
   * Counts what IP_RECVERR queued about our copies (each entry a copy lost beyond this
   * host); returns how many entries were read, ours or not (any of them can fail a send).
   */
  private readErrorQueue(socket: RawUdpSocket): number {
    const queued = socket.drainErrorQueue(this.opts.port);
    if (socket.queuedOurs > 0) this.failed(errnoText(socket.queuedErrno), socket.queuedOurs);
    return queued;
  }

  /** Copies sent, and their inner frames' bytes after the cut (SPEC §5: without the outer headers). */
  private countSent(first: number, n: number): void {
    let bytes = 0;
    for (let k = first; k < first + n; k++) bytes += this.lengthOf[k]!;
    this.packets += n;
    this.bytes += bytes - n * this.headersLength;
  }

  /** Copies from now on are cut to fit `mtu` (the route to the target changed). */
  setPathMtu(mtu: number): void {
    this.pathMtu = mtu;
  }

  /** A failed send or socket error: counted, and logged at most once per interval. */
  failed(reason: string, count = 1): void {
    this.sendErrors += count;
    this.errorsSinceLog += count;
    const now = Date.now();
    if (now - this.lastErrorLog >= ERROR_LOG_INTERVAL_MS) {
      this.opts.logger.warn(
        { target: `${this.opts.address}:${this.opts.port}`, err: reason, errors: this.errorsSinceLog },
        'mirror send failing',
      );
      this.lastErrorLog = now;
      this.errorsSinceLog = 0;
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.reconnectTimer);
    if (this.socket !== undefined) {
      this.flush();
      this.readErrorQueue(this.socket);
      this.socket.close();
    }
    this.arena.release();
    this.vector.release();
  }

  /** Connects the socket; a target without a route is retried every second. */
  private connect(): void {
    const errno = this.socket!.connect(this.target);
    this.connected = errno === 0;
    if (errno !== 0) this.failed(errnoText(errno));
    if (!this.closed && !this.connected) {
      this.reconnectTimer = setTimeout(() => this.connect(), RECONNECT_MS);
      this.reconnectTimer.unref();
    }
  }
}
