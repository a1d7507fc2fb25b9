// NETLINK_ROUTE through libc (koffi): what the link watcher (capture/link-watcher.ts) and the
// sender's link path (mirror/link-path.ts) share: the socket, the message and attribute
// walks, and one request answered by one message. Layouts are Linux's uapi
// (linux/netlink.h, linux/rtnetlink.h); constants are identical on x86-64 and aarch64.
import koffi from 'koffi';
import { SOCK_CLOEXEC, SOCK_NONBLOCK, errnoText, libc, socketCalls } from './libc.js';

export const netlinkSys = {
  ...socketCalls,
  send: libc.func('int64_t send(int fd, const void *buf, uint64_t len, int flags)'),
  recv: libc.func('int64_t recv(int fd, void *buf, uint64_t len, int flags)'),
};

export const AF_NETLINK = 16;
const SOCK_RAW = 3;
const NETLINK_ROUTE = 0;
// struct nlmsghdr: u32 len, u16 type, u16 flags, u32 seq, u32 pid.
export const NLMSG_HDRLEN = 16;
const NLMSG_NOOP = 1;
export const NLMSG_ERROR = 2;
export const NLMSG_DONE = 3;
export const NLM_F_REQUEST = 1;
export const NLM_F_DUMP = 0x300;
const EINTR = 4;
const EAGAIN = 11;

export const align4 = (n: number) => (n + 3) & ~3;

/** An AF_NETLINK / NETLINK_ROUTE socket; throws with the errno (prefixed by `what`). */
export function openNetlinkRoute(nonblocking: boolean, what: string): number {
  const fd = netlinkSys.socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | (nonblocking ? SOCK_NONBLOCK : 0), NETLINK_ROUTE) as number;
  if (fd < 0) throw new Error(`${what}: AF_NETLINK socket: ${errnoText(koffi.errno())}`);
  return fd;
}

/** Calls `each(type, offset, length)` for every netlink message in buf[0..n). */
export function forEachMessage(buf: Buffer, n: number, each: (type: number, at: number, len: number) => void): void {
  for (let at = 0; at + NLMSG_HDRLEN <= n;) {
    const len = buf.readUInt32LE(at);
    if (len < NLMSG_HDRLEN || at + len > n) return;
    const type = buf.readUInt16LE(at + 4);
    if (type !== NLMSG_NOOP) each(type, at, len);
    at += align4(len);
  }
}

/** Calls `each(type, payloadOffset, payloadLength)` for every rtattr in buf[start..end). */
export function forEachAttribute(buf: Buffer, start: number, end: number, each: (type: number, at: number, len: number) => void): void {
  for (let a = start; a + 4 <= end;) {
    const alen = buf.readUInt16LE(a);
    if (alen < 4 || a + alen > end) return;
    each(buf.readUInt16LE(a + 2) & 0x3fff, a + 4, alen - 4);
    a += align4(alen);
  }
}

/** A NUL-terminated string attribute's text (interface names). */
export function attributeString(buf: Buffer, at: number, len: number): string {
  const nul = buf.indexOf(0, at);
  return buf.toString('latin1', at, nul < 0 || nul > at + len ? at + len : nul);
}

/** Writes the nlmsghdr of a request: its length, type, flags and sequence number. */
export function writeRequestHeader(req: Buffer, type: number, flags: number, seq: number): void {
  req.writeUInt32LE(req.length, 0);
  req.writeUInt16LE(type, 4);
  req.writeUInt16LE(flags, 6);
  req.writeUInt32LE(seq, 8);
}

/**
 * Sends one request (its nlmsghdr's length, flags and sequence number are written here) on
 * a non-blocking socket and reads the answer, which the kernel queues before send()
 * returns: the offset of the answering message of `answerType` in `buf`, or -errno (the
 * kernel's NLMSG_ERROR, or EAGAIN when nothing came).
 */
export function requestOne(fd: number, req: Buffer, type: number, answerType: number, seq: number, buf: Buffer): number {
  writeRequestHeader(req, type, NLM_F_REQUEST, seq);
  if (Number(netlinkSys.send(fd, req, req.length, 0)) !== req.length) return -koffi.errno();
  for (;;) {
    const n = Number(netlinkSys.recv(fd, buf, buf.length, 0));
    if (n < 0) {
      const errno = koffi.errno();
      if (errno === EINTR) continue;
      return -(errno === 0 ? EAGAIN : errno);
    }
    let found = 0;
    forEachMessage(buf, n, (t, at) => {
      if (found !== 0 || buf.readUInt32LE(at + 8) !== seq) return;
      if (t === answerType) found = at + 1;
      else if (t === NLMSG_ERROR) found = buf.readInt32LE(at + NLMSG_HDRLEN) || -EAGAIN;
    });
    // An answer of another sequence (an earlier request that timed out) is skipped.
    if (found > 0) return found - 1;
    if (found < 0) return found;
  }
}
