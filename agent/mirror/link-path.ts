// The link-layer path to an IPv4 mirror target, for sending copies past the IP layer
// (PacketSendSocket in udp-socket.ts): the kernel's route to the target (egress device,
// next hop, source address) and the next hop's neighbour entry (its MAC). Asked of the
// kernel over NETLINK_ROUTE once a second per target (RTM_GETROUTE, RTM_GETNEIGH,
// RTM_GETLINK: three requests the kernel answers in the send, tens of microseconds; the
// first version ran iproute2, and its three spawns a second cost 4 % of the agent at 400k
// copies/s).
//
// The kernel owns resolution: a path exists only while the next hop's entry holds a MAC in a
// state the kernel itself would send to (REACHABLE, STALE, DELAY, PROBE, PERMANENT); without
// one the sender goes through the IP layer, whose sends make the kernel resolve it. Only
// Ethernet devices qualify (no tunnels, WireGuard or IPoIB, which have no MAC header).
import { errnoText } from '../libc.js';
import { NLMSG_HDRLEN, attributeString, forEachAttribute, netlinkSys, openNetlinkRoute, requestOne } from '../netlink.js';

const AF_INET = 2;
const RTM_NEWLINK = 16;
const RTM_GETLINK = 18;
const RTM_NEWROUTE = 24;
const RTM_GETROUTE = 26;
const RTM_NEWNEIGH = 28;
const RTM_GETNEIGH = 30;
// struct rtmsg: u8 family, dst_len, src_len, tos, table, protocol, scope, type; u32 flags.
const RTMSG_LEN = 12;
const RTM_TYPE = 7;
const RTN_UNICAST = 1;
/** rtm_type names (linux/rtnetlink.h) for the log. */
const ROUTE_TYPES: Record<number, string> = { 2: 'local', 3: 'broadcast', 4: 'anycast', 5: 'multicast', 6: 'blackhole', 7: 'unreachable', 8: 'prohibit', 9: 'throw' };
const RTA_DST = 1;
const RTA_OIF = 4;
const RTA_GATEWAY = 5;
const RTA_PREFSRC = 7;
// struct ndmsg: u8 family, pad, u16 pad, i32 ifindex, u16 state, u8 flags, u8 type.
const NDMSG_LEN = 12;
const NDM_STATE = 8;
const NDA_DST = 1;
const NDA_LLADDR = 2;
const NUD_REACHABLE = 0x02;
const NUD_STALE = 0x04;
const NUD_DELAY = 0x08;
const NUD_PROBE = 0x10;
const NUD_PERMANENT = 0x80;
const SENDABLE = NUD_REACHABLE | NUD_STALE | NUD_DELAY | NUD_PROBE | NUD_PERMANENT;
// struct ifinfomsg: u8 family, u8 pad, u16 type, i32 index, u32 flags, u32 change.
const IFINFO_LEN = 16;
const IFI_TYPE = 2;
const IFI_INDEX = 4;
const IFLA_ADDRESS = 1;
const IFLA_IFNAME = 3;
const ARPHRD_ETHER = 1;
const ETHERTYPE_IPV4 = [0x08, 0x00];

export interface LinkPath {
  /** Egress device. */
  ifindex: number;
  device: string;
  /** Ethernet header: destination (the next hop's MAC), source (the device's), EtherType IPv4. */
  ethernet: Buffer;
  /** IPv4 source address the kernel would pick (the route's prefsrc), host order. */
  sourceAddress: number;
  /** The next hop's entry is STALE: the kernel should see some of our traffic, so that it re-confirms the MAC. */
  stale: boolean;
}

function ipv4Text(buf: Buffer, at: number): string {
  return `${buf[at]}.${buf[at + 1]}.${buf[at + 2]}.${buf[at + 3]}`;
}

/** One target's questions to the kernel, on its own netlink socket (opened lazily, closed with close()). */
export class LinkPathResolver {
  private fd = -1;
  private seq = 1;
  private readonly buf = Buffer.alloc(16 * 1024);
  private readonly target: Buffer;

  constructor(target: string) {
    this.target = Buffer.from(target.split('.').map(Number));
  }

  /** The path, or why there is none (for the log); never throws. */
  resolve(): LinkPath | string {
    try {
      if (this.fd < 0) this.fd = openNetlinkRoute(true, 'link path');
      return this.ask();
    } catch (err) {
      return (err as Error).message;
    }
  }

  close(): void {
    if (this.fd >= 0) netlinkSys.close(this.fd);
    this.fd = -1;
  }

  private ask(): LinkPath | string {
    const buf = this.buf;
    // The route: RTM_GETROUTE for the target's /32, as `ip route get` asks.
    const route = Buffer.alloc(NLMSG_HDRLEN + RTMSG_LEN + 8);
    route[NLMSG_HDRLEN] = AF_INET;
    route[NLMSG_HDRLEN + 1] = 32;
    route.writeUInt16LE(8, NLMSG_HDRLEN + RTMSG_LEN);
    route.writeUInt16LE(RTA_DST, NLMSG_HDRLEN + RTMSG_LEN + 2);
    this.target.copy(route, NLMSG_HDRLEN + RTMSG_LEN + 4);
    let at = requestOne(this.fd, route, RTM_GETROUTE, RTM_NEWROUTE, this.seq++, buf);
    if (at < 0) return `no route (${errnoText(-at)})`;
    const routeType = buf[at + NLMSG_HDRLEN + RTM_TYPE]!;
    if (routeType !== RTN_UNICAST) return `route type ${ROUTE_TYPES[routeType] ?? routeType} (not unicast)`;
    let ifindex = 0;
    let gateway: Buffer | undefined;
    let source: number | undefined;
    forEachAttribute(buf, at + NLMSG_HDRLEN + RTMSG_LEN, at + buf.readUInt32LE(at), (type, a, len) => {
      if (type === RTA_OIF && len >= 4) ifindex = buf.readInt32LE(a);
      else if (type === RTA_GATEWAY && len === 4) gateway = Buffer.from(buf.subarray(a, a + 4));
      else if (type === RTA_PREFSRC && len === 4) source = buf.readUInt32BE(a);
    });
    if (ifindex <= 0 || source === undefined) return 'route has no device or source address';

    // The device: Ethernet, and its MAC.
    const linkReq = Buffer.alloc(NLMSG_HDRLEN + IFINFO_LEN);
    linkReq.writeInt32LE(ifindex, NLMSG_HDRLEN + IFI_INDEX);
    at = requestOne(this.fd, linkReq, RTM_GETLINK, RTM_NEWLINK, this.seq++, buf);
    if (at < 0) return `device ${ifindex}: ${errnoText(-at)}`;
    let device = String(ifindex);
    let deviceMac: Buffer | undefined;
    const linkType = buf.readUInt16LE(at + NLMSG_HDRLEN + IFI_TYPE);
    forEachAttribute(buf, at + NLMSG_HDRLEN + IFINFO_LEN, at + buf.readUInt32LE(at), (type, a, len) => {
      if (type === IFLA_IFNAME) device = attributeString(buf, a, len);
      else if (type === IFLA_ADDRESS && len === 6) deviceMac = Buffer.from(buf.subarray(a, a + 6));
    });
    if (linkType !== ARPHRD_ETHER || deviceMac === undefined) return `device ${device} is not Ethernet`;

    // The next hop's neighbour entry: RTM_GETNEIGH for one address (`ip neigh get`).
    const nextHop = gateway ?? this.target;
    const neigh = Buffer.alloc(NLMSG_HDRLEN + NDMSG_LEN + 8);
    neigh[NLMSG_HDRLEN] = AF_INET;
    neigh.writeInt32LE(ifindex, NLMSG_HDRLEN + 4);
    neigh.writeUInt16LE(8, NLMSG_HDRLEN + NDMSG_LEN);
    neigh.writeUInt16LE(NDA_DST, NLMSG_HDRLEN + NDMSG_LEN + 2);
    nextHop.copy(neigh, NLMSG_HDRLEN + NDMSG_LEN + 4);
    at = requestOne(this.fd, neigh, RTM_GETNEIGH, RTM_NEWNEIGH, this.seq++, buf);
    if (at < 0) return `neighbour ${ipv4Text(nextHop, 0)} not resolved (${errnoText(-at)})`;
    const state = buf.readUInt16LE(at + NLMSG_HDRLEN + NDM_STATE);
    let mac: Buffer | undefined;
    forEachAttribute(buf, at + NLMSG_HDRLEN + NDMSG_LEN, at + buf.readUInt32LE(at), (type, a, len) => {
      if (type === NDA_LLADDR && len === 6) mac = buf.subarray(a, a + 6);
    });
    if ((state & SENDABLE) === 0 || mac === undefined) return `neighbour ${ipv4Text(nextHop, 0)} not resolved (state 0x${state.toString(16)})`;
    return {
      ifindex, device, sourceAddress: source,
      ethernet: Buffer.concat([mac, deviceMac, Buffer.from(ETHERTYPE_IPV4)]),
      stale: state === NUD_STALE,
    };
  }
}

/** Same device, MAC addresses and source: copies already in a batch stay right. */
export function samePath(a: LinkPath | undefined, b: LinkPath | undefined): boolean {
  return a === b || (a !== undefined && b !== undefined && a.ifindex === b.ifindex && a.sourceAddress === b.sourceAddress && a.ethernet.equals(b.ethernet));
}
