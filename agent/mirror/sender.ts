// Live VXLAN sender for one target: a pool of UDP sockets bound to ports in 49152..65535,
// each connected to the target. A packet goes out on the socket its flow hash picks, so the
// outer source port is stable per flow. Connected sockets also report ICMP errors from the
// target (ECONNREFUSED), and IP_RECVERR makes a full local queue (ENOBUFS) an error too.
//
// Copies are batched: send() writes the VXLAN header and the inner frame into an off-heap
// arena, and the batch goes to the kernel with one sendmmsg per socket when the capture
// callback yields (setImmediate) or the arena fills. Nothing queues beyond the arena: a
// socket whose send buffer is full (EAGAIN) drops the rest of its batch, counted.
import type { PacketView } from '../packet/view.js';
import type { Logger } from '../log.js';
import type { MirrorOutput } from './output.js';
import { flowHash, SOURCE_PORT_MAX, SOURCE_PORT_MIN } from './flow-hash.js';
import { frameLimit, VXLAN_HEADER_LEN, writeVxlanHeader } from './vxlan.js';
import { NativeMemory } from '../native-memory.js';
import { EAGAIN, EINTR, errnoText, MessageVector, socketAddress, UdpSocket } from './udp-socket.js';

export interface VxlanSenderOptions {
  address: string;
  port: number;
  family: 4 | 6;
  pathMtu: number;
  logger: Logger;
  /** Sockets (distinct source ports) per target. */
  poolSize?: number;
}

const DEFAULT_POOL_SIZE = 16;
const SEND_BUFFER_BYTES = 4 * 1024 * 1024;
/** Copies and bytes held for one batch; a batch is flushed early when either fills. */
const BATCH_MESSAGES = 1024;
const ARENA_BYTES = 1024 * 1024;
const RECONNECT_MS = 1000;
const ERROR_LOG_INTERVAL_MS = 10_000;
const UNREACHABLE = 'target not reachable yet (connect failed); retrying';

export class VxlanSender implements MirrorOutput {
  packets = 0;
  bytes = 0;
  truncated = 0;
  sendErrors = 0;
  dropped = 0;
  private readonly pool: UdpSocket[] = [];
  private readonly connected: boolean[] = [];
  private readonly target: Buffer;
  private readonly arena = new NativeMemory(ARENA_BYTES);
  private readonly vector = new MessageVector(BATCH_MESSAGES);
  /** The batch: per copy its socket, offset and length in the arena, in arrival order. */
  private readonly socketOf = new Uint8Array(BATCH_MESSAGES);
  private readonly offsetOf = new Uint32Array(BATCH_MESSAGES);
  private readonly lengthOf = new Uint32Array(BATCH_MESSAGES);
  /** During a flush: the length of each vector entry (socket order), so a send counts its bytes. */
  private readonly vectorLength = new Uint32Array(BATCH_MESSAGES);
  /** Copies per socket, then (during a flush) each socket's next vector entry. */
  private readonly perSocket: Uint32Array;
  private count = 0;
  private used = 0;
  private flushPending = false;
  private closed = false;
  private reconnectTimer: NodeJS.Timeout | undefined;
  /** Follows the route to the target (setPathMtu); starts as opts.pathMtu. */
  private pathMtu: number;
  private lastErrorLog = 0;
  private errorsSinceLog = 0;
  private readonly flushSoon = (): void => {
    this.flushPending = false;
    this.flush();
  };

  private constructor(private readonly opts: Required<VxlanSenderOptions>) {
    this.target = socketAddress(opts.family, opts.address, opts.port);
    this.pathMtu = opts.pathMtu;
    this.perSocket = new Uint32Array(opts.poolSize);
  }

  static async open(options: VxlanSenderOptions): Promise<VxlanSender> {
    const opts = { poolSize: DEFAULT_POOL_SIZE, ...options };
    if (opts.poolSize < 1 || opts.poolSize > 256) throw new Error(`poolSize ${opts.poolSize}: expected 1..256`);
    const sender = new VxlanSender(opts);
    const span = Math.floor((SOURCE_PORT_MAX - SOURCE_PORT_MIN + 1) / opts.poolSize);
    try {
      for (let i = 0; i < opts.poolSize; i++) {
        sender.pool.push(UdpSocket.bindInRange(opts.family, SOURCE_PORT_MIN + i * span, span, SEND_BUFFER_BYTES));
        sender.connected.push(false);
      }
    } catch (err) {
      await sender.close();
      throw err;
    }
    sender.connectAll();
    return sender;
  }

  /** Source ports in use, for logs and tests. */
  get sourcePorts(): number[] {
    return this.pool.map((s) => s.port);
  }

  send(view: PacketView, vni: number, packetLength: number): boolean {
    if (this.closed) return false;
    const socket = flowHash(view) % this.pool.length;
    if (!this.connected[socket]) {
      this.failed(UNREACHABLE);
      return false;
    }
    const len = Math.min(view.caplen, frameLimit(this.pathMtu, this.opts.family, packetLength));
    const size = VXLAN_HEADER_LEN + len;
    if (this.count === BATCH_MESSAGES || this.used + size > ARENA_BYTES) this.flush();
    if (len < view.wireLen) this.truncated++;
    const at = this.used;
    const out = this.arena.view;
    writeVxlanHeader(out, at, vni);
    view.buf.copy(out, at + VXLAN_HEADER_LEN, 0, len);
    this.socketOf[this.count] = socket;
    this.offsetOf[this.count] = at;
    this.lengthOf[this.count] = size;
    this.count++;
    // 8-byte aligned copies.
    this.used = (at + size + 7) & ~7;
    if (!this.flushPending) {
      this.flushPending = true;
      setImmediate(this.flushSoon);
    }
    return true;
  }

  /** Hands the batch to the kernel: the copies of each socket in arrival order, one sendmmsg per socket. */
  flush(): void {
    const n = this.count;
    if (n === 0) return;
    const perSocket = this.perSocket;
    perSocket.fill(0);
    for (let i = 0; i < n; i++) perSocket[this.socketOf[i]!]!++;
    let next = 0;
    for (let s = 0; s < perSocket.length; s++) {
      const c = perSocket[s]!;
      perSocket[s] = next;
      next += c;
    }
    for (let i = 0; i < n; i++) {
      const k = perSocket[this.socketOf[i]!]!++;
      this.vector.set(k, this.arena.address + this.offsetOf[i]!, this.lengthOf[i]!);
      this.vectorLength[k] = this.lengthOf[i]!;
    }
    // perSocket[s] is now the end of socket s's run; its start is the previous socket's end.
    let start = 0;
    for (let s = 0; s < perSocket.length; s++) {
      const end = perSocket[s]!;
      if (end > start) this.sendRun(s, start, end);
      start = end;
    }
    this.count = 0;
    this.used = 0;
  }

  /**
   * sendmmsg stops at the first message that fails and reports the errno only when that
   * message came first, so after a partial send the failing message is tried again at the
   * head of the next call. A pending ICMP error (IP_RECVERR queues one entry per ICMP
   * message) fails a send without sending it: queued errors are counted and that message is
   * tried once more. Any other failure loses its message, counted with its errno.
   */
  private sendRun(s: number, first: number, end: number): void {
    const socket = this.pool[s]!;
    let k = first;
    let retried = -1;
    while (k < end) {
      const r = socket.sendBatch(this.vector, k, end - k);
      if (r > 0) this.countSent(k, r);
      if (r === end - k) return;
      if (r > 0) k += r;
      const queued = socket.drainErrorQueue();
      if (queued > 0) this.failed(errnoText(socket.queuedErrno), queued);
      if (r > 0 || r === -EINTR) continue;
      if (r === -EAGAIN) {
        // The send buffer is full: what is left of this run is dropped, not queued.
        this.dropped += end - k;
        return;
      }
      if (queued > 0 && retried !== k) {
        retried = k;
        continue;
      }
      if (queued === 0) this.failed(errnoText(-r));
      k++;
    }
  }

  /** Copies sent, and their inner frames' bytes after the cut (SPEC §5: without the VXLAN header). */
  private countSent(first: number, n: number): void {
    let bytes = 0;
    for (let k = first; k < first + n; k++) bytes += this.vectorLength[k]!;
    this.packets += n;
    this.bytes += bytes - n * VXLAN_HEADER_LEN;
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
    if (this.pool.length > 0) this.flush();
    for (const s of this.pool) s.close();
    this.pool.length = 0;
    this.arena.release();
    this.vector.release();
  }

  /** Connects every socket that is not; a target without a route is retried every second. */
  private connectAll(): void {
    for (let i = 0; i < this.pool.length; i++) {
      if (this.connected[i]) continue;
      const errno = this.pool[i]!.connect(this.target);
      this.connected[i] = errno === 0;
      if (errno !== 0) this.failed(errnoText(errno));
    }
    if (!this.closed && this.connected.some((c) => !c)) {
      this.reconnectTimer = setTimeout(() => this.connectAll(), RECONNECT_MS);
      this.reconnectTimer.unref();
    }
  }
}
