// Throwaway network namespaces for `mirrorflow lab` and the e2e tests:
//
//   mf-src-XXXX             mf-peer-XXXX (router)          mf-dst-XXXX
//   [srcIf] ---veth--- [peerSrcIf]   [peerDstIf] ---veth--- [dstIf] + vxlan device(s)
//
// src has one interface, so the VXLAN target in dst is reached through the mirrored
// interface itself (SPEC §2, the one-NIC case that must not loop). Every name carries a
// random suffix so labs and tests can run side by side. Addresses come from the
// benchmark range 198.18.0.0/15 and ULA fd00::/8, chosen per suffix.

import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run, runInNetns, spawnProcess, type RunOptions, type RunResult, type SpawnOptions, type Spawned } from '../exec.js';

/** Where each lab records its owner pid, so sweepStale() can tell abandoned labs apart. */
const STATE_DIR = '/run/mirrorflow-lab';
const NS_PREFIX = 'mf-';
const NS_ROLES = ['src', 'peer', 'dst'] as const;
const VXLAN_PORT = 4789;
const LINK_UP_TIMEOUT_MS = 5000;
/** 198.18.0.0/15 holds 8192 blocks of 16 addresses; each lab takes one (two /30 links). */
const BENCH_BASE = (198 << 24) | (18 << 16);
const BENCH_BLOCKS = 8192;
const BLOCK_SIZE = 16;
/** "mf" in hex: the ULA prefix fd00:6d66:<suffix>::/48 of one lab. */
const ULA_PREFIX = 'fd00:6d66';
/** Sensors take the upper half of the lab's block of 16 (the two /30 links use the lower). */
const SENSOR_OFFSET = 8;
const MAX_SENSORS = 8;

export type NsRole = (typeof NS_ROLES)[number];

export interface TopologyOptions {
  /** VNIs for which dst gets a decapsulating vxlan device (default [4242]). */
  vnis?: number[];
  /**
   * Turn off TSO/GSO/GRO and transmit checksumming on every veth, so captures show the
   * frames a NIC would put on the wire (segments with complete checksums): a reference for
   * tests that compare byte for byte or with kernel counters. The agent never does this to
   * a host's interfaces; tests of the agent itself run with offloads on (offload.e2e).
   */
  disableOffloads?: boolean;
  /** MTU of every veth (default the kernel's, 1500). */
  mtu?: number;
  /** Keep the work directory (captures, config) after destroy(). */
  keepFiles?: boolean;
  /**
   * Extra sensor addresses on dst's underlay interface (0..8, default 0), routed by peer: a
   * pool of sensors (`targets:`) that tests take away and bring back one address at a time.
   */
  sensors?: number;
}

export interface VxlanDevice {
  name: string;
  vni: number;
}

export interface Topology {
  suffix: string;
  ns: Record<NsRole, string>;
  /** The mirrored interface in src (its only one). */
  srcIf: string;
  srcMac: string;
  peerSrcIf: string;
  peerDstIf: string;
  /** dst's underlay interface, where VXLAN arrives. */
  dstIf: string;
  vxlan: VxlanDevice[];
  v4: { src: string; peerSrc: string; peerDst: string; dst: string; prefixLen: number };
  v6: { src: string; peerSrc: string; peerDst: string; dst: string; prefixLen: number; labPrefix: string };
  /** Sensor addresses on dstIf (TopologyOptions.sensors), /32 and /128. */
  sensors: { v4: string[]; v6: string[] };
  /** Scratch directory for configs and captures; removed by destroy() unless keepFiles. */
  workDir: string;
  /** Runs a command in one of the lab's namespaces. */
  exec(role: NsRole, cmd: string, args: readonly string[], opts?: RunOptions): Promise<RunResult>;
  /** Spawns a long-running process in a namespace; destroy() stops it. */
  spawn(role: NsRole, cmd: string, args: readonly string[], opts?: Omit<SpawnOptions, 'netns'>): Spawned;
  /** Stops every process, deletes the namespaces (and with them every link). Idempotent. */
  destroy(): Promise<void>;
}

function v4(n: number): string {
  return [n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff].join('.');
}

interface LinkInfo {
  ifname: string;
  operstate: string;
  address: string;
}

async function linkInfo(ns: string, dev: string): Promise<LinkInfo> {
  const { stdout } = await run('ip', ['-n', ns, '-j', 'link', 'show', 'dev', dev]);
  const info = (JSON.parse(stdout) as LinkInfo[])[0];
  if (info === undefined) throw new Error(`ip link show ${dev} in ${ns}: no such link`);
  return info;
}

/** Polls the link's operstate until it is UP: a veth is UP only once both ends are. */
/** Resolves once `address` has a link-layer address in the namespace's neighbour table (≤ 2 s). */
async function waitNeighbour(netns: string, address: string): Promise<void> {
  for (const deadline = Date.now() + 2000; ; ) {
    const { stdout } = await run('ip', ['-n', netns, 'neigh', 'show', 'to', address]);
    if (/lladdr/.test(stdout)) return;
    if (Date.now() > deadline) throw new Error(`lab: ${address} has no neighbour entry in ${netns} after 2 s: ${stdout.trim() || 'none'}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function waitLinkUp(ns: string, dev: string, timeoutMs = LINK_UP_TIMEOUT_MS): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const { operstate } = await linkInfo(ns, dev);
    if (operstate === 'UP') return;
    if (Date.now() > deadline) throw new Error(`link ${dev} in ${ns} is ${operstate}, not UP after ${timeoutMs} ms`);
    await new Promise((r) => setImmediate(r));
  }
}

async function deleteNamespaces(suffix: string): Promise<void> {
  for (const role of NS_ROLES) {
    const ns = `${NS_PREFIX}${role}-${suffix}`;
    // Processes keep a namespace (and our veths) alive after `ip netns del`: kill stragglers first.
    const pids = await run('ip', ['netns', 'pids', ns]).then((r) => r.stdout.split(/\s+/).filter(Boolean), () => []);
    for (const pid of pids) {
      try {
        process.kill(Number(pid), 'SIGKILL');
      } catch {
        // already gone
      }
    }
    await run('ip', ['netns', 'del', ns]).catch((err: unknown) => {
      if (!String(err).includes('No such file')) throw err;
    });
  }
  await rm(join(STATE_DIR, suffix), { force: true });
}

/** Builds the three-namespace lab; on any failure everything made so far is removed. */
export async function createLabTopology(opts: TopologyOptions = {}): Promise<Topology> {
  const suffix = randomBytes(2).toString('hex');
  const ns = { src: `${NS_PREFIX}src-${suffix}`, peer: `${NS_PREFIX}peer-${suffix}`, dst: `${NS_PREFIX}dst-${suffix}` };
  const srcIf = `mfs-${suffix}`;
  const peerSrcIf = `mfps-${suffix}`;
  const peerDstIf = `mfpd-${suffix}`;
  const dstIf = `mfd-${suffix}`;
  const vnis = opts.vnis ?? [4242];
  const vxlan = vnis.map((vni, i) => ({ name: `mfvx${i}-${suffix}`, vni }));

  const base = BENCH_BASE + (parseInt(suffix, 16) % BENCH_BLOCKS) * BLOCK_SIZE;
  const addr4 = { src: v4(base + 1), peerSrc: v4(base + 2), peerDst: v4(base + 5), dst: v4(base + 6), prefixLen: 30 };
  // The group without leading zeros (RFC 5952), as tshark and the agent print addresses: a
  // suffix like 0f3a otherwise gave 1 run in 16 addresses no capture field ever equals.
  const p6 = `${ULA_PREFIX}:${parseInt(suffix, 16).toString(16)}`;
  const labPrefix = `${p6}::/48`;
  const addr6 = { src: `${p6}:1::1`, peerSrc: `${p6}:1::2`, peerDst: `${p6}:2::2`, dst: `${p6}:2::1`, prefixLen: 64, labPrefix };
  const nSensors = opts.sensors ?? 0;
  if (!Number.isInteger(nSensors) || nSensors < 0 || nSensors > MAX_SENSORS) throw new Error(`sensors: 0..${MAX_SENSORS}, got ${nSensors}`);
  const sensors = {
    v4: Array.from({ length: nSensors }, (_, i) => v4(base + SENSOR_OFFSET + i)),
    v6: Array.from({ length: nSensors }, (_, i) => `${p6}:3::${i + 1}`),
  };

  const workDir = await mkdtemp(join(tmpdir(), `mirrorflow-lab-${suffix}-`));
  const processes: Spawned[] = [];
  let destroyed: Promise<void> | undefined;

  const topo: Topology = {
    suffix,
    ns,
    srcIf,
    srcMac: '',
    peerSrcIf,
    peerDstIf,
    dstIf,
    vxlan,
    v4: addr4,
    v6: addr6,
    sensors,
    workDir,
    exec: (role, cmd, args, o) => runInNetns(ns[role], cmd, args, o),
    spawn: (role, cmd, args, o) => {
      const p = spawnProcess(cmd, args, { ...o, netns: ns[role] });
      processes.push(p);
      return p;
    },
    destroy: () => {
      destroyed ??= (async () => {
        await Promise.all(processes.map((p) => p.stop('SIGTERM', 2000)));
        await deleteNamespaces(suffix);
        if (!opts.keepFiles) await rm(workDir, { recursive: true, force: true });
      })();
      return destroyed;
    },
  };

  try {
    await mkdir(STATE_DIR, { recursive: true });
    await writeFile(join(STATE_DIR, suffix), `${process.pid}\n`);
    for (const role of NS_ROLES) {
      await run('ip', ['netns', 'add', ns[role]]);
      const sysctl = (key: string, value: string) => topo.exec(role, 'sysctl', ['-qw', `${key}=${value}`]);
      // No DAD: addresses (link-local included) are usable at once and stay quiet.
      await sysctl('net.ipv6.conf.all.accept_dad', '0');
      await sysctl('net.ipv6.conf.default.accept_dad', '0');
      // Quiet links: no router solicitations (sent up to ~12 s after link up), and MLD
      // reports repeated within milliseconds of link up instead of over the next seconds:
      // tests that compare a link's kernel counters with what the agent saw must not race
      // traffic the kernel makes up by itself (seen: one stray packet between agent ready
      // and the counters' first read). Set before the links exist: devices copy these.
      await sysctl('net.ipv6.conf.default.router_solicitations', '0');
      await sysctl('net.ipv6.conf.default.mldv2_unsolicited_report_interval', '1');
      await run('ip', ['-n', ns[role], 'link', 'set', 'lo', 'up']);
    }
    await topo.exec('peer', 'sysctl', ['-qw', 'net.ipv4.ip_forward=1']);
    await topo.exec('peer', 'sysctl', ['-qw', 'net.ipv6.conf.all.forwarding=1']);

    await run('ip', ['-n', ns.src, 'link', 'add', srcIf, 'type', 'veth', 'peer', 'name', peerSrcIf, 'netns', ns.peer]);
    await run('ip', ['-n', ns.dst, 'link', 'add', dstIf, 'type', 'veth', 'peer', 'name', peerDstIf, 'netns', ns.peer]);

    const links: [NsRole, string, string, string][] = [
      ['src', srcIf, addr4.src, addr6.src],
      ['peer', peerSrcIf, addr4.peerSrc, addr6.peerSrc],
      ['peer', peerDstIf, addr4.peerDst, addr6.peerDst],
      ['dst', dstIf, addr4.dst, addr6.dst],
    ];
    for (const [role, dev, a4, a6] of links) {
      await run('ip', ['-n', ns[role], 'addr', 'add', `${a4}/${addr4.prefixLen}`, 'dev', dev]);
      await run('ip', ['-n', ns[role], '-6', 'addr', 'add', `${a6}/${addr6.prefixLen}`, 'dev', dev, 'nodad']);
      if (opts.disableOffloads) await topo.exec(role, 'ethtool', ['-K', dev, 'tx', 'off', 'tso', 'off', 'gso', 'off', 'gro', 'off']);
      if (opts.mtu !== undefined) await run('ip', ['-n', ns[role], 'link', 'set', dev, 'mtu', String(opts.mtu)]);
      await run('ip', ['-n', ns[role], 'link', 'set', dev, 'up']);
    }
    await run('ip', ['-n', ns.src, 'route', 'add', 'default', 'via', addr4.peerSrc]);
    await run('ip', ['-n', ns.src, '-6', 'route', 'add', 'default', 'via', addr6.peerSrc]);
    await run('ip', ['-n', ns.dst, 'route', 'add', 'default', 'via', addr4.peerDst]);
    await run('ip', ['-n', ns.dst, '-6', 'route', 'add', 'default', 'via', addr6.peerDst]);

    for (let i = 0; i < nSensors; i++) {
      await run('ip', ['-n', ns.dst, 'addr', 'add', `${sensors.v4[i]}/32`, 'dev', dstIf]);
      await run('ip', ['-n', ns.dst, '-6', 'addr', 'add', `${sensors.v6[i]}/128`, 'dev', dstIf, 'nodad']);
    }
    if (nSensors > 0) {
      await run('ip', ['-n', ns.peer, 'route', 'add', `${v4(base + SENSOR_OFFSET)}/29`, 'via', addr4.dst]);
      await run('ip', ['-n', ns.peer, '-6', 'route', 'add', `${p6}:3::/64`, 'via', addr6.dst]);
    }

    for (const dev of vxlan) {
      // No remote: the device only decapsulates what arrives with its VNI. No learning and
      // no IPv6 address, so it never transmits anything of its own.
      await run('ip', ['-n', ns.dst, 'link', 'add', dev.name, 'type', 'vxlan', 'id', String(dev.vni), 'dstport',
        String(VXLAN_PORT), 'local', addr4.dst, 'dev', dstIf, 'nolearning']);
      await run('ip', ['-n', ns.dst, 'link', 'set', dev.name, 'addrgenmode', 'none']);
      // Without GRO the device hands up each decapsulated frame as it was sent.
      await topo.exec('dst', 'ethtool', ['-K', dev.name, 'gro', 'off']);
      await run('ip', ['-n', ns.dst, 'link', 'set', dev.name, 'up']);
    }

    for (const [role, dev] of links) await waitLinkUp(ns[role], dev);
    // Resolve every neighbour the copies' path needs (src's gateway; dst in peer, also the
    // next hop to the sensors) before a test starts: while a neighbour is unresolved the kernel queues at most
    // ~100 packets for it (unres_qlen) and drops the rest, and a TSO burst of copies is
    // hundreds of segments at once (CI lost 95-177 copies, always in a run's first transfer).
    // One datagram to the discard port each (no ping on a minimal host), then wait for the
    // entries.
    const targets = [addr4.dst, addr6.dst];
    for (const address of targets) await topo.exec('src', 'bash', ['-c', `echo > /dev/udp/${address}/9`]);
    for (const [role, address] of [['src', addr4.peerSrc], ['src', addr6.peerSrc], ...targets.map((a) => ['peer', a] as const)] as const) {
      await waitNeighbour(ns[role], address);
    }
    topo.srcMac = (await linkInfo(ns.src, srcIf)).address;
    return topo;
  } catch (err) {
    await topo.destroy().catch(() => undefined);
    throw err;
  }
}

/** Removes labs whose owner process is gone (left over by a crash or SIGKILL); returns their suffixes. */
export async function sweepStale(): Promise<string[]> {
  const suffixes = await readdir(STATE_DIR).catch(() => [] as string[]);
  const swept: string[] = [];
  for (const suffix of suffixes) {
    const pid = Number((await readFile(join(STATE_DIR, suffix), 'utf8').catch(() => '')).trim());
    if (pid > 0 && processAlive(pid)) continue;
    await deleteNamespaces(suffix);
    swept.push(suffix);
  }
  return swept;
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
