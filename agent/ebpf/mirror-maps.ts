// The loaded mirror object (bpf/mirror.bpf.c) and its maps: installs a compiled RuleSet
// into the inactive slot and flips the live slot in one map write, so a packet sees either
// the whole old rule set or the whole new one, never a mix.

import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { RuleSet } from '../rules/compile.js';
import type { BudgetRate } from '../config/types.js';
import { DIR_IN, DIR_OUT, type Direction } from '../packet/view.js';
import {
  BpfObject, SKB_CB_OFFSET, SKB_CTX_SIZE, SKB_GSO_SEGS_OFFSET, SKB_GSO_SIZE_OFFSET, SKB_IFINDEX_OFFSET, SKB_MARK_OFFSET, mapDelete, mapKeys, mapLookup, mapLookupAndDelete,
  mapId, mapUpdate, possibleCpus, testRun, verifiedInstructions, type BpfLink, type MapHandle,
} from './libbpf.js';
import {
  MEMBER_STATS_SIZE, MF_MAX_POOL, POOL_HEALTHY_OFFSET, POOL_SIZE, encodePool, memberIndex, sessionIndex, sumMemberStats,
  BUCKET_SIZE, CHAIN_KEY_SIZE, CHAIN_SIZE, FRAG_KEY_SIZE, FRAG_VAL_SIZE, IFACE_KEY_SIZE, IFACE_STATS_SIZE, MF_MAX_SESSIONS,
  REJECT_IFACE_SIZE, FLOW_KEY_SIZE, FLOW_VAL_SIZE, CONN_KEY_SIZE, TCP_CONN_SIZE, REJECT_VAL_SIZE, SESSION_STATS_SIZE, SLOT_SIZE, STATE_SIZE,
  chainInfo, decodeReject, encodeChain, encodeChainKey, encodeIfaceKey, encodeRejectIface, encodeSlot, encodeState, flowSlotOf, sessionTruncLenOffset, setChainFlowLog,
  sumIfaceStats, sumSessionStats, u32Key, type IfaceStats, type KernelFlow, type RejectedFlow, type ChainEntry, type SessionStats, type SlotSession,
} from './layout.js';
import { KernelFlowMap } from './flow-map.js';
import { ErrorCode, MirrorflowError } from '../errors.js';

/**
 * How long a program may still be counting in the slot flipCountSlot() flipped away from: a
 * TC or tracing program runs for microseconds once it has read mf_state.
 */
export const COUNT_SLOT_GRACE_MS = 10;

/** The tracing program behind REJECT records; the mirror works without it. */
const REJECT_PROGRAM = 'mf_kfree_skb';

/** dist/bpf/ next to dist/agent/ when built; dist/bpf/ from the sources when run by vitest. */
export function mirrorObjectPath(): string {
  const candidates = ['../../bpf/mirror.bpf.o', '../../dist/bpf/mirror.bpf.o'];
  for (const rel of candidates) {
    const path = fileURLToPath(new URL(rel, import.meta.url));
    if (existsSync(path)) return path;
  }
  throw new MirrorflowError(ErrorCode.EBPF_OBJECT, 'bpf/mirror.bpf.o not found: run `make build` (needs clang and libbpf-dev)');
}

export interface InstallPlan {
  rules: RuleSet;
  /** Kernel ifindex of each RuleSet interface that exists now (absent ones get no chain). */
  ifindexes: ReadonlyMap<string, number>;
  /** Indexed like rules.sessions. */
  sessions: readonly SlotSession[];
  /** ifindex of the segmenting veth clones go to (0: nothing is cloned, as in rule tests). */
  segIfindex: number;
  /** agent.mirrorBudget; absent: no agent-wide limit. */
  agentBudget?: BudgetRate;
  /** Kernel ifindexes a flow log covers (setFlowInterfaces); absent: those set before. */
  flowIfindexes?: readonly number[];
}

/** Map sizes other than the defaults of bpf/mirrorflow.h (LIMITS.kernelFlows, LIMITS.kernelTcpConnections). */
export interface MapSizes {
  flows?: number;
  tcpConnections?: number;
}

export class MirrorMaps {
  readonly ingressFd: number;
  readonly egressFd: number;
  readonly tunnelFd: number;
  private readonly state: MapHandle;
  private readonly slots: MapHandle;
  private readonly chains: MapHandle;
  private readonly sessionStatsMap: MapHandle;
  private readonly ifaceStatsMap: MapHandle;
  private readonly buckets: MapHandle;
  private readonly rejectIfaces: MapHandle;
  private readonly rejects: MapHandle;
  private readonly pools: MapHandle;
  private readonly memberStatsMap: MapHandle;
  private readonly cpus = possibleCpus();
  readonly flows: KernelFlowMap;
  private active = 0;
  private countSlot = 0;
  /** Interfaces whose chains carry MF_CHAIN_FLOW_LOG, in every slot written. */
  private flowIfindexes = new Set<number>();
  private epoch = 0;
  private rejectLink: BpfLink | undefined;

  private constructor(private readonly obj: BpfObject, readonly rejectUnavailable: string | undefined) {
    this.ingressFd = obj.programFd('mf_ingress');
    this.egressFd = obj.programFd('mf_egress');
    this.tunnelFd = obj.programFd('mf_tunnel');
    this.state = this.checked('mf_state', 4, STATE_SIZE);
    this.slots = this.checked('mf_slots', 4, SLOT_SIZE);
    this.chains = this.checked('mf_chains', CHAIN_KEY_SIZE, CHAIN_SIZE);
    this.checked('mf_frags', FRAG_KEY_SIZE, FRAG_VAL_SIZE);
    this.sessionStatsMap = this.checked('mf_session_stats', 4, SESSION_STATS_SIZE);
    this.ifaceStatsMap = this.checked('mf_iface_stats', IFACE_KEY_SIZE, IFACE_STATS_SIZE);
    this.buckets = this.checked('mf_buckets', 4, BUCKET_SIZE);
    this.rejectIfaces = this.checked('mf_reject_ifaces', REJECT_IFACE_SIZE, 1);
    this.rejects = this.checked('mf_rejects', FLOW_KEY_SIZE, REJECT_VAL_SIZE);
    this.pools = this.checked('mf_pools', 4, POOL_SIZE);
    this.memberStatsMap = this.checked('mf_member_stats', 4, MEMBER_STATS_SIZE);
    this.flows = new KernelFlowMap(this.checked('mf_flows', FLOW_KEY_SIZE, FLOW_VAL_SIZE), this.cpus);
    this.checked('mf_tcp_conns', CONN_KEY_SIZE, TCP_CONN_SIZE);
  }

  /**
   * Loads (verifies) the programs. Throws with the libbpf reason when the kernel refuses
   * the mirror programs; when it refuses only the REJECT tracer, loads without it and
   * says why in rejectUnavailable.
   */
  static open(path = mirrorObjectPath(), sizes: MapSizes = {}): MirrorMaps {
    let obj: BpfObject;
    let rejectUnavailable: string | undefined;
    const maxEntries = {
      ...(sizes.flows === undefined ? {} : { mf_flows: sizes.flows }),
      ...(sizes.tcpConnections === undefined ? {} : { mf_tcp_conns: sizes.tcpConnections }),
    };
    try {
      obj = BpfObject.load(path, [], maxEntries);
    } catch (err) {
      obj = BpfObject.load(path, [REJECT_PROGRAM], maxEntries);
      rejectUnavailable = (err as Error).message;
    }
    try {
      return new MirrorMaps(obj, rejectUnavailable);
    } catch (err) {
      obj.close();
      throw err;
    }
  }

  private checked(name: string, keySize: number, valueSize: number): MapHandle {
    const map = this.obj.map(name);
    if (map.keySize !== keySize || map.valueSize !== valueSize) {
      throw new MirrorflowError(ErrorCode.EBPF_OBJECT, `map ${name}: object has key/value ${map.keySize}/${map.valueSize} bytes, agent expects ${keySize}/${valueSize} (bpf/mirrorflow.h and agent/ebpf/layout.ts disagree)`);
    }
    return map;
  }

  /** The slot packets use now. */
  get activeSlot(): number {
    return this.active;
  }

  /**
   * Writes the plan into the inactive slot, then flips. The previous slot's chains stay
   * until the next install, so a packet that read the old slot index just before the
   * flip still finds its rules. Returns the slot now live.
   */
  install(plan: InstallPlan): number {
    const next = this.active ^ 1;
    if (plan.flowIfindexes) this.flowIfindexes = new Set(plan.flowIfindexes);
    this.clearSlot(next);
    this.epoch = (this.epoch + 1) >>> 0;
    mapUpdate(this.slots, u32Key(next), encodeSlot(this.epoch, plan.rules.ownOutputs, plan.sessions, plan.segIfindex, plan.agentBudget));
    plan.sessions.forEach((s, i) => {
      const members = s.members ?? [];
      if (members.length > 0) mapUpdate(this.pools, u32Key(sessionIndex(next, i)), encodePool(members, s.healthy ?? 0));
    });
    const written = new Set<number>();
    plan.rules.interfaces.forEach((name, pos) => {
      const ifindex = plan.ifindexes.get(name);
      if (ifindex === undefined) return;
      this.writeChains(next, ifindex, plan.rules.chains[pos * 2 + DIR_IN] ?? [], plan.rules.chains[pos * 2 + DIR_OUT] ?? []);
      written.add(ifindex);
    });
    for (const ifindex of this.flowIfindexes) if (!written.has(ifindex)) this.writeChains(next, ifindex, [], []);
    mapUpdate(this.state, u32Key(0), encodeState(next, this.countSlot));
    this.active = next;
    return next;
  }

  /** Forgets a vanished interface: its chains in both slots and its counters (the map has room for MF_MAX_IFACES). */
  removeInterface(ifindex: number): void {
    for (const slot of [0, 1]) for (const dir of [DIR_IN, DIR_OUT] as Direction[]) mapDelete(this.chains, encodeChainKey(ifindex, dir, slot));
    for (const dir of [DIR_IN, DIR_OUT] as Direction[]) mapDelete(this.ifaceStatsMap, encodeIfaceKey(ifindex, dir));
    this.flowIfindexes.delete(ifindex);
  }

  /**
   * One interface's chains in one slot: one per direction with sessions, and on a
   * flow-logged interface one per direction in any case (the programs read the flag there).
   */
  private writeChains(slot: number, ifindex: number, chainIn: readonly ChainEntry[], chainOut: readonly ChainEntry[]): void {
    const flowLogged = this.flowIfindexes.has(ifindex);
    for (const [dir, chain] of [[DIR_IN, chainIn], [DIR_OUT, chainOut]] as const) {
      if (chain.length > 0 || flowLogged) mapUpdate(this.chains, encodeChainKey(ifindex, dir, slot), encodeChain(chain, flowLogged));
    }
  }

  /**
   * Counts flows on these interfaces (kernel ifindexes) only; the others' packets are not
   * looked at. Sets the flag in place in both slots' chains (a packet reads the chain with
   * or without it), adds an empty chain where a flow-logged interface has none, and drops
   * the empty ones of interfaces no longer flow-logged.
   */
  setFlowInterfaces(ifindexes: readonly number[]): void {
    this.flowIfindexes = new Set(ifindexes);
    const value = Buffer.alloc(CHAIN_SIZE);
    const present = new Set<string>();
    for (const key of mapKeys(this.chains)) {
      if (!mapLookup(this.chains, key, value)) continue;
      const want = this.flowIfindexes.has(key.readUInt32LE(0));
      const { flowLogged, sessions } = chainInfo(value);
      if (want) present.add(key.toString('hex'));
      if (want === flowLogged) continue;
      if (!want && sessions === 0) {
        mapDelete(this.chains, key);
      } else {
        setChainFlowLog(value, want);
        mapUpdate(this.chains, key, value);
      }
    }
    for (const ifindex of this.flowIfindexes) {
      for (const slot of [0, 1]) {
        for (const dir of [DIR_IN, DIR_OUT] as Direction[]) {
          const key = encodeChainKey(ifindex, dir, slot);
          if (!present.has(key.toString('hex'))) mapUpdate(this.chains, key, encodeChain([], true));
        }
      }
    }
  }

  /**
   * Changes how much of each frame one session of a live slot keeps, in place (the path MTU
   * to its target changed). A packet reads either the old length or the new one.
   */
  setTruncLen(slot: number, session: number, truncLen: number): void {
    const value = Buffer.alloc(SLOT_SIZE);
    if (!mapLookup(this.slots, u32Key(slot), value)) throw new Error(`eBPF slot ${slot} is not installed`);
    value.writeUInt32LE(truncLen, sessionTruncLenOffset(session));
    mapUpdate(this.slots, u32Key(slot), value);
  }

  /**
   * Which members of one session's pool of a live slot take flows (bit i: member i), in
   * place: a copy reads the old mask or the new one. False when that slot has no pool
   * there (not installed yet: install() writes the mask of its plan).
   */
  setPoolHealth(slot: number, session: number, healthy: number): boolean {
    const value = Buffer.alloc(POOL_SIZE);
    const key = u32Key(sessionIndex(slot, session));
    if (!mapLookup(this.pools, key, value) || value.readUInt32LE(0) === 0) return false;
    value.writeUInt32LE(healthy >>> 0, POOL_HEALTHY_OFFSET);
    mapUpdate(this.pools, key, value);
    return true;
  }

  /** Kernel counters of one pool member of one session of one slot. */
  memberStats(slot: number, session: number, member: number): { packets: number; bytes: number } {
    const value = Buffer.alloc(MEMBER_STATS_SIZE * this.cpus);
    mapLookup(this.memberStatsMap, u32Key(memberIndex(slot, session, member)), value);
    return sumMemberStats(value, this.cpus);
  }

  /**
   * Drops a slot's chains and pools and zeroes its session and member counters and budget
   * buckets (full again) before it is reused. The agent-wide bucket carries on across reloads.
   */
  private clearSlot(slot: number): void {
    for (const key of mapKeys(this.chains)) {
      if ((key.readUInt32LE(4) >>> 1) === slot) mapDelete(this.chains, key);
    }
    const zero = Buffer.alloc(SESSION_STATS_SIZE * this.cpus);
    const noPool = Buffer.alloc(POOL_SIZE);
    const zeroMember = Buffer.alloc(MEMBER_STATS_SIZE * this.cpus);
    const full = Buffer.alloc(BUCKET_SIZE);
    for (let i = 0; i < MF_MAX_SESSIONS; i++) {
      mapUpdate(this.sessionStatsMap, u32Key(sessionIndex(slot, i)), zero);
      mapUpdate(this.buckets, u32Key(sessionIndex(slot, i)), full);
      mapUpdate(this.pools, u32Key(sessionIndex(slot, i)), noPool);
      for (let m = 0; m < MF_MAX_POOL; m++) mapUpdate(this.memberStatsMap, u32Key(memberIndex(slot, i, m)), zeroMember);
    }
  }

  /** Kernel counters of one session of one slot. */
  sessionStats(slot: number, session: number): SessionStats {
    const value = Buffer.alloc(SESSION_STATS_SIZE * this.cpus);
    mapLookup(this.sessionStatsMap, u32Key(slot * MF_MAX_SESSIONS + session), value);
    return sumSessionStats(value, this.cpus);
  }

  /** What the programs saw on one interface and direction since the object was loaded. */
  ifaceStats(ifindex: number, dir: Direction): IfaceStats {
    const value = Buffer.alloc(IFACE_STATS_SIZE * this.cpus);
    mapLookup(this.ifaceStatsMap, encodeIfaceKey(ifindex, dir), value);
    return sumIfaceStats(value, this.cpus);
  }

  /**
   * Runs the ingress or egress program on one frame with BPF_PROG_TEST_RUN as if it had
   * been seen on `ifindex` (as an aggregate of `gsoSegs` segments of `gsoSize` payload bytes
   * when gsoSegs > 1); returns the
   * decision the program reported, whether the budget shed its copy, and the kernel's mean
   * run time. The frame must be at least an Ethernet header (the kernel's minimum).
   */
  decide(frame: Buffer, ifindex: number, dir: Direction, repeat = 1, gsoSegs = 0, gsoSize = 0): { decision: number; shed: boolean; durationNs: number } {
    const ctx = Buffer.alloc(SKB_CTX_SIZE);
    ctx.writeUInt32LE(ifindex, SKB_IFINDEX_OFFSET);
    ctx.writeUInt32LE(gsoSegs, SKB_GSO_SEGS_OFFSET);
    ctx.writeUInt32LE(gsoSize, SKB_GSO_SIZE_OFFSET);
    const run = testRun(dir === DIR_OUT ? this.egressFd : this.ingressFd, frame, ctx, repeat);
    return { decision: run.ctxOut.readInt32LE(SKB_CB_OFFSET), shed: run.ctxOut.readUInt32LE(SKB_CB_OFFSET + 8) === 1, durationNs: run.durationNs };
  }

  /**
   * Runs mf_tunnel on one frame as if it were a segment of a clone arriving on the
   * segmenting veth with `mark`; returns the program's verdict and the frame it leaves.
   */
  tunnel(frame: Buffer, mark: number): { verdict: number; frame: Buffer; ctxOut: Buffer } {
    const ctx = Buffer.alloc(SKB_CTX_SIZE);
    ctx.writeUInt32LE(mark >>> 0, SKB_MARK_OFFSET);
    const run = testRun(this.tunnelFd, frame, ctx);
    return { verdict: run.retval | 0, frame: run.dataOut, ctxOut: run.ctxOut };
  }

  /**
   * Counts the host's packet filter drops on these interfaces (kernel ifindexes in the
   * network namespace `netns`); an empty list detaches the tracer.
   */
  setRejectInterfaces(netns: number, ifindexes: readonly number[]): void {
    for (const key of mapKeys(this.rejectIfaces)) mapDelete(this.rejectIfaces, key);
    for (const ifindex of ifindexes) mapUpdate(this.rejectIfaces, encodeRejectIface(netns, ifindex), Buffer.from([1]));
    if (ifindexes.length > 0 && !this.rejectLink) {
      if (this.rejectUnavailable !== undefined) throw new Error(`REJECT records unavailable: ${this.rejectUnavailable}`);
      this.rejectLink = this.obj.attach(REJECT_PROGRAM);
    }
    if (ifindexes.length === 0) this.detachRejects();
  }

  get rejectsAttached(): boolean {
    return this.rejectLink !== undefined;
  }

  /**
   * Makes the programs count flows and drops in the other slot; returns the slot they
   * counted in until now. Take it (takeFlows, takeRejects) once the programs that read the
   * old slot are done (COUNT_SLOT_GRACE_MS): then no program adds to what is taken, and
   * every flow and drop is taken once.
   */
  flipCountSlot(): number {
    const old = this.countSlot;
    this.countSlot ^= 1;
    mapUpdate(this.state, u32Key(0), encodeState(this.active, this.countSlot));
    return old;
  }

  /** Reads and deletes the flows counted in `slot` ('all': both, at shutdown). */
  takeFlows(slot: number | 'all'): Promise<KernelFlow[]> {
    return this.flows.take(slot);
  }

  /** Reads and deletes the drops counted in `slot` ('all': both, at shutdown). */
  takeRejects(slot: number | 'all'): RejectedFlow[] {
    const out: RejectedFlow[] = [];
    const value = Buffer.alloc(REJECT_VAL_SIZE);
    for (const key of mapKeys(this.rejects)) {
      if (slot !== 'all' && flowSlotOf(key) !== slot) continue;
      if (mapLookupAndDelete(this.rejects, key, value)) out.push(decodeReject(key, value));
    }
    return out;
  }

  private detachRejects(): void {
    this.rejectLink?.destroy();
    this.rejectLink = undefined;
  }

  /** The kernel's id of one of the object's maps (for bpftool in the benchmark). */
  kernelMapId(name: string): number {
    return mapId(this.obj.map(name));
  }

  /** Instructions the verifier processed, per program (for the benchmark report). */
  verifiedInstructions(): Record<string, number> {
    const fds: Record<string, number> = { mf_ingress: this.ingressFd, mf_egress: this.egressFd, mf_tunnel: this.tunnelFd };
    if (this.rejectUnavailable === undefined) fds[REJECT_PROGRAM] = this.obj.programFd(REJECT_PROGRAM);
    return Object.fromEntries(Object.entries(fds).map(([name, fd]) => [name, verifiedInstructions(fd)]));
  }

  close(): void {
    this.detachRejects();
    this.obj.close();
  }
}
