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
//
// IPv4 copies skip the IP layer while the kernel knows the link-layer path to the target
// (link-path.ts, asked over netlink once a second): whole Ethernet frames, the IPv4 header complete with
// its checksum, on an AF_PACKET socket bound to the egress device (PacketSendSocket). That
// is the IP layer's per-packet route and neighbour lookups and its netfilter hooks less per
// copy (docs/benchmarks.md: ~0.35-0.6 CPU s less per million copies, a third of the send).
// Without a path (neighbour unresolved, not Ethernet) copies go through the raw socket,
// whose sends make the kernel resolve; while the neighbour is STALE one copy per second goes
// that way too, so the kernel re-confirms the MAC as it would for its own traffic. The raw
// socket stays connected either way: it is where ICMP errors about the copies arrive.
import type { PacketView } from '../packet/view.js';
import type { Logger } from '../log.js';
import type { MirrorOutput } from './output.js';
import { flowSourcePort } from './flow-hash.js';
import { frameLimit, UDP_HEADER_LEN, VXLAN_HEADER_LEN, writeOuterUdpHeader, writeVxlanHeader } from './vxlan.js';
import { NativeMemory } from '../native-memory.js';
import type { SessionBudget } from './budget.js';
import { EAGAIN, EINTR, ENOBUFS, errnoText, ipv4HeaderTemplate, MessageVector, PacketSendSocket, RawUdpSocket, socketAddress } from './udp-socket.js';
import { LinkPathResolver, samePath, type LinkPath } from './link-path.js';

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
const ETHERNET_HEADER_LEN = 14;
const IPV4_HEADER_LEN = 20;
/** Ethernet, IPv4, UDP, VXLAN: what a copy on the link path carries before its inner frame. */
const LINK_HEADERS_LEN = ETHERNET_HEADER_LEN + IPV4_HEADER_LEN + OUTER_HEADERS_LEN;
/** How often the link-layer path to an IPv4 target is asked of the kernel. */
const LINK_REFRESH_MS = 1000;
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
  /** Headers written per copy of the batch: IP header bytes (20 over IPv4, 0 over IPv6) then UDP and VXLAN, or LINK_HEADERS_LEN on the link path. */
  private headersLength = OUTER_HEADERS_LEN;
  /** The same through the raw socket. */
  private rawHeadersLength = OUTER_HEADERS_LEN;
  /** The link-layer path to the target while the kernel knows one (IPv4 only), and its socket. */
  private link: LinkPath | undefined;
  private packetSocket: PacketSendSocket | undefined;
  /** The batch being filled goes out on the link path. */
  private batchOnLink = false;
  /** One copy of the next batch goes through the raw socket (the neighbour is STALE). */
  private nudge = false;
  private readonly nudgeVector = new MessageVector(1);
  /** Link path, IPv4 header: the checksum's sum over the fields that do not change per copy, and the id counter. */
  private linkHeaderSum = 0;
  private ipId = 0;
  private linkTimer: NodeJS.Timeout | undefined;
  private readonly resolver: LinkPathResolver | undefined;
  /** Why copies go through the IP layer, as last logged (a change is logged once). */
  private linkState = '';
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
    this.resolver = opts.family === 4 ? new LinkPathResolver(opts.address) : undefined;
  }

  static async open(opts: VxlanSenderOptions): Promise<VxlanSender> {
    const sender = new VxlanSender(opts);
    try {
      sender.socket = RawUdpSocket.open(opts.family, SEND_BUFFER_BYTES);
      sender.rawHeadersLength = sender.socket.ipHeaderLength + OUTER_HEADERS_LEN;
      sender.headersLength = sender.rawHeadersLength;
    } catch (err) {
      await sender.close();
      throw err;
    }
    sender.connect();
    sender.refreshLink();
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
    if (this.count === 0) this.startBatch();
    if (this.count === BATCH_MESSAGES || this.used + this.headersLength + len > ARENA_BYTES) {
      this.flush();
      this.startBatch();
    }
    const size = this.headersLength + len;
    if (len < view.wireLen) this.truncated++;
    const start = this.used;
    const out = this.arena.view;
    let at = start;
    if (this.batchOnLink) {
      at = this.writeLinkHeaders(out, at, size - ETHERNET_HEADER_LEN);
    } else {
      const ip = this.ipv4Header;
      for (let w = 0; w < ip.length; w++, at += 4) out.writeUInt32BE(ip[w]!, at);
    }
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

  /** The path and headers of the batch that starts now. */
  private startBatch(): void {
    this.batchOnLink = this.link !== undefined;
    this.headersLength = this.batchOnLink ? LINK_HEADERS_LEN : this.rawHeadersLength;
  }

  /** Ethernet and a complete IPv4 header (DF, TTL 64, the next id, its checksum) at `at`; returns where UDP starts. */
  private writeLinkHeaders(out: Buffer, at: number, ipLength: number): number {
    this.link!.ethernet.copy(out, at);
    at += ETHERNET_HEADER_LEN;
    const id = this.ipId;
    this.ipId = (id + 1) & 0xffff;
    let sum = this.linkHeaderSum + ipLength + id;
    sum = (sum & 0xffff) + (sum >>> 16);
    sum = (sum & 0xffff) + (sum >>> 16);
    const ip = this.ipv4Header;
    out.writeUInt32BE((ip[0]! | ipLength) >>> 0, at);
    out.writeUInt32BE(((id << 16) | ip[1]!) >>> 0, at + 4);
    out.writeUInt32BE((ip[2]! | (~sum & 0xffff)) >>> 0, at + 8);
    out.writeUInt32BE(this.link!.sourceAddress, at + 12);
    out.writeUInt32BE(ip[4]!, at + 16);
    return at + IPV4_HEADER_LEN;
  }

  /** Hands the batch to the kernel in arrival order, then reads the ICMP error queue when it is due. */
  flush(): void {
    const n = this.count;
    if (n === 0) return;
    let first = 0;
    if (this.batchOnLink && this.nudge) {
      // The first copy through the IP layer, from its IPv4 header (the kernel keeps the
      // source address and recomputes the checksum): the kernel sees traffic to its STALE
      // neighbour and re-confirms it.
      this.nudge = false;
      this.nudgeVector.set(0, this.arena.address + ETHERNET_HEADER_LEN, this.lengthOf[0]! - ETHERNET_HEADER_LEN);
      if (this.socket!.sendBatch(this.nudgeVector, 0, 1) === 1) {
        this.countSent(0, 1);
        first = 1;
      }
    }
    if (this.batchOnLink) this.sendRun(this.packetSocket!, first, n);
    else this.sendRun(this.socket!, first, n);
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
  private sendRun(socket: RawUdpSocket | PacketSendSocket, first: number, end: number): void {
    let k = first;
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
      const queued = this.readErrorQueue(this.socket!);
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
      // The device went down or away under the link path: the next batches go through the
      // IP layer (which knows whether there is still a route) until the next refresh.
      if (socket === this.packetSocket) this.link = undefined;
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
    clearTimeout(this.linkTimer);
    if (this.socket !== undefined) {
      this.flush();
      this.readErrorQueue(this.socket);
      this.socket.close();
    }
    this.packetSocket?.close();
    this.resolver?.close();
    this.arena.release();
    this.vector.release();
    this.nudgeVector.release();
  }

  /** Asks the kernel for the link-layer path, switches to it or off it, and asks again in a second. */
  private refreshLink(): void {
    if (this.closed || this.resolver === undefined) return;
    const path = this.resolver.resolve();
    try {
      this.useLink(typeof path === 'string' ? undefined : path, typeof path === 'string' ? path : '');
    } catch (err) {
      // No packet socket (a refused bind): the IP layer carries the copies.
      this.useLink(undefined, (err as Error).message);
    }
    this.linkTimer = setTimeout(() => this.refreshLink(), LINK_REFRESH_MS);
    this.linkTimer.unref();
  }

  private useLink(path: LinkPath | undefined, reason: string): void {
    if (!samePath(this.link, path)) {
      // Copies already batched keep the headers and socket they were written for.
      this.flush();
      if (path !== undefined && path.ifindex !== this.packetSocket?.ifindex) {
        const socket = PacketSendSocket.open(path.ifindex, SEND_BUFFER_BYTES);
        this.packetSocket?.close();
        this.packetSocket = socket;
      }
      this.link = path;
      if (path !== undefined) this.linkHeaderSum = linkHeaderSum(this.ipv4Header, path.sourceAddress);
    }
    this.nudge = path?.stale ?? false;
    const state = path === undefined ? reason : `device ${path.device}`;
    if (state !== this.linkState) {
      this.linkState = state;
      const target = `${this.opts.address}:${this.opts.port}`;
      if (path !== undefined) this.opts.logger.info({ target, device: path.device }, 'mirror copies sent on the egress device, past the IP layer');
      else this.opts.logger.info({ target, reason }, 'mirror copies sent through the IP layer');
    }
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

/** The IPv4 header checksum's sum over the words that are the same for every copy: version, DF, TTL, protocol, addresses. */
function linkHeaderSum(template: Uint32Array, source: number): number {
  let sum = 0;
  for (const word of [template[0]!, template[1]!, template[2]!, source, template[4]!]) sum += (word >>> 16) + (word & 0xffff);
  return sum;
}
