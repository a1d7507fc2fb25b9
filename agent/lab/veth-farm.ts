// Many veth pairs at once, for the e2e test and the bench of issue 15 (a node with hundreds
// of pod interfaces that come and go):
//
//   mf-vfa-XXXX (the agent's)                    mf-vfb-XXXX (the peers)
//   vf0 ... vfN  ------------ veth ------------  vp0 ... vpN
//   up0          ------------ veth ------------  up1 (mirror target 198.19.255.2)
//
// Pair k has 198.18.0.0/15 + 4k: .1 on vfk, .2 on vpk (/30); static neighbours and IPv6 off,
// so nothing crosses a pair but the traffic a test sends. Pairs are created and deleted in
// batches (`ip -batch`), so 200 take well under a second. Every name carries a random suffix
// in its namespace name only: interface names live in the lab's own namespaces.
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run, runInNetns, spawnProcess, type RunOptions, type RunResult, type SpawnOptions, type Spawned } from '../exec.js';

const BASE = (198 << 24) | (18 << 16);
/** 198.18.0.0/15 in /30s. */
const MAX_PAIRS = 32_768;
export const FARM_TARGET = '198.19.255.2';
const UPLINK_ADDR = '198.19.255.1';

function v4(n: number): string {
  return [n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff].join('.');
}

function mac(side: number, k: number): string {
  return ['02', side.toString(16).padStart(2, '0'), ...[k >>> 16, (k >>> 8) & 0xff, k & 0xff].map((b) => b.toString(16).padStart(2, '0')), '01'].join(':');
}

export interface FarmPair {
  k: number;
  /** In the agent's namespace. */
  name: string;
  peer: string;
  address: string;
  peerAddress: string;
}

export interface LinkCounters {
  rx: number;
  tx: number;
}

export type FarmRole = 'src' | 'dst';

export interface VethFarm {
  /** The agent's namespace (role src) and the peers' (role dst). */
  ns: Record<FarmRole, string>;
  workDir: string;
  /** The uplink in the agent's namespace, the way to FARM_TARGET. */
  uplink: string;
  /** Creates `count` pairs (batched); returns them. */
  add(count: number): Promise<FarmPair[]>;
  /** Deletes these pairs (deleting one end deletes both). */
  remove(pairs: readonly FarmPair[]): Promise<void>;
  /** rx/tx packets of every interface of the agent's namespace, by name (one `ip -s -j link`). */
  counters(): Promise<Map<string, LinkCounters>>;
  exec(role: FarmRole, cmd: string, args: readonly string[], opts?: RunOptions): Promise<RunResult>;
  spawn(role: FarmRole, cmd: string, args: readonly string[], opts?: Omit<SpawnOptions, 'netns'>): Spawned;
  destroy(): Promise<void>;
}

async function batch(ns: string, lines: string[]): Promise<void> {
  if (lines.length > 0) await run('ip', ['-n', ns, '-batch', '-'], { input: `${lines.join('\n')}\n`, timeoutMs: 60_000 });
}

export async function createVethFarm(): Promise<VethFarm> {
  const suffix = randomBytes(2).toString('hex');
  const ns = { src: `mf-vfa-${suffix}`, dst: `mf-vfb-${suffix}` };
  const workDir = await mkdtemp(join(tmpdir(), `mf-vf-${suffix}-`));
  const spawned: Spawned[] = [];
  let next = 0;

  const destroy = async () => {
    for (const p of spawned) if (p.running) await p.stop('SIGKILL').catch(() => undefined);
    for (const name of Object.values(ns)) {
      const pids = await run('ip', ['netns', 'pids', name]).then((r) => r.stdout.split(/\s+/).filter(Boolean), () => []);
      for (const pid of pids) {
        try {
          process.kill(Number(pid), 'SIGKILL');
        } catch {
          // gone already
        }
      }
      await run('ip', ['netns', 'del', name]).catch(() => undefined);
    }
    await rm(workDir, { recursive: true, force: true });
  };

  const farm: VethFarm = {
    ns,
    workDir,
    uplink: 'up0',
    add: async (count) => {
      if (next + count > MAX_PAIRS) throw new Error(`veth farm: at most ${MAX_PAIRS} pairs`);
      const pairs: FarmPair[] = Array.from({ length: count }, (_, i) => {
        const k = next + i;
        return { k, name: `vf${k}`, peer: `vp${k}`, address: v4(BASE + 4 * k + 1), peerAddress: v4(BASE + 4 * k + 2) };
      });
      next += count;
      await batch(ns.src, pairs.map((p) => `link add ${p.name} address ${mac(0xaa, p.k)} type veth peer name ${p.peer} address ${mac(0xbb, p.k)} netns ${ns.dst}`));
      await batch(ns.dst, pairs.flatMap((p) => [
        `addr add ${p.peerAddress}/30 dev ${p.peer}`, `link set ${p.peer} up`,
        `neigh replace ${p.address} lladdr ${mac(0xaa, p.k)} dev ${p.peer} nud permanent`,
      ]));
      await batch(ns.src, pairs.flatMap((p) => [
        `addr add ${p.address}/30 dev ${p.name}`, `link set ${p.name} up`,
        `neigh replace ${p.peerAddress} lladdr ${mac(0xbb, p.k)} dev ${p.name} nud permanent`,
      ]));
      return pairs;
    },
    remove: (pairs) => batch(ns.src, pairs.map((p) => `link del ${p.name}`)),
    counters: async () => {
      const { stdout } = await run('ip', ['-n', ns.src, '-s', '-j', 'link', 'show']);
      const links = JSON.parse(stdout) as Array<{ ifname: string; stats64: { rx: { packets: number }; tx: { packets: number } } }>;
      return new Map(links.map((l) => [l.ifname, { rx: l.stats64.rx.packets, tx: l.stats64.tx.packets }]));
    },
    exec: (role, cmd, args, opts) => runInNetns(ns[role], cmd, args, opts),
    spawn: (role, cmd, args, opts = {}) => {
      const p = spawnProcess(cmd, args, { ...opts, netns: ns[role] });
      spawned.push(p);
      return p;
    },
    destroy,
  };

  try {
    for (const name of Object.values(ns)) {
      await run('ip', ['netns', 'add', name]);
      // No IPv6 (no neighbour discovery, no MLD): only the test's traffic crosses a pair.
      await runInNetns(name, 'sysctl', ['-q', '-w', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1']);
      await run('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
    }
    await batch(ns.src, [
      `link add up0 address ${mac(0xaa, 0xffffff)} type veth peer name up1 address ${mac(0xbb, 0xffffff)} netns ${ns.dst}`,
      `addr add ${UPLINK_ADDR}/30 dev up0`, 'link set up0 up',
      `neigh replace ${FARM_TARGET} lladdr ${mac(0xbb, 0xffffff)} dev up0 nud permanent`,
    ]);
    await batch(ns.dst, [`addr add ${FARM_TARGET}/30 dev up1`, 'link set up1 up', `neigh replace ${UPLINK_ADDR} lladdr ${mac(0xaa, 0xffffff)} dev up1 nud permanent`]);
  } catch (err) {
    await destroy();
    throw err;
  }
  return farm;
}
