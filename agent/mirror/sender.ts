// Live VXLAN sender for one target: a pool of UDP sockets bound to ports in 49152..65535,
// each connected to the target. A packet goes out on the socket its flow hash picks, so the
// outer source port is stable per flow. Copies are written into per-socket slabs of fixed
// slots; a socket with every slot in flight drops and counts instead of queueing without
// bound. Connected sockets also report ICMP errors from the target (ECONNREFUSED).
import dgram from 'node:dgram';
import type { PacketView } from '../packet/view.js';
import type { Logger } from '../log.js';
import type { MirrorOutput } from './output.js';
import { flowHash, SOURCE_PORT_MAX, SOURCE_PORT_MIN } from './flow-hash.js';
import { frameLimit, VXLAN_HEADER_LEN, writeVxlanHeader } from './vxlan.js';

export interface VxlanSenderOptions {
  address: string;
  port: number;
  family: 4 | 6;
  pathMtu: number;
  logger: Logger;
  /** Sockets (distinct source ports) per target. */
  poolSize?: number;
  /** Copies in flight per socket before new ones are dropped. */
  slotsPerSocket?: number;
}

const DEFAULT_POOL_SIZE = 16;
const DEFAULT_SLOTS = 512;
const SEND_BUFFER_BYTES = 4 * 1024 * 1024;
const RECONNECT_MS = 1000;
const ERROR_LOG_INTERVAL_MS = 10_000;
const CLOSE_DRAIN_MS = 1000;

class PooledSocket {
  readonly slab: Buffer;
  /** Slots handed to the kernel and not yet completed; completions arrive in send order. */
  inFlight = 0;
  next = 0;
  connected = false;
  /** Bound once so the packet path passes the same function every time. */
  readonly onSent: (err: Error | null) => void;

  constructor(
    readonly socket: dgram.Socket,
    readonly port: number,
    readonly slots: number,
    readonly slotSize: number,
    sender: VxlanSender,
  ) {
    this.slab = Buffer.allocUnsafe(slots * slotSize);
    this.onSent = (err) => {
      this.inFlight--;
      sender.completed(err);
    };
  }
}

export class VxlanSender implements MirrorOutput {
  packets = 0;
  bytes = 0;
  truncated = 0;
  sendErrors = 0;
  dropped = 0;
  private readonly pool: PooledSocket[] = [];
  private closed = false;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private lastErrorLog = 0;
  private errorsSinceLog = 0;

  private constructor(private readonly opts: Required<VxlanSenderOptions>) {}

  static async open(options: VxlanSenderOptions): Promise<VxlanSender> {
    const opts = { poolSize: DEFAULT_POOL_SIZE, slotsPerSocket: DEFAULT_SLOTS, ...options };
    const sender = new VxlanSender(opts);
    const slotSize = VXLAN_HEADER_LEN + frameLimit(opts.pathMtu, opts.family, Number.MAX_SAFE_INTEGER);
    const span = Math.floor((SOURCE_PORT_MAX - SOURCE_PORT_MIN + 1) / opts.poolSize);
    try {
      for (let i = 0; i < opts.poolSize; i++) {
        const { socket, port } = await bindInRange(opts.family, SOURCE_PORT_MIN + i * span, span);
        socket.on('error', (err) => sender.completed(err));
        socket.setSendBufferSize(SEND_BUFFER_BYTES);
        sender.pool.push(new PooledSocket(socket, port, opts.slotsPerSocket, slotSize, sender));
      }
    } catch (err) {
      await sender.close();
      throw err;
    }
    await sender.connectAll();
    return sender;
  }

  /** Source ports in use, for logs and tests. */
  get sourcePorts(): number[] {
    return this.pool.map((p) => p.port);
  }

  send(view: PacketView, vni: number, packetLength: number): boolean {
    const ps = this.pool[flowHash(view) % this.pool.length]!;
    if (!ps.connected) {
      this.completed(UNREACHABLE);
      return false;
    }
    if (ps.inFlight >= ps.slots) {
      this.dropped++;
      return false;
    }
    const len = Math.min(view.caplen, frameLimit(this.opts.pathMtu, this.opts.family, packetLength));
    if (len < view.wireLen) this.truncated++;
    const offset = ps.next * ps.slotSize;
    ps.next = ps.next + 1 === ps.slots ? 0 : ps.next + 1;
    writeVxlanHeader(ps.slab, offset, vni);
    view.buf.copy(ps.slab, offset + VXLAN_HEADER_LEN, 0, len);
    ps.inFlight++;
    ps.socket.send(ps.slab, offset, VXLAN_HEADER_LEN + len, ps.onSent);
    this.packets++;
    this.bytes += VXLAN_HEADER_LEN + len;
    return true;
  }

  /** Send completion (or socket error): counts and logs failures, at most one line per interval. */
  completed(err: Error | null): void {
    if (!err) return;
    this.sendErrors++;
    this.errorsSinceLog++;
    const now = Date.now();
    if (now - this.lastErrorLog >= ERROR_LOG_INTERVAL_MS) {
      this.opts.logger.warn(
        { target: `${this.opts.address}:${this.opts.port}`, err: err.message, errors: this.errorsSinceLog },
        'mirror send failing',
      );
      this.lastErrorLog = now;
      this.errorsSinceLog = 0;
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.reconnectTimer);
    const deadline = Date.now() + CLOSE_DRAIN_MS;
    while (this.pool.some((p) => p.inFlight > 0) && Date.now() < deadline) {
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
    await Promise.all(this.pool.map((p) => new Promise<void>((resolve) => p.socket.close(() => resolve()))));
    this.pool.length = 0;
  }

  /** Connects every socket that is not; a target without a route is retried every second. */
  private async connectAll(): Promise<void> {
    await Promise.all(
      this.pool.filter((p) => !p.connected).map(
        (p) =>
          new Promise<void>((resolve) => {
            p.socket.connect(this.opts.port, this.opts.address, (err?: Error) => {
              p.connected = !err;
              if (err) this.completed(err);
              resolve();
            });
          }),
      ),
    );
    if (!this.closed && this.pool.some((p) => !p.connected)) {
      this.reconnectTimer = setTimeout(() => void this.connectAll(), RECONNECT_MS);
      this.reconnectTimer.unref();
    }
  }
}

const UNREACHABLE = new Error('target not reachable yet (connect failed); retrying');

/** Binds a UDP socket to the first free port in [first, first + count). */
async function bindInRange(family: 4 | 6, first: number, count: number): Promise<{ socket: dgram.Socket; port: number }> {
  let lastError: Error | undefined;
  for (let port = first; port < first + count; port++) {
    const socket = dgram.createSocket({ type: family === 6 ? 'udp6' : 'udp4', ipv6Only: family === 6 });
    try {
      await new Promise<void>((resolve, reject) => {
        socket.once('error', reject);
        socket.bind({ port, exclusive: true }, () => {
          socket.off('error', reject);
          resolve();
        });
      });
      return { socket, port };
    } catch (err) {
      lastError = err as Error;
      socket.close();
    }
  }
  throw new Error(`no free UDP source port in ${first}..${first + count - 1}: ${lastError?.message}`);
}
