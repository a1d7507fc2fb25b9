// The host's network interfaces as they come and go, from the kernel's own link
// notifications: an AF_NETLINK / NETLINK_ROUTE socket in the RTMGRP_LINK group gets an
// RTM_NEWLINK or RTM_DELLINK message for every link created, deleted, renamed, or taken
// down or up, as it happens (no polling). The socket is watched by the capture wake-up
// thread (ring-waker.ts), so an event reaches the main thread within milliseconds.
//
// The watcher keeps the present links (ifindex → name, up) from a dump taken at
// open, applies each message to it and reports only what changed. Should the kernel drop
// notifications (the socket's receive queue overflowed in a burst: recv fails with ENOBUFS)
// it dumps again and reports the difference, so no change is lost, only coalesced.
// Layouts are Linux's uapi (linux/netlink.h, linux/rtnetlink.h, linux/if_link.h).
import koffi from 'koffi';
import { SOL_SOCKET, errnoText, int32 } from '../libc.js';
import {
  AF_NETLINK, NLMSG_DONE, NLMSG_ERROR, NLMSG_HDRLEN, NLM_F_DUMP, NLM_F_REQUEST, attributeString, forEachAttribute, forEachMessage,
  netlinkSys as sys, openNetlinkRoute, writeRequestHeader,
} from '../netlink.js';
import { ringWaker, type Wakeable } from './ring-waker.js';

const RTMGRP_LINK = 1;
const SO_RCVBUFFORCE = 33;
const SO_RCVBUF = 8;
const EAGAIN = 11;
const EINTR = 4;
const ENOBUFS = 105;
const RTM_NEWLINK = 16;
const RTM_DELLINK = 17;
const RTM_GETLINK = 18;
// struct ifinfomsg: u8 family, u8 pad, u16 type, i32 index, u32 flags, u32 change.
const IFINFO_LEN = 16;
const IFI_INDEX = 4;
const IFI_FLAGS = 8;
const IFLA_IFNAME = 3;
const IFF_UP = 0x1;
const IFF_LOWER_UP = 0x10000;
/** One receive holds a dump part (the kernel fills up to ~32 KiB per skb) or many events. */
const RECV_BUFFER_BYTES = 64 * 1024;
/** Room for a burst of notifications (~1.5 KiB each: 4 MiB ≈ 2,700 links changing at once). */
const SOCKET_BUFFER_BYTES = 4 * 1024 * 1024;

export interface Link {
  ifindex: number;
  name: string;
  /** IFF_UP and IFF_LOWER_UP: up and with carrier (a veth whose peer is down is not). */
  up: boolean;
}

export type LinkEvent =
  | { kind: 'appeared'; link: Link }
  | { kind: 'vanished'; link: Link }
  | { kind: 'renamed'; link: Link; from: string }
  | { kind: 'down'; link: Link }
  | { kind: 'up'; link: Link };

export interface LinkWatcherOptions {
  /** Changes read in one wake-up, in the kernel's order (a burst of link events arrives as one batch). */
  onEvents: (events: LinkEvent[]) => void;
  onWarning: (msg: string) => void;
}

/** The links of the network namespace the watcher was opened in, followed as they change. */
export class LinkWatcher implements Wakeable {
  private readonly links = new Map<number, Link>();
  private readonly buf = Buffer.alloc(RECV_BUFFER_BYTES);
  private slot = -1;
  private pollTimer: NodeJS.Timeout | undefined;
  private closed = false;
  private seq = 1;

  /**
   * Opens both sockets in the calling thread's network namespace (the links watched are
   * that namespace's), subscribes, then dumps the present links. Throws naming the call.
   */
  static open(opts: LinkWatcherOptions): LinkWatcher {
    const events = openNetlinkRoute(true, 'link watcher');
    let dump: number;
    try {
      if (sys.setsockopt(events, SOL_SOCKET, SO_RCVBUFFORCE, int32(SOCKET_BUFFER_BYTES), 4) !== 0) {
        sys.setsockopt(events, SOL_SOCKET, SO_RCVBUF, int32(SOCKET_BUFFER_BYTES), 4);
      }
      bindGroups(events, RTMGRP_LINK);
      dump = openNetlinkRoute(false, 'link watcher');
    } catch (err) {
      sys.close(events);
      throw err;
    }
    try {
      return new LinkWatcher(events, dump, opts);
    } catch (err) {
      // The first dump failed (send, receive or a kernel error): nothing may keep the sockets.
      sys.close(events);
      sys.close(dump);
      throw err;
    }
  }

  private constructor(private readonly fd: number, private readonly dumpFd: number, private readonly opts: LinkWatcherOptions) {
    // Subscribed before the dump: a change during it is in the queue, applied after.
    for (const link of this.dump()) this.links.set(link.ifindex, link);
    this.slot = ringWaker.watch(fd, this);
    if (this.slot < 0) this.wakerFailed('not available');
  }

  /** The present links by ifindex (do not keep: it changes with every event). */
  present(): ReadonlyMap<number, Link> {
    return this.links;
  }

  /** Names of the present links. */
  names(): string[] {
    return [...this.links.values()].map((l) => l.name);
  }

  wake(): void {
    if (this.closed) return;
    const events = this.readEvents();
    if (this.slot >= 0) ringWaker.rearm(this.fd, this.slot);
    if (events.length > 0) this.opts.onEvents(events);
  }

  wakerFailed(reason: string): void {
    this.slot = -1;
    if (this.closed) return;
    this.opts.onWarning(`link watcher wake-up thread failed (${reason}); reading link events every 100 ms instead`);
    this.pollTimer = setInterval(() => this.wake(), 100);
    this.pollTimer.unref();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.slot >= 0) ringWaker.unwatch(this.fd, this.slot);
    if (this.pollTimer !== undefined) clearInterval(this.pollTimer);
    sys.close(this.fd);
    sys.close(this.dumpFd);
  }

  /** Everything queued on the event socket, applied to the known links. */
  private readEvents(): LinkEvent[] {
    const out: LinkEvent[] = [];
    for (;;) {
      const n = Number(sys.recv(this.fd, this.buf, this.buf.length, 0));
      if (n < 0) {
        const errno = koffi.errno();
        if (errno === EINTR) continue;
        if (errno === EAGAIN) return out;
        if (errno === ENOBUFS) {
          // The kernel dropped notifications: what is present now tells what they said.
          this.opts.onWarning('link notifications overflowed the socket; re-reading every link');
          out.push(...this.resync());
          continue;
        }
        this.opts.onWarning(`link watcher recv: ${errnoText(errno)}`);
        return out;
      }
      forEachMessage(this.buf, n, (type, at, len) => {
        if (type === RTM_NEWLINK) this.applyNew(parseLink(this.buf, at, len), out);
        else if (type === RTM_DELLINK) this.applyDel(parseLink(this.buf, at, len), out);
      });
    }
  }

  private applyNew(link: Link | undefined, out: LinkEvent[]): void {
    if (link === undefined) return;
    const known = this.links.get(link.ifindex);
    this.links.set(link.ifindex, link);
    if (known === undefined) out.push({ kind: 'appeared', link });
    else {
      if (known.name !== link.name) out.push({ kind: 'renamed', link, from: known.name });
      if (known.up !== link.up) out.push({ kind: link.up ? 'up' : 'down', link });
    }
  }

  private applyDel(link: Link | undefined, out: LinkEvent[]): void {
    if (link === undefined) return;
    const known = this.links.get(link.ifindex);
    if (known === undefined) return;
    this.links.delete(link.ifindex);
    out.push({ kind: 'vanished', link: known });
  }

  /** Dumps again and turns the difference with what was known into events. */
  private resync(): LinkEvent[] {
    const out: LinkEvent[] = [];
    const now = new Map(this.dump().map((l) => [l.ifindex, l]));
    for (const link of [...this.links.values()]) if (!now.has(link.ifindex)) this.applyDel(link, out);
    for (const link of now.values()) this.applyNew(link, out);
    return out;
  }

  /** Every link of the namespace now (RTM_GETLINK dump on the blocking socket). */
  private dump(): Link[] {
    const req = Buffer.alloc(NLMSG_HDRLEN + IFINFO_LEN);
    const seq = this.seq++;
    writeRequestHeader(req, RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, seq);
    if (Number(sys.send(this.dumpFd, req, req.length, 0)) !== req.length) throw new Error(`link dump: send: ${errnoText(koffi.errno())}`);
    const links: Link[] = [];
    for (let done = false; !done;) {
      const n = Number(sys.recv(this.dumpFd, this.buf, this.buf.length, 0));
      if (n < 0) {
        if (koffi.errno() === EINTR) continue;
        throw new Error(`link dump: recv: ${errnoText(koffi.errno())}`);
      }
      forEachMessage(this.buf, n, (type, at, len) => {
        if (this.buf.readUInt32LE(at + 8) !== seq) return;
        if (type === NLMSG_DONE) done = true;
        else if (type === NLMSG_ERROR) throw new Error(`link dump: kernel error ${errnoText(-this.buf.readInt32LE(at + NLMSG_HDRLEN))}`);
        else if (type === RTM_NEWLINK) {
          const link = parseLink(this.buf, at, len);
          if (link !== undefined) links.push(link);
        }
      });
    }
    return links;
  }
}

function bindGroups(fd: number, groups: number): void {
  // struct sockaddr_nl: u16 family, u16 pad, u32 pid (0: the kernel assigns), u32 groups.
  const addr = Buffer.alloc(12);
  addr.writeUInt16LE(AF_NETLINK, 0);
  addr.writeUInt32LE(groups, 8);
  if (sys.bind(fd, addr, addr.length) !== 0) throw new Error(`link watcher: bind to RTMGRP_LINK: ${errnoText(koffi.errno())}`);
}

/** The link an RTM_NEWLINK/RTM_DELLINK message at `at` describes; undefined without a name. */
function parseLink(buf: Buffer, at: number, len: number): Link | undefined {
  const info = at + NLMSG_HDRLEN;
  if (len < NLMSG_HDRLEN + IFINFO_LEN) return undefined;
  const ifindex = buf.readInt32LE(info + IFI_INDEX);
  const flags = buf.readUInt32LE(info + IFI_FLAGS);
  let name: string | undefined;
  forEachAttribute(buf, info + IFINFO_LEN, at + len, (type, a, alen) => {
    if (type === IFLA_IFNAME && name === undefined) name = attributeString(buf, a, alen);
  });
  if (name === undefined) return undefined;
  return { ifindex, name, up: (flags & IFF_UP) !== 0 && (flags & IFF_LOWER_UP) !== 0 };
}
