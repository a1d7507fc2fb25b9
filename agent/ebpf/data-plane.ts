// The eBPF data plane's life on the host: the segmenting veth pair, the external-mode VXLAN
// devices (one per target UDP port), the TC filters on every source interface, the rule
// maps, and the cleanup — on exit, and at the next start after a crash (from the state
// file written before anything is attached).

import { statSync } from 'node:fs';
import { mkdir, readFile, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { run } from '../exec.js';
import type { Logger } from '../log.js';
import { pathMtu } from '../mirror/path-mtu.js';
import { allHealthy } from '../mirror/pool.js';
import { frameLimit } from '../mirror/vxlan.js';
import { parseAddress } from '../packet/address.js';
import type { RuleSet } from '../rules/compile.js';
import { TC_EGRESS, TC_INGRESS, tcAttach, tcDetach, tcHookCreate, tcHookDestroy } from './libbpf.js';
import { COUNT_SLOT_GRACE_MS, MirrorMaps } from './mirror-maps.js';
import type { IfaceStats, KernelFlow, RejectedFlow, SlotSession } from './layout.js';
import { DIR_IN, DIR_OUT, type Direction } from '../packet/view.js';
import { ErrorCode, MirrorflowError } from '../errors.js';
import { SEG_RX, SEG_TX, VXLAN_PREFIX } from './device-names.js';

export { SEG_RX, SEG_TX, VXLAN_PREFIX };

/** Our filters on clsact: handle "MF", priority 1 so the mirror sees packets before other filters act. */
export const TC_HANDLE = 0x4d46;
export const TC_PRIORITY = 1;
/** Every offload ethtool lets us turn off on veth that could let an aggregate through whole. */
const SEG_FEATURES_OFF = [
  'tx', 'tso', 'gso', 'tx-udp-segmentation', 'tx-gso-list', 'tx-sctp-segmentation', 'tx-gre-segmentation',
  'tx-gre-csum-segmentation', 'tx-ipxip4-segmentation', 'tx-ipxip6-segmentation', 'tx-udp_tnl-segmentation',
  'tx-udp_tnl-csum-segmentation',
];
/** Largest MTU of a veth: a clone that is not an aggregate (a jumbo frame) passes whole. */
const SEG_MTU = 65535;
export const EBPF_STATE_FILE_NAME = 'ebpf-attached.json';
/** Without a control socket directory to keep it in. */
export const DEFAULT_STATE_FILE = `/run/mirrorflow/${EBPF_STATE_FILE_NAME}`;
const SOURCE_PORT_RANGE = ['49152', '65535'];

/** A kernel entry with the name of the source interface it was counted on. */
export type Named<T> = T & { interfaceName: string };

interface Attachment {
  name: string;
  ifindex: number;
  /** We created the clsact qdisc, so we remove it when no other filter is left on it. */
  createdQdisc: boolean;
}

interface StateFile {
  attachments: Attachment[];
}

async function ifindexOf(name: string): Promise<number | undefined> {
  try {
    return Number((await readFile(`/sys/class/net/${name}/ifindex`, 'utf8')).trim());
  } catch {
    return undefined;
  }
}

interface TcFilter {
  pref?: number;
  options?: { handle?: string; bpf_name?: string };
}

const OUR_HANDLE = `0x${TC_HANDLE.toString(16)}`;

/**
 * The filters on one clsact hook of an interface (none when it has no clsact). Throws when
 * `tc` cannot say: an unknown answer must never read as "no filters".
 */
async function tcFilters(name: string, hook: 'ingress' | 'egress'): Promise<TcFilter[]> {
  const { stdout } = await run('tc', ['-j', 'filter', 'show', 'dev', name, hook]);
  return JSON.parse(stdout || '[]') as TcFilter[];
}

const isOurs = (f: TcFilter) => f.pref === TC_PRIORITY && f.options?.handle === OUR_HANDLE && /^mf_(ingress|egress)/.test(f.options.bpf_name ?? '');

/**
 * True when some filter other than ours remains on the interface's clsact hooks, or when
 * `tc` cannot tell (then the qdisc stays: removing it would take other tools' filters).
 */
async function hasForeignFilters(name: string): Promise<boolean> {
  try {
    for (const hook of ['ingress', 'egress'] as const) {
      if ((await tcFilters(name, hook)).some((f) => f.options?.handle !== undefined && !isOurs(f))) return true;
    }
    return false;
  } catch {
    return true;
  }
}

export interface EbpfPlaneOptions {
  log: Logger;
  /** Where attachments are recorded for crash recovery (default DEFAULT_STATE_FILE). */
  stateFile?: string | undefined;
}

export class EbpfDataPlane {
  private readonly attached = new Map<string, Attachment>();
  /** Every interface life the programs ran on (a re-created interface has a new ifindex): counters add up over them. */
  private lives: Array<{ name: string; ifindex: number }> = [];
  /** Interfaces removed since the last drains, by ifindex (see drainCounted). */
  private readonly departed = new Map<number, { name: string; drains: number }>();
  /** VXLAN device ifindex by target UDP port. */
  private readonly devices = new Map<number, number>();
  /** ifindex of SEG_TX once the pair exists. */
  private segIfindex = 0;
  private readonly stateFile: string;

  private constructor(readonly maps: MirrorMaps, private readonly log: Logger, stateFile: string) {
    this.stateFile = stateFile;
  }

  /**
   * Removes what a previous run left behind (crash, kill -9), then loads the programs.
   * Throws when the kernel or libbpf cannot run them; the caller decides about fallback.
   */
  static async open(opts: EbpfPlaneOptions): Promise<EbpfDataPlane> {
    const stateFile = opts.stateFile ?? DEFAULT_STATE_FILE;
    await EbpfDataPlane.recover(stateFile, opts.log);
    const maps = MirrorMaps.open();
    return new EbpfDataPlane(maps, opts.log, stateFile);
  }

  private static async recover(stateFile: string, log: Logger): Promise<void> {
    let state: StateFile | undefined;
    try {
      state = JSON.parse(await readFile(stateFile, 'utf8')) as StateFile;
    } catch {
      state = undefined;
    }
    for (const a of state?.attachments ?? []) {
      if ((await ifindexOf(a.name)) !== a.ifindex) continue;
      await detach(a);
      log.warn({ interface: a.name }, 'removed TC filters left by a previous run');
    }
    // Without the state file (lost with /run, or another agent's), our filters are still
    // recognisable by handle, priority and program name: remove any that remain. Only
    // interfaces with a clsact qdisc can hold one (one `tc qdisc show` for all, not two
    // `tc filter show` per interface: a node with 200 pod interfaces starts seconds sooner).
    for (const name of await clsactInterfaces()) {
      const ifindex = await ifindexOf(name);
      if (ifindex === undefined) continue;
      const hooks = [['ingress', TC_INGRESS], ['egress', TC_EGRESS]] as const;
      for (const [hook, point] of hooks) {
        // An interface gone since readdir has nothing of ours left to remove.
        if (!(await tcFilters(name, hook).catch(() => [])).some(isOurs)) continue;
        tcDetach(ifindex, point, TC_HANDLE, TC_PRIORITY);
        log.warn({ interface: name, hook }, 'removed a TC filter of ours left by a previous run (no state recorded)');
      }
    }
    for (const name of await ourDevices()) {
      await run('ip', ['link', 'del', name]);
      log.warn({ device: name }, 'removed a VXLAN device left by a previous run');
    }
    if ((await ifindexOf(SEG_TX)) !== undefined) {
      await run('ip', ['link', 'del', SEG_TX]);
      log.warn({ device: SEG_TX }, 'removed the segmenting veth pair left by a previous run');
    }
    await rm(stateFile, { force: true });
  }

  /**
   * Makes `rules` live: VXLAN devices for the target ports, filters on every present
   * source interface (newly present or re-created ones included), then the map flip.
   * On `flowInterfaces` (those a flow log covers) the programs count flows for the flow
   * logs (bpf/flowlog.bpf.h) and drops by the host's packet filter. A session with a pool
   * starts with the mask `healthOf` gives for its index (default: every member healthy).
   * Returns the slot the sessions' counters live in.
   */
  async install(rules: RuleSet, flowInterfaces: readonly string[], healthOf?: (session: number) => number | undefined): Promise<number> {
    const ports = new Set(rules.sessions.map((s) => s.targetPort));
    if (ports.size > 0 && this.segIfindex === 0) this.segIfindex = await this.createSegmenter();
    for (const port of ports) if (!this.devices.has(port)) this.devices.set(port, await this.createDevice(port));

    const ifindexes = new Map<string, number>();
    const fresh: Array<{ name: string; ifindex: number }> = [];
    for (const [pos, name] of rules.interfaces.entries()) {
      // A reserved slot of a gone interface (or one no longer covered) gets no programs.
      if (rules.live[pos] === 0) continue;
      const ifindex = await ifindexOf(name);
      if (ifindex === undefined) {
        this.log.warn({ interface: name }, 'source interface does not exist; mirroring starts when it appears');
        continue;
      }
      ifindexes.set(name, ifindex);
      const known = this.attached.get(name);
      if (known?.ifindex !== ifindex) fresh.push({ name, ifindex });
    }
    for (const [name, a] of this.attached) {
      if (!ifindexes.has(name)) await this.removeInterface(name);
    }
    await this.attach(fresh);

    const sessions: SlotSession[] = [];
    for (const s of rules.sessions) {
      const mtu = await pathMtu(s.targetAddress);
      sessions.push({
        vni: s.vni,
        truncLen: frameLimit(mtu.mtu, s.targetFamily, s.packetLength),
        vxlanIfindex: this.devices.get(s.targetPort)!,
        family: s.targetFamily,
        remote: parseAddress(s.targetAddress).words,
        members: s.members.length > 1 ? s.members.map((a) => parseAddress(a).words) : [],
        budget: s.budget,
      });
      const target = s.members.map((a) => `${a}:${s.targetPort}`).join(',');
      this.log.info({ session: s.id, target, pathMtu: mtu.mtu, mtuSource: mtu.reason }, 'mirror target ready (eBPF)');
    }
    // Read last, right before the write, so no health change falls between the two.
    sessions.forEach((slotSession, i) => {
      if (slotSession.members!.length > 0) slotSession.healthy = healthOf?.(i) ?? allHealthy(slotSession.members!.length);
    });
    const flowIfindexes = flowInterfaces.flatMap((name) => ifindexes.get(name) ?? []);
    const slot = this.maps.install({ rules, ifindexes, sessions, segIfindex: this.segIfindex, agentBudget: rules.agentBudget, flowIfindexes });
    this.setRejectInterfaces(flowIfindexes);

    for (const [port, ifindex] of this.devices) {
      if (ports.has(port)) continue;
      this.devices.delete(port);
      const device = `${VXLAN_PREFIX}${port}`;
      await run('ip', ['link', 'del', device]).catch(() => undefined);
      this.log.info({ device, ifindex }, 'VXLAN device no longer used; removed');
    }
    return slot;
  }

  /**
   * Stops covering a source interface (it vanished, or no longer matches): its filters
   * removed if it is still there, its chains and kernel counters forgotten (their metric
   * series go with it, and mf_iface_stats keeps room for new interfaces). install() writes
   * the state file after the batch (a stale entry is harmless: recovery checks the ifindex).
   */
  private async removeInterface(name: string): Promise<void> {
    const a = this.attached.get(name);
    if (a === undefined) return;
    await detach(a);
    this.attached.delete(name);
    this.departed.set(a.ifindex, { name, drains: 0 });
    this.maps.removeInterface(a.ifindex);
    this.lives = this.lives.filter((l) => l.name !== name);
    this.log.info({ interface: name, ifindex: a.ifindex }, 'TC programs detached (interface gone or no longer a source)');
  }

  private setRejectInterfaces(ifindexes: number[]): void {
    if (ifindexes.length > 0 && this.maps.rejectUnavailable !== undefined) {
      this.log.warn({ reason: this.maps.rejectUnavailable }, 'REJECT flow records unavailable: the kernel refused the kfree_skb tracer');
      return;
    }
    const netns = statSync('/proc/self/ns/net').ino;
    this.maps.setRejectInterfaces(netns, ifindexes);
  }

  /** What the programs saw per source interface and direction since the plane was opened. */
  interfaceCounters(): Array<{ name: string; dir: Direction; stats: IfaceStats }> {
    const out = new Map<string, { name: string; dir: Direction; stats: IfaceStats }>();
    for (const { name, ifindex } of this.lives) {
      for (const dir of [DIR_IN, DIR_OUT] as Direction[]) {
        const s = this.maps.ifaceStats(ifindex, dir);
        const sum = out.get(`${name}|${dir}`);
        if (!sum) {
          out.set(`${name}|${dir}`, { name, dir, stats: s });
          continue;
        }
        sum.stats.packets += s.packets;
        sum.stats.bytes += s.bytes;
        sum.stats.flowSkipped += s.flowSkipped;
        s.decisions.forEach((n, i) => (sum.stats.decisions[i]! += n));
      }
    }
    return [...out.values()];
  }

  /**
   * Copies lost after the clone, by device: the segmenting veth's drops (a full backlog on
   * SEG_RX counts on SEG_TX as tx_dropped, and on SEG_RX as rx_dropped) and our VXLAN
   * devices' tx_errors + tx_dropped (no route to the target, ICMP unreachable from it).
   */
  async deviceErrors(): Promise<Array<{ device: string; errors: number }>> {
    const out: Array<{ device: string; errors: number }> = [];
    const devices = [...this.devices.keys()].map((port) => `${VXLAN_PREFIX}${port}`);
    if (this.segIfindex !== 0) devices.unshift(SEG_TX);
    for (const device of devices) {
      const read = async (f: string) => Number((await readFile(`/sys/class/net/${device}/statistics/${f}`, 'utf8')).trim());
      try {
        out.push({ device, errors: (await read('tx_errors')) + (await read('tx_dropped')) });
      } catch {
        // deleted under us: the next install re-creates it
      }
    }
    return out;
  }

  /** Stops counting drops (at shutdown, before the last drain). */
  stopRejects(): void {
    if (this.maps.rejectsAttached) this.setRejectInterfaces([]);
  }

  /**
   * Flows and drops the programs counted since the previous call, by source interface name:
   * flips the count slot, waits for the programs still counting in the old one, takes it.
   * `all`: both slots (at shutdown, once counting stopped, or when the flow stage changes).
   */
  async drainCounted(all = false): Promise<{ flows: Array<{ interfaceName: string; flow: KernelFlow }>; rejects: Array<Named<RejectedFlow>> }> {
    const slot = this.maps.flipCountSlot();
    await new Promise((resolve) => setTimeout(resolve, COUNT_SLOT_GRACE_MS));
    const take = all ? 'all' : slot;
    const names = new Map([...this.attached.values()].map((a) => [a.ifindex, a.name]));
    // An interface gone since: what it counted before it went drains under its name, from
    // both count slots (this drain and the next), then it is forgotten.
    for (const [ifindex, d] of this.departed) {
      names.set(ifindex, d.name);
      if (++d.drains >= 2 || all) this.departed.delete(ifindex);
    }
    const flows: Array<{ interfaceName: string; flow: KernelFlow }> = [];
    for (const flow of await this.maps.takeFlows(take)) {
      const interfaceName = names.get(flow.key.ifindex);
      if (interfaceName !== undefined) flows.push({ interfaceName, flow });
    }
    const rejects = this.maps.takeRejects(take).flatMap((r) => {
      const interfaceName = names.get(r.ifindex);
      return interfaceName === undefined ? [] : [{ ...r, interfaceName }];
    });
    return { flows, rejects };
  }

  /** Stops counting flows (at shutdown, before the last drain). */
  stopFlows(): void {
    this.maps.setFlowInterfaces([]);
  }

  private async createDevice(port: number): Promise<number> {
    const name = `${VXLAN_PREFIX}${port}`;
    await run('ip', ['link', 'del', name]).catch(() => undefined);
    // external: the tunnel key set by mf_tunnel gives VNI and remote per packet.
    await run('ip', ['link', 'add', name, 'type', 'vxlan', 'external', 'dstport', String(port), 'srcport', ...SOURCE_PORT_RANGE, 'nolearning']);
    await run('ip', ['link', 'set', name, 'up']);
    const ifindex = (await ifindexOf(name))!;
    this.log.info({ device: name, port }, 'VXLAN device created (external, collect metadata)');
    return ifindex;
  }

  /**
   * The veth pair clones are segmented on (see SEG_TX). Throws when the offloads cannot be
   * turned off (no ethtool): copies would then leave as one cut aggregate each.
   */
  private async createSegmenter(): Promise<number> {
    await run('ip', ['link', 'del', SEG_TX]).catch(() => undefined);
    await run('ip', ['link', 'add', SEG_TX, 'mtu', String(SEG_MTU), 'type', 'veth', 'peer', 'name', SEG_RX, 'mtu', String(SEG_MTU)]);
    try {
      // No addresses, so no IPv6 neighbour or multicast chatter between the two ends.
      for (const dev of [SEG_TX, SEG_RX]) await writeFile(`/proc/sys/net/ipv6/conf/${dev}/disable_ipv6`, '1').catch(() => undefined);
      await run('ethtool', ['-K', SEG_TX, ...SEG_FEATURES_OFF.flatMap((f) => [f, 'off'])]);
      // veth re-merges only with GRO on, which it has off unless asked: make sure.
      await run('ethtool', ['-K', SEG_RX, 'gro', 'off']);
      const features = await segmentationFeaturesOn(SEG_TX);
      if (features.length > 0) throw new MirrorflowError(ErrorCode.EBPF_SETUP, `offloads still on: ${features.join(', ')}`);
      await run('ip', ['link', 'set', SEG_RX, 'up']);
      await run('ip', ['link', 'set', SEG_TX, 'up']);
      const rx = (await ifindexOf(SEG_RX))!;
      tcHookCreate(rx);
      tcAttach(rx, TC_INGRESS, this.maps.tunnelFd, TC_HANDLE, TC_PRIORITY);
    } catch (err) {
      await run('ip', ['link', 'del', SEG_TX]).catch(() => undefined);
      throw new MirrorflowError(ErrorCode.EBPF_SETUP, `cannot set up the segmenting veth ${SEG_TX}: ${(err as Error).message}`, { cause: err });
    }
    this.log.info({ device: SEG_TX, peer: SEG_RX }, 'segmenting veth pair created (segmentation and checksum offloads off)');
    return (await ifindexOf(SEG_TX))!;
  }

  /**
   * Attaches the programs to these interfaces. The state file is written once for the whole
   * batch (200 interfaces at start-up: one write, not 200), after the clsact hooks exist and
   * before any filter does: a crash between the two leaves nothing unknown.
   */
  private async attach(interfaces: ReadonlyArray<{ name: string; ifindex: number }>): Promise<void> {
    for (const { name, ifindex } of interfaces) {
      this.attached.set(name, { name, ifindex, createdQdisc: tcHookCreate(ifindex) });
      if (!this.lives.some((l) => l.ifindex === ifindex && l.name === name)) this.lives.push({ name, ifindex });
    }
    await this.saveState();
    for (const { name, ifindex } of interfaces) {
      tcAttach(ifindex, TC_INGRESS, this.maps.ingressFd, TC_HANDLE, TC_PRIORITY);
      tcAttach(ifindex, TC_EGRESS, this.maps.egressFd, TC_HANDLE, TC_PRIORITY);
      this.log.info({ interface: name, ifindex }, 'TC programs attached (clsact ingress and egress)');
    }
  }

  private async saveState(): Promise<void> {
    await mkdir(dirname(this.stateFile), { recursive: true });
    const state: StateFile = { attachments: [...this.attached.values()] };
    await writeFile(`${this.stateFile}.tmp`, JSON.stringify(state));
    await rename(`${this.stateFile}.tmp`, this.stateFile);
  }

  /** Detaches every filter, removes our qdiscs and devices, frees the programs. */
  async close(): Promise<void> {
    for (const a of this.attached.values()) {
      await detach(a).catch((err: unknown) => this.log.error({ err, interface: a.name }, 'detaching TC programs failed'));
    }
    this.attached.clear();
    for (const port of this.devices.keys()) await run('ip', ['link', 'del', `${VXLAN_PREFIX}${port}`]).catch(() => undefined);
    this.devices.clear();
    if (this.segIfindex !== 0) await run('ip', ['link', 'del', SEG_TX]).catch(() => undefined);
    this.segIfindex = 0;
    this.maps.close();
    await rm(this.stateFile, { force: true });
  }
}

/** Removes our filters from an interface; a deleted or re-created interface took them with it. */
async function detach(a: Attachment): Promise<void> {
  if ((await ifindexOf(a.name)) !== a.ifindex) return;
  tcDetach(a.ifindex, TC_INGRESS, TC_HANDLE, TC_PRIORITY);
  tcDetach(a.ifindex, TC_EGRESS, TC_HANDLE, TC_PRIORITY);
  if (a.createdQdisc && !(await hasForeignFilters(a.name))) tcHookDestroy(a.ifindex);
}

/** Features of `name` that would let an aggregate or a partial checksum through (ethtool -k). */
async function segmentationFeaturesOn(name: string): Promise<string[]> {
  const { stdout } = await run('ethtool', ['-k', name]);
  const watched = /^\s*(tx-checksum-ip-generic|tx-tcp6?-segmentation|tx-tcp-(ecn|mangleid)-segmentation|tx-udp-segmentation|tx-gso-list|tx-sctp-segmentation): on/;
  return stdout.split('\n').filter((l) => watched.test(l)).map((l) => l.trim());
}

/** Interfaces with a clsact qdisc (where TC filters of ours could be); every one when `tc` cannot say. */
async function clsactInterfaces(): Promise<string[]> {
  try {
    const { stdout } = await run('tc', ['-j', 'qdisc', 'show']);
    const qdiscs = JSON.parse(stdout || '[]') as Array<{ kind?: string; dev?: string }>;
    return [...new Set(qdiscs.filter((q) => q.kind === 'clsact' && q.dev !== undefined).map((q) => q.dev!))];
  } catch {
    return readdir('/sys/class/net');
  }
}

async function ourDevices(): Promise<string[]> {
  const { stdout } = await run('ip', ['-j', 'link', 'show', 'type', 'vxlan']);
  return (JSON.parse(stdout || '[]') as Array<{ ifname: string }>)
    .map((l) => l.ifname)
    .filter((n) => n.startsWith(VXLAN_PREFIX));
}
