// The link-layer path to an IPv4 mirror target, for sending copies past the IP layer
// (packet-socket.ts): the kernel's route to the target (egress device, next hop, source
// address) and the next hop's neighbour entry (its MAC). Asked of iproute2, as path-mtu.ts
// does, once a second per target, off the hot path.
//
// The kernel owns resolution: a path exists only while the next hop's entry holds a MAC in a
// state the kernel itself would send to (REACHABLE, STALE, DELAY, PROBE, PERMANENT); without
// one the sender goes through the IP layer, whose sends make the kernel resolve it. Only
// Ethernet devices qualify (no tunnels, WireGuard or IPoIB, which have no MAC header).
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const run = promisify(execFile);

const SENDABLE = new Set(['REACHABLE', 'STALE', 'DELAY', 'PROBE', 'PERMANENT']);

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

interface RouteEntry {
  type?: string;
  dev?: string;
  gateway?: string;
  prefsrc?: string;
}

interface NeighbourEntry {
  lladdr?: string;
  state?: string[];
}

interface LinkEntry {
  ifindex?: number;
  address?: string;
  link_type?: string;
}

function ipv4Number(address: string): number {
  return address.split('.').reduce((n, octet) => n * 256 + Number(octet), 0);
}

async function json<T>(args: string[]): Promise<T[]> {
  // execFile, no shell: the address is an IP literal (config schema), devices are the kernel's names.
  const { stdout } = await run('ip', ['-j', ...args]);
  return stdout.trim() === '' ? [] : (JSON.parse(stdout) as T[]);
}

/** The path, or why there is none (for the log); never throws. */
export async function resolveLinkPath(target: string): Promise<LinkPath | string> {
  try {
    const route = (await json<RouteEntry>(['route', 'get', target]))[0];
    if (route?.dev === undefined || route.prefsrc === undefined) return 'no route with a device and source address';
    if (route.type !== undefined && route.type !== 'unicast') return `route type ${route.type}`;
    // iproute2, not /sys/class/net: sysfs shows the network namespace it was mounted in.
    const link = (await json<LinkEntry>(['link', 'show', 'dev', route.dev]))[0];
    if (link?.link_type !== 'ether') return `device ${route.dev} is not Ethernet (${link?.link_type ?? 'unknown'})`;
    if (link.ifindex === undefined || link.address === undefined) return `device ${route.dev} has no address`;
    const nextHop = route.gateway ?? target;
    const neighbour = (await json<NeighbourEntry>(['neigh', 'show', 'to', nextHop, 'dev', route.dev]))[0];
    const state = neighbour?.state?.find((s) => SENDABLE.has(s));
    if (neighbour?.lladdr === undefined || state === undefined) return `neighbour ${nextHop} not resolved (${neighbour?.state?.join(',') ?? 'no entry'})`;
    const mac = (m: string) => Buffer.from(m.replaceAll(':', ''), 'hex');
    const ethernet = Buffer.concat([mac(neighbour.lladdr), mac(link.address), Buffer.from([0x08, 0x00])]);
    if (ethernet.length !== 14) return `neighbour ${nextHop} has no Ethernet address`;
    return { ifindex: link.ifindex, device: route.dev, ethernet, sourceAddress: ipv4Number(route.prefsrc), stale: state === 'STALE' };
  } catch (err) {
    return (err as Error).message.split('\n')[0]!;
  }
}

/** Same device, MAC addresses and source: copies already in a batch stay right. */
export function samePath(a: LinkPath | undefined, b: LinkPath | undefined): boolean {
  return a === b || (a !== undefined && b !== undefined && a.ifindex === b.ifindex && a.sourceAddress === b.sourceAddress && a.ethernet.equals(b.ethernet));
}
