// The sender's socket, through libc (koffi), for what Node's dgram cannot do:
// - a raw IP socket for protocol UDP: the agent writes the outer UDP header, so each copy
//   carries its flow's symmetric source port (SPEC §3) from one socket, as the eBPF plane
//   and `replay` do; the kernel still routes, picks the source address and adds the IP header.
// - IP_RECVERR: without it the kernel turns a full local queue (ENOBUFS) into a silent
//   success and only bumps a counter; with it the send fails and is counted. It also queues
//   ICMP errors about our datagrams (the kernel hands them to raw sockets of the protocol).
// - sendmmsg: one system call for a batch of copies instead of a libuv request per copy.
// The socket is non-blocking and never enters the event loop, so an ICMP error queued on it
// cannot wake anything; the sender drains that queue after its sends.
// Constants are Linux's (identical on x86-64 and aarch64), structs the LP64 layout.
import { constants } from 'node:os';
import koffi from 'koffi';
import { ErrorCode, MirrorflowError } from '../errors.js';
import { NativeMemory } from '../native-memory.js';
import { SOCK_CLOEXEC, SOCK_NONBLOCK, SOL_SOCKET, errnoText, int32, libc, socketCalls } from '../libc.js';

export { errnoText };

const sys = {
  ...socketCalls,
  connect: libc.func('int connect(int fd, const void *addr, uint32_t len)'),
  sendmmsg: libc.func('int sendmmsg(int fd, uint64_t msgvec, unsigned int vlen, int flags)'),
  recvmsg: libc.func('int64_t recvmsg(int fd, uint64_t msg, int flags)'),
  /** setsockopt with the value at a native address (a struct holding a pointer). */
  setsockoptAt: libc.func('int setsockopt(int fd, int level, int name, uint64_t value, uint32_t len)'),
  inetPton: libc.func('int inet_pton(int af, const char *src, void *dst)'),
};

const AF_INET = 2;
const AF_INET6 = 10;
const SOCK_RAW = 3;
const IPPROTO_UDP = 17;
const SO_SNDBUF = 7;
const SO_RCVBUF = 8;
const SOL_IP = 0;
const IP_HDRINCL = 3;
const IP_RECVERR = 11;
const IPV4_HEADER_LEN = 20;
/** Flags and fragment offset word: DF set, no fragment. */
const IPV4_DF = 0x4000;
const IPV4_TTL = 64;
const SOL_IPV6 = 41;
const IPV6_RECVERR = 25;
const IPV6_CHECKSUM = 7;
const UDP_CHECKSUM_OFFSET = 6;
const SO_ATTACH_FILTER = 26;
/** struct sock_fprog (LP64: u16 length, padding, pointer) and one struct sock_filter. */
const SOCK_FPROG_LEN = 16;
const SOCK_FILTER_LEN = 8;
/** BPF_RET | BPF_K: return the constant k (bytes to keep; 0 drops the packet). */
const BPF_RET_K = 0x06;
const MSG_DONTWAIT = 0x40;
const MSG_ERRQUEUE = 0x2000;

export const { EINTR, EAGAIN, ENOBUFS } = constants.errno;

const SOCKADDR_IN_LEN = 16;
const SOCKADDR_IN6_LEN = 28;
const IOVEC_LEN = 16;
const MMSGHDR_LEN = 64;
const MSGHDR_IOV = 16;
const MSGHDR_IOVLEN = 24;
const MSGHDR_CONTROL = 32;
const MSGHDR_CONTROLLEN = 40;
const CMSG_HEADER_LEN = 16;
/** Error-queue read buffer: msghdr at 0, iovec, data, control. */
const ERR_IOV_AT = 64;
const ERR_DATA_AT = 80;
const ERR_CONTROL_AT = 336;
const ERR_CONTROL_LEN = 128;
/** The receive buffer bounds the ICMP error queue; nothing else is ever received. */
const RECEIVE_BUFFER_BYTES = 4096;
const ERROR_QUEUE_READS = 64;

/** A sockaddr_in/sockaddr_in6 for an IP literal. */
export function socketAddress(family: 4 | 6, address: string, port: number): Buffer {
  const sa = Buffer.alloc(family === 4 ? SOCKADDR_IN_LEN : SOCKADDR_IN6_LEN);
  sa.writeUInt16LE(family === 4 ? AF_INET : AF_INET6, 0);
  sa.writeUInt16BE(port, 2);
  const raw = Buffer.alloc(16);
  if (sys.inetPton(family === 4 ? AF_INET : AF_INET6, address, raw) !== 1) throw new Error(`not an IPv${family} address: ${address}`);
  raw.copy(sa, family === 4 ? 4 : 8, 0, family === 4 ? 4 : 16);
  return sa;
}

/**
 * A vector of `mmsghdr`s whose entry k points at iovec k; a batch fills iovecs and hands a
 * run of entries to sendmmsg.
 */
export class MessageVector {
  private readonly mem: NativeMemory;
  private readonly iovAt: number;

  constructor(readonly capacity: number) {
    this.mem = new NativeMemory(capacity * (MMSGHDR_LEN + IOVEC_LEN));
    this.iovAt = capacity * MMSGHDR_LEN;
    for (let k = 0; k < capacity; k++) {
      this.mem.view.writeUIntLE(this.mem.address + this.iovAt + k * IOVEC_LEN, k * MMSGHDR_LEN + MSGHDR_IOV, 6);
      this.mem.view.writeUIntLE(1, k * MMSGHDR_LEN + MSGHDR_IOVLEN, 6);
    }
  }

  /** Entry k sends `length` bytes at `address`. */
  set(k: number, address: number, length: number): void {
    const at = this.iovAt + k * IOVEC_LEN;
    this.mem.view.writeUIntLE(address, at, 6);
    this.mem.view.writeUIntLE(length, at + 8, 6);
  }

  /** Address of entry k, for sendmmsg. */
  entry(k: number): number {
    return this.mem.address + k * MMSGHDR_LEN;
  }

  release(): void {
    this.mem.release();
  }
}

/**
 * A non-blocking raw IP socket for protocol UDP, connected to one target; the caller writes
 * the UDP header, so every copy can carry its own source port. The kernel routes each
 * datagram and picks the source address as for the connected UDP socket it replaces.
 * IPv4: IP_HDRINCL, the caller writes an IPv4 header template (ipv4HeaderTemplate) and the
 * kernel fills in the source address, total length, id and header checksum; it costs less
 * than having the kernel build the header (2.71/2.86 against 3.05/3.11 CPU s per million
 * copies in two rounds), and the UDP checksum is 0, as the Linux vxlan driver sends by
 * default. IPv6: the kernel adds the header and fills the UDP checksum (IPV6_CHECKSUM at
 * offset 6, a zero result sent as 0xffff).
 */
export class RawUdpSocket {
  private fd: number;
  /** One msghdr, its iovec, a data buffer and a control buffer, for reading the error queue. */
  private readonly errMsg = new NativeMemory(ERR_CONTROL_AT + ERR_CONTROL_LEN);
  /** errno (sock_extended_err.ee_errno) of the last entry about our datagrams drainErrorQueue() read. */
  queuedErrno = 0;
  /** Entries of the last drainErrorQueue() about our datagrams (UDP to the target's port). */
  queuedOurs = 0;

  /** Bytes of IP header the caller writes before the UDP header: 20 (IPv4), 0 (IPv6). */
  readonly ipHeaderLength: number;

  private constructor(fd: number, family: 4 | 6) {
    this.fd = fd;
    this.ipHeaderLength = family === 4 ? IPV4_HEADER_LEN : 0;
    const v = this.errMsg.view;
    const base = this.errMsg.address;
    v.writeUIntLE(base + ERR_IOV_AT, MSGHDR_IOV, 6);
    v.writeUIntLE(1, MSGHDR_IOVLEN, 6);
    v.writeUIntLE(base + ERR_DATA_AT, ERR_IOV_AT, 6);
    v.writeUIntLE(ERR_CONTROL_AT - ERR_DATA_AT, ERR_IOV_AT + 8, 6);
    v.writeUIntLE(base + ERR_CONTROL_AT, MSGHDR_CONTROL, 6);
  }

  static open(family: 4 | 6, sendBufferBytes: number): RawUdpSocket {
    const fd = sys.socket(family === 4 ? AF_INET : AF_INET6, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_UDP) as number;
    if (fd < 0) throw new MirrorflowError(ErrorCode.MIRROR_SOCKET, `raw UDP socket (needs CAP_NET_RAW): ${errnoText(koffi.errno())}`);
    try {
      setOption(fd, family === 4 ? SOL_IP : SOL_IPV6, family === 4 ? IP_RECVERR : IPV6_RECVERR, int32(1), 'IP_RECVERR');
      if (family === 4) setOption(fd, SOL_IP, IP_HDRINCL, int32(1), 'IP_HDRINCL');
      else setOption(fd, SOL_IPV6, IPV6_CHECKSUM, int32(UDP_CHECKSUM_OFFSET), 'IPV6_CHECKSUM');
      setOption(fd, SOL_SOCKET, SO_SNDBUF, int32(sendBufferBytes), 'SO_SNDBUF');
      // A raw UDP socket is handed a clone of every UDP datagram the host receives (once
      // connected, those from its peer; on loopback our own copies). The filter, attached
      // before the connect, drops them all before they are queued;
      // the small receive buffer bounds the ICMP error queue, which the filter does not see.
      attachDropAllFilter(fd);
      setOption(fd, SOL_SOCKET, SO_RCVBUF, int32(RECEIVE_BUFFER_BYTES), 'SO_RCVBUF');
      return new RawUdpSocket(fd, family);
    } catch (err) {
      sys.close(fd);
      throw err;
    }
  }

  /** 0, or the errno of a failed connect (ENETUNREACH without a route). Port 0: raw sockets have none. */
  connect(address: Buffer): number {
    return sys.connect(this.fd, address, address.length) === 0 ? 0 : koffi.errno();
  }

  /** Messages taken by the kernel (≥ 1), or -errno. */
  sendBatch(vector: MessageVector, first: number, count: number): number {
    return sendEntries(this.fd, vector, first, count);
  }

  /**
   * Reads what IP_RECVERR queued (ICMP errors from the path or the target, one entry per
   * error) and returns how many. The kernel queues an ICMP error on every raw UDP socket
   * whose addresses match the quoted packet, so other UDP traffic of this host to the
   * target (port 9 in the bench) draws entries too: queuedOurs counts those whose quoted UDP
   * header goes to `targetPort`, queuedErrno holds the last one's errno.
   */
  drainErrorQueue(targetPort: number): number {
    const v = this.errMsg.view;
    let entries = 0;
    this.queuedOurs = 0;
    for (; entries < ERROR_QUEUE_READS; entries++) {
      v.writeUIntLE(ERR_CONTROL_LEN, MSGHDR_CONTROLLEN, 6);
      const quoted = Number(sys.recvmsg(this.fd, this.errMsg.address, MSG_ERRQUEUE | MSG_DONTWAIT));
      if (quoted < 0) break;
      // The data is the quoted datagram: from its IPv4 header (IP_HDRINCL), else from its UDP header.
      const udp = ERR_DATA_AT + (this.ipHeaderLength > 0 ? (v[ERR_DATA_AT]! & 0x0f) * 4 : 0);
      if (quoted < udp - ERR_DATA_AT + 4 || v.readUInt16BE(udp + 2) !== targetPort) continue;
      this.queuedOurs++;
      // The first cmsg is IP_RECVERR/IPV6_RECVERR: a 16-byte cmsghdr, then sock_extended_err.
      if (v.readUInt32LE(MSGHDR_CONTROLLEN) >= CMSG_HEADER_LEN + 4) this.queuedErrno = v.readUInt32LE(ERR_CONTROL_AT + CMSG_HEADER_LEN);
    }
    return entries;
  }

  close(): void {
    if (this.fd >= 0) sys.close(this.fd);
    this.fd = -1;
    this.errMsg.release();
  }
}

const AF_PACKET = 17;
/** sockaddr_ll: family, protocol (big-endian), ifindex, then hatype, pkttype, halen, addr. */
const SOCKADDR_LL_LEN = 20;
const ETH_P_IP = 0x0800;

/**
 * A non-blocking AF_PACKET socket that sends whole Ethernet frames on one device
 * (link-path.ts has why and when): the IP layer's route lookup, netfilter hooks and
 * neighbour lookup are skipped, the device's qdisc is not (production traffic keeps its
 * queueing and the copies its back-pressure: a full qdisc fails the send with ENOBUFS).
 * Protocol 0: it receives nothing.
 */
export class PacketSendSocket {
  private constructor(private fd: number, readonly ifindex: number) {}

  static open(ifindex: number, sendBufferBytes: number): PacketSendSocket {
    const fd = sys.socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, 0) as number;
    if (fd < 0) throw new MirrorflowError(ErrorCode.MIRROR_SOCKET, `packet socket (needs CAP_NET_RAW): ${errnoText(koffi.errno())}`);
    try {
      const sll = Buffer.alloc(SOCKADDR_LL_LEN);
      sll.writeUInt16LE(AF_PACKET, 0);
      sll.writeUInt16BE(ETH_P_IP, 2);
      sll.writeInt32LE(ifindex, 4);
      if (sys.bind(fd, sll, sll.length) !== 0) throw new MirrorflowError(ErrorCode.MIRROR_SOCKET, `packet socket bind to ifindex ${ifindex}: ${errnoText(koffi.errno())}`);
      setOption(fd, SOL_SOCKET, SO_SNDBUF, int32(sendBufferBytes), 'SO_SNDBUF');
      return new PacketSendSocket(fd, ifindex);
    } catch (err) {
      sys.close(fd);
      throw err;
    }
  }

  /** Messages taken by the kernel (≥ 1), or -errno. */
  sendBatch(vector: MessageVector, first: number, count: number): number {
    return sendEntries(this.fd, vector, first, count);
  }

  close(): void {
    if (this.fd >= 0) sys.close(this.fd);
    this.fd = -1;
  }
}

/**
 * The IPv4 header an IP_HDRINCL socket sends for us, as five big-endian words: version 4,
 * 20 bytes, DF (path MTU discovery, as a UDP socket sends), TTL 64, protocol UDP, the
 * target. Zero source address, total length, id and checksum: the kernel fills them in.
 */
export function ipv4HeaderTemplate(target: string): Uint32Array {
  const sa = socketAddress(4, target, 0);
  return Uint32Array.of(0x45000000, IPV4_DF, (IPV4_TTL << 24) | (IPPROTO_UDP << 16), 0, sa.readUInt32BE(4));
}

/** SO_ATTACH_FILTER with one classic BPF instruction, `ret #0`: accept nothing. */
function attachDropAllFilter(fd: number): void {
  const mem = new NativeMemory(SOCK_FPROG_LEN + SOCK_FILTER_LEN);
  try {
    // struct sock_fprog { u16 len; struct sock_filter *filter; }, then the one sock_filter.
    mem.view.writeUInt16LE(1, 0);
    mem.view.writeUIntLE(mem.address + SOCK_FPROG_LEN, 8, 6);
    mem.view.writeUInt16LE(BPF_RET_K, SOCK_FPROG_LEN);
    mem.view.writeUInt32LE(0, SOCK_FPROG_LEN + 4);
    if (sys.setsockoptAt(fd, SOL_SOCKET, SO_ATTACH_FILTER, mem.address, SOCK_FPROG_LEN) !== 0) {
      throw new MirrorflowError(ErrorCode.MIRROR_SOCKET, `setsockopt SO_ATTACH_FILTER: ${errnoText(koffi.errno())}`);
    }
  } finally {
    mem.release();
  }
}

/** sendmmsg of `count` entries of `vector` from `first`: messages taken (≥ 1), or -errno. */
function sendEntries(fd: number, vector: MessageVector, first: number, count: number): number {
  const sent = sys.sendmmsg(fd, vector.entry(first), count, 0) as number;
  return sent >= 0 ? sent : -koffi.errno();
}

function setOption(fd: number, level: number, name: number, value: Buffer, what: string): void {
  if (sys.setsockopt(fd, level, name, value, value.length) !== 0) throw new MirrorflowError(ErrorCode.MIRROR_SOCKET, `setsockopt ${what}: ${errnoText(koffi.errno())}`);
}
