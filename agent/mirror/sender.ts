// Live VXLAN sender for one target: a pool of UDP sockets bound to ports in 49152..65535,
// each connected to the target. A packet goes out on the socket its flow hash picks, so the
// outer source port is stable per flow. Connected sockets also report ICMP errors from the
// target (ECONNREFUSED).
//
// Each copy gets its own Buffer (from Node's slab pool, so small copies are cheap slices):
// the kernel usually takes the datagram at once, but when it cannot, libuv queues the send
// and keeps the buffer, so a reused slot could be overwritten before it left. Back-pressure
// is the libuv send queue of the socket: past MAX_QUEUED sends waiting, copies are dropped
// and counted instead of queueing without bound. (Completion callbacks are no measure of
// that: they only run after the capture callback returns a whole ring block.)
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
  /** Sends waiting in a socket's queue before new copies are dropped. */
  maxQueued?: number;
}

const DEFAULT_POOL_SIZE = 16;
const DEFAULT_MAX_QUEUED = 1024;
const SEND_BUFFER_BYTES = 4 * 1024 * 1024;
const RECONNECT_MS = 1000;
const ERROR_LOG_INTERVAL_MS = 10_000;
const CLOSE_DRAIN_MS = 1000;

interface PooledSocket {
  socket: dgram.Socket;
  port: number;
  connected: boolean;
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

  private readonly onSent = (err: Error | null): void => {
    if (err) this.failed(err);
  };

  private constructor(private readonly opts: Required<VxlanSenderOptions>) {}

  static async open(options: VxlanSenderOptions): Promise<VxlanSender> {
    const opts = { poolSize: DEFAULT_POOL_SIZE, maxQueued: DEFAULT_MAX_QUEUED, ...options };
    const sender = new VxlanSender(opts);
    const span = Math.floor((SOURCE_PORT_MAX - SOURCE_PORT_MIN + 1) / opts.poolSize);
    try {
      for (let i = 0; i < opts.poolSize; i++) {
        const { socket, port } = await bindInRange(opts.family, SOURCE_PORT_MIN + i * span, span);
        socket.on('error', (err) => sender.failed(err));
        socket.setSendBufferSize(SEND_BUFFER_BYTES);
        sender.pool.push({ socket, port, connected: false });
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
      this.failed(UNREACHABLE);
      return false;
    }
    if (ps.socket.getSendQueueCount() >= this.opts.maxQueued) {
      this.dropped++;
      return false;
    }
    const len = Math.min(view.caplen, frameLimit(this.opts.pathMtu, this.opts.family, packetLength));
    if (len < view.wireLen) this.truncated++;
    const copy = Buffer.allocUnsafe(VXLAN_HEADER_LEN + len);
    writeVxlanHeader(copy, 0, vni);
    view.buf.copy(copy, VXLAN_HEADER_LEN, 0, len);
    // One callback shared by every send (no closure per packet): without one, Node drops send errors.
    ps.socket.send(copy, this.onSent);
    this.packets++;
    this.bytes += VXLAN_HEADER_LEN + len;
    return true;
  }

  /** A failed send or socket error: counted, and logged at most once per interval. */
  failed(err: Error | null): void {
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
    while (this.pool.some((p) => p.socket.getSendQueueCount() > 0) && Date.now() < deadline) {
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
              if (err) this.failed(err);
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
