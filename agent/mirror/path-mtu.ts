// The MTU of the path to a mirror target, from the kernel's route to it: the route's own
// mtu metric when set, else the MTU of the egress device. Read at start and on reload.
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { promisify } from 'node:util';

const run = promisify(execFile);
export const DEFAULT_PATH_MTU = 1500;

export interface PathMtu {
  mtu: number;
  /** Where the number came from, for the log: "route", "device eth0" or why the default was used. */
  reason: string;
}

interface RouteEntry {
  dev?: string;
  metrics?: Array<{ mtu?: number }>;
}

/** Never throws: a target without a route yet gets the default and says why. */
export async function pathMtu(address: string): Promise<PathMtu> {
  let route: RouteEntry | undefined;
  try {
    // execFile, no shell: the address was validated as an IP literal by the config schema.
    const { stdout } = await run('ip', ['-j', 'route', 'get', address]);
    route = (JSON.parse(stdout) as RouteEntry[])[0];
  } catch (err) {
    // Without iproute2 there is no way to ask; say so rather than blame the route.
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      return { mtu: DEFAULT_PATH_MTU, reason: 'default: the ip command (iproute2) is not installed' };
    }
    return { mtu: DEFAULT_PATH_MTU, reason: `default: no route to ${address} (${(err as Error).message.split('\n')[0]})` };
  }
  const routeMtu = route?.metrics?.find((m) => m.mtu !== undefined)?.mtu;
  if (routeMtu) return { mtu: routeMtu, reason: 'route' };
  if (!route?.dev) return { mtu: DEFAULT_PATH_MTU, reason: 'default: route has no device' };
  try {
    const mtu = Number((await readFile(`/sys/class/net/${route.dev}/mtu`, 'utf8')).trim());
    if (Number.isInteger(mtu) && mtu > 0) return { mtu, reason: `device ${route.dev}` };
  } catch {
    // fall through to the default
  }
  return { mtu: DEFAULT_PATH_MTU, reason: `default: cannot read the MTU of ${route.dev}` };
}
