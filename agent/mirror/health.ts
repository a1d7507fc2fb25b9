// Health of a session's pool members (SPEC §3), judged from the agent's own network
// namespace: every `interval` seconds one probe per member, ICMP echo (a raw socket) or a
// TCP connect to the check's port, each bounded (timeoutMs); `none` never probes.
// Hysteresis: a healthy member goes out after `unhealthyAfter` failed probes in a row, an
// unhealthy one comes back after `healthyAfter` passed ones. Members start healthy, so
// copies flow from the first packet. Every change is logged and reported to onChange with
// the new mask (bit i: member i healthy).
import { createRequire } from 'node:module';
import net from 'node:net';
import type { HealthCheck } from '../config/types.js';
import type { Logger } from '../log.js';
import { allHealthy } from './pool.js';

/** A probe waits at most this long, and at most half the interval: a member that stops
 * answering is out within unhealthyAfter × interval + half an interval. */
const PROBE_TIMEOUT_MS = 1000;
const ICMP_ECHO_REQUEST = 8;
const ICMP_ECHO_REPLY = 0;
const ICMPV6_ECHO_REQUEST = 128;
const ICMPV6_ECHO_REPLY = 129;
const ECHO_LEN = 16;

interface RawSocket {
  send(buf: Buffer, offset: number, length: number, address: string, done: (err: Error | null) => void): void;
  on(event: 'message', listener: (buf: Buffer, source: string) => void): void;
  on(event: 'error', listener: (err: Error) => void): void;
  close(): void;
}
interface RawSocketModule {
  createSocket(opts: { protocol: number; addressFamily: number }): RawSocket;
  createChecksum(buf: Buffer): number;
  writeChecksum(buf: Buffer, offset: number, checksum: number): Buffer;
  Protocol: { ICMP: number; ICMPv6: number };
  AddressFamily: { IPv4: number; IPv6: number };
}
const raw = createRequire(import.meta.url)('raw-socket') as RawSocketModule;

export interface PoolHealthOptions {
  session: string;
  members: readonly string[];
  port: number;
  family: 4 | 6;
  check: HealthCheck;
  log: Logger;
  onChange: (healthy: number) => void;
  /** After every round, with each member's probe result (tests and diagnostics). */
  onRound?: (passed: readonly boolean[]) => void;
}

export class PoolHealth {
  private mask: number;
  /** Per member: probes in a row that disagree with its state. */
  private readonly streak: Uint8Array;
  private timer: NodeJS.Timeout | undefined;
  private running = false;
  private closed = false;
  private icmp: RawSocket | undefined;
  /** ICMP echo: identifier of this checker, sequence of the round, members answered this round. */
  private readonly ident = (Math.random() * 0x10000) >>> 0;
  private seq = 0;
  private answered = 0;
  /** Ends the ICMP round early once every member answered. */
  private allAnswered: (() => void) | undefined;

  constructor(private readonly opts: PoolHealthOptions) {
    this.mask = allHealthy(opts.members.length);
    this.streak = new Uint8Array(opts.members.length);
  }

  /** Bit i: member i takes flows now. */
  get healthy(): number {
    return this.mask;
  }

  isHealthy(member: number): boolean {
    return ((this.mask >>> member) & 1) === 1;
  }

  /** Starts the rounds (the first at once); `none` never probes. */
  start(): void {
    if (this.opts.check.type === 'none' || this.closed) return;
    if (this.opts.check.type === 'icmp') this.openIcmp();
    void this.round();
    this.timer = setInterval(() => void this.round(), this.opts.check.interval * 1000);
    this.timer.unref();
  }

  stop(): void {
    this.closed = true;
    clearInterval(this.timer);
    this.icmp?.close();
    this.icmp = undefined;
  }

  private async round(): Promise<void> {
    // A round still waiting on its probes (interval < timeout) is not overlapped.
    if (this.running || this.closed) return;
    this.running = true;
    try {
      const passed = this.opts.check.type === 'tcp' ? await this.tcpRound() : await this.icmpRound();
      if (!this.closed) {
        passed.forEach((ok, i) => this.judge(i, ok));
        this.opts.onRound?.(passed);
      }
    } finally {
      this.running = false;
    }
  }

  private judge(member: number, passed: boolean): void {
    const healthy = this.isHealthy(member);
    if (passed === healthy) {
      this.streak[member] = 0;
      return;
    }
    const need = healthy ? this.opts.check.unhealthyAfter : this.opts.check.healthyAfter;
    if (++this.streak[member]! < need) return;
    this.streak[member] = 0;
    this.mask = (this.mask ^ (1 << member)) >>> 0;
    const target = `${this.opts.members[member]}:${this.opts.port}`;
    const fields = { session: this.opts.session, target, check: this.opts.check.type, probes: need };
    if (healthy) this.opts.log.warn(fields, 'pool member failed its health check; its flows move to the other members');
    else this.opts.log.info(fields, 'pool member passed its health check again; its flows come back to it');
    this.opts.onChange(this.mask);
  }

  private timeoutMs(): number {
    return Math.min(PROBE_TIMEOUT_MS, this.opts.check.interval * 500);
  }

  private tcpRound(): Promise<boolean[]> {
    const port = this.opts.check.port!;
    return Promise.all(this.opts.members.map((host) => new Promise<boolean>((resolve) => {
      const socket = net.connect({ host, port, timeout: this.timeoutMs() });
      const done = (ok: boolean) => {
        socket.destroy();
        resolve(ok);
      };
      socket.once('connect', () => done(true));
      // After the loop's poll phase: a connect that completed while the loop was stalled
      // is seen first (timers run before I/O callbacks in a loop turn).
      socket.once('timeout', () => setImmediate(() => done(false)));
      socket.once('error', () => done(false));
    })));
  }

  private openIcmp(): void {
    const v6 = this.opts.family === 6;
    const socket = raw.createSocket({
      protocol: v6 ? raw.Protocol.ICMPv6 : raw.Protocol.ICMP,
      addressFamily: v6 ? raw.AddressFamily.IPv6 : raw.AddressFamily.IPv4,
    });
    socket.on('message', (buf, source) => this.onEcho(buf, source));
    socket.on('error', (err) => this.opts.log.warn({ session: this.opts.session, err: err.message }, 'ICMP health check socket failed'));
    this.icmp = socket;
  }

  /** An ICMP message for this host: an echo reply to this checker's current round counts. */
  private onEcho(buf: Buffer, source: string): void {
    // IPv4 raw sockets hand over the IP header too; IPv6 ones start at the ICMPv6 header.
    const at = this.opts.family === 4 ? (buf[0]! & 0x0f) * 4 : 0;
    if (buf.length < at + 8) return;
    const reply = this.opts.family === 4 ? ICMP_ECHO_REPLY : ICMPV6_ECHO_REPLY;
    if (buf[at] !== reply || buf.readUInt16BE(at + 4) !== this.ident || buf.readUInt16BE(at + 6) !== this.seq) return;
    const member = this.opts.members.findIndex((m) => net.isIP(m) !== 0 && sameAddress(m, source));
    if (member < 0) return;
    this.answered |= 1 << member;
    if (this.answered === allHealthy(this.opts.members.length)) this.allAnswered?.();
  }

  private async icmpRound(): Promise<boolean[]> {
    const socket = this.icmp;
    if (!socket) return this.opts.members.map(() => false);
    this.seq = (this.seq + 1) & 0xffff;
    this.answered = 0;
    const echo = Buffer.alloc(ECHO_LEN);
    echo[0] = this.opts.family === 4 ? ICMP_ECHO_REQUEST : ICMPV6_ECHO_REQUEST;
    echo.writeUInt16BE(this.ident, 4);
    echo.writeUInt16BE(this.seq, 6);
    // The kernel fills in the ICMPv6 checksum (it covers the pseudo-header); ICMP's is ours.
    if (this.opts.family === 4) raw.writeChecksum(echo, 2, raw.createChecksum(echo));
    await new Promise<void>((resolve) => {
      let timer: NodeJS.Timeout | undefined;
      this.allAnswered = () => {
        clearTimeout(timer);
        resolve();
      };
      // The wait starts once the requests are out (raw-socket sends when the loop polls),
      // and ends after the loop's next poll phase: an answer already in the socket when a
      // stalled loop wakes up counts. A busy agent (a burst of capture, a GC pause) must
      // not take every member out at once and drop the pool's copies.
      let unsent = this.opts.members.length;
      const sent = () => {
        if (--unsent === 0) timer = setTimeout(() => setImmediate(resolve), this.timeoutMs());
      };
      for (const m of this.opts.members) socket.send(echo, 0, echo.length, m, sent);
    });
    this.allAnswered = undefined;
    return this.opts.members.map((_, i) => ((this.answered >>> i) & 1) === 1);
  }
}

/** Two address literals name the same address (IPv6 text has many spellings). */
function sameAddress(a: string, b: string): boolean {
  if (a === b) return true;
  if (net.isIPv6(a) && net.isIPv6(b)) {
    const list = new net.BlockList();
    list.addAddress(a, 'ipv6');
    return list.check(b, 'ipv6');
  }
  return false;
}
