// Byte layout of the structs in bpf/mirrorflow.h, written little-endian (host order of
// the x86-64/aarch64 kernels we load into) except address words, which stay in network
// order exactly like the packet bytes the programs compare them with. KERNEL_STRUCTS is
// the one table of offsets the encoders below use; test/unit/kernel-contract.test.ts
// compares it member by member with the BTF of the compiled object, and the loader checks
// each map's key and value size against it.

import { LIMITS } from '../limits.js';
import { DIR_IN, DIR_OUT, type Direction } from '../packet/view.js';
import { PORT_ANY, PROTO_ANY, type CompiledRule, type OwnOutput } from '../rules/compile.js';
import { ErrorCode, MirrorflowError } from '../errors.js';
import type { BudgetRate } from '../config/types.js';
import { budgetCosts } from '../mirror/budget.js';
import type { FlowCounts } from '../flow/aggregator.js';

export const MF_MAX_SESSIONS = LIMITS.enabledSessions;
export const MF_MAX_CHAIN = LIMITS.sessionsPerInterface;
export const MF_MAX_RULES = LIMITS.rulesPerDirection;
export const MF_MAX_OWN = LIMITS.ownOutputs;
export const MF_MAX_IFACES = LIMITS.sourceInterfaces;
export const MF_SLOTS = 2;
/** mf_iface_stats.decisions entries: index 0 accepted, index -code for each rules/match.ts code. */
export const MF_REASONS = 8;
export const MF_MARK_MAGIC = 0x4d460000;
/** mf_chain.flags: a flow log covers the interface. */
export const MF_CHAIN_FLOW_LOG = 1;
export const MF_MAX_POOL = LIMITS.poolMax;
export const MF_FLOW_ENTRIES = LIMITS.kernelFlows;
export const MF_TCP_CONNS = LIMITS.kernelTcpConnections;

/** One struct member: byte offset and byte size (an array member: the whole array). */
export interface Member {
  offset: number;
  size: number;
}

export interface StructLayout {
  size: number;
  members: Readonly<Record<string, Member>>;
}

const m = (offset: number, size: number): Member => ({ offset, size });

const RULE_SIZE = 80;
/** struct mf_budget: four u64. */
const BUDGET_SIZE = 32;
const SESSION_SIZE = 32 + BUDGET_SIZE;
const OWN_SIZE = 20;
const TCP_DIR_SIZE = 40;

/** Every struct of bpf/mirrorflow.h, in bytes, as the x86-64/aarch64 BPF target lays them out. */
export const KERNEL_STRUCTS = {
  mf_rule: {
    size: RULE_SIZE,
    members: {
      src_net: m(0, 16), src_mask: m(16, 16), dst_net: m(32, 16), dst_mask: m(48, 16),
      protocol: m(64, 4), sport_lo: m(68, 2), sport_hi: m(70, 2), dport_lo: m(72, 2), dport_hi: m(74, 2),
      family: m(76, 1), accept: m(77, 1), sport_any: m(78, 1), dport_any: m(79, 1),
    },
  },
  mf_chain: {
    size: 32 + MF_MAX_CHAIN * MF_MAX_RULES * RULE_SIZE,
    members: {
      n_sessions: m(0, 4), session: m(4, 4 * MF_MAX_CHAIN), n_rules: m(16, 4 * MF_MAX_CHAIN), flags: m(28, 4),
      rules: m(32, MF_MAX_CHAIN * MF_MAX_RULES * RULE_SIZE),
    },
  },
  mf_chain_key: { size: 8, members: { ifindex: m(0, 4), dir_slot: m(4, 4) } },
  mf_budget: {
    size: BUDGET_SIZE,
    members: { packet_cost: m(0, 8), byte_cost: m(8, 8), packet_depth: m(16, 8), byte_depth: m(24, 8) },
  },
  mf_bucket: { size: 16, members: { packet_tat: m(0, 8), byte_tat: m(8, 8) } },
  mf_session: {
    size: SESSION_SIZE,
    members: { vni: m(0, 4), trunc_len: m(4, 4), vxlan_ifindex: m(8, 4), family: m(12, 4), remote: m(16, 16), budget: m(32, BUDGET_SIZE) },
  },
  mf_own: { size: OWN_SIZE, members: { addr: m(0, 16), port: m(16, 2), family: m(18, 1), pad: m(19, 1) } },
  mf_slot: {
    size: 16 + MF_MAX_OWN * OWN_SIZE + MF_MAX_SESSIONS * SESSION_SIZE + BUDGET_SIZE,
    members: {
      epoch: m(0, 4), n_sessions: m(4, 4), n_own: m(8, 4), seg_ifindex: m(12, 4),
      own: m(16, MF_MAX_OWN * OWN_SIZE), sessions: m(16 + MF_MAX_OWN * OWN_SIZE, MF_MAX_SESSIONS * SESSION_SIZE),
      agent_budget: m(16 + MF_MAX_OWN * OWN_SIZE + MF_MAX_SESSIONS * SESSION_SIZE, BUDGET_SIZE),
    },
  },
  mf_state: { size: 8, members: { active_slot: m(0, 4), count_slot: m(4, 4) } },
  mf_frag_key: {
    size: 48,
    members: {
      src: m(0, 16), dst: m(16, 16), id: m(32, 4), ifindex: m(36, 4), epoch: m(40, 4),
      protocol: m(44, 1), dir: m(45, 1), pad: m(46, 2),
    },
  },
  mf_frag_val: { size: 16, members: { decision: m(0, 4), pad: m(4, 4), expires_ns: m(8, 8) } },
  mf_iface_key: { size: 8, members: { ifindex: m(0, 4), dir: m(4, 4) } },
  mf_iface_stats: {
    size: 24 + 8 * MF_REASONS,
    members: { packets: m(0, 8), bytes: m(8, 8), decisions: m(16, 8 * MF_REASONS), flow_skipped: m(16 + 8 * MF_REASONS, 8) },
  },
  mf_session_stats: { size: 40, members: { packets: m(0, 8), bytes: m(8, 8), truncated: m(16, 8), errors: m(24, 8), shed: m(32, 8) } },
  mf_flow_key: {
    size: 44,
    members: {
      src: m(0, 16), dst: m(16, 16), ifindex: m(32, 4), sport: m(36, 2), dport: m(38, 2),
      protocol: m(40, 1), family: m(41, 1), dir: m(42, 1), slot: m(43, 1),
    },
  },
  mf_reject_val: { size: 32, members: { packets: m(0, 8), bytes: m(8, 8), first_ns: m(16, 8), last_ns: m(24, 8) } },
  mf_reject_iface: { size: 8, members: { netns: m(0, 4), ifindex: m(4, 4) } },
  mf_flow_val: {
    size: 96,
    members: {
      packets: m(0, 8), bytes: m(8, 8), first_ns: m(16, 8), last_ns: m(24, 8), mirrored: m(32, 8),
      rtt_server_ns: m(40, 8), rtt_client_ns: m(48, 8), handshake_ns: m(56, 8),
      retrans: m(64, 4), syn_retrans: m(68, 4), zero_win: m(72, 4), resets: m(76, 4), out_of_order: m(80, 4), session: m(84, 4),
      tcp_flags: m(88, 1), pad: m(89, 7),
    },
  },
  mf_conn_key: { size: 44, members: { addr: m(0, 32), ifindex: m(32, 4), port: m(36, 4), family: m(40, 4) } },
  mf_tcp_dir: {
    size: TCP_DIR_SIZE,
    members: {
      last_advance_ns: m(0, 8), last_ack_ns: m(8, 8), next_seq: m(16, 4), base_seq: m(20, 4), last_ack: m(24, 4),
      last_window: m(28, 4), dup_acks: m(32, 4), has_base: m(36, 1), last_segment: m(37, 1), pad: m(38, 2),
    },
  },
  mf_tcp_conn: {
    size: 2 * TCP_DIR_SIZE + 32,
    members: {
      side: m(0, 2 * TCP_DIR_SIZE), syn_ns: m(80, 8), synack_ns: m(88, 8), first_rtt_ns: m(96, 8),
      client_side: m(104, 1), handshake_done: m(105, 1), pad: m(106, 6),
    },
  },
  mf_pool: { size: 8 + MF_MAX_POOL * 16, members: { n_members: m(0, 4), healthy: m(4, 4), remote: m(8, MF_MAX_POOL * 16) } },
  mf_member_stats: { size: 16, members: { packets: m(0, 8), bytes: m(8, 8) } },
} as const satisfies Record<string, StructLayout>;

const RULE = KERNEL_STRUCTS.mf_rule.members;
const CHAIN = KERNEL_STRUCTS.mf_chain.members;
const SESSION = KERNEL_STRUCTS.mf_session.members;
const OWN = KERNEL_STRUCTS.mf_own.members;
const SLOT = KERNEL_STRUCTS.mf_slot.members;
const FLOW_KEY = KERNEL_STRUCTS.mf_flow_key.members;
const REJECT_VAL = KERNEL_STRUCTS.mf_reject_val.members;
const FLOW_VAL = KERNEL_STRUCTS.mf_flow_val.members;
const SESSION_STATS = KERNEL_STRUCTS.mf_session_stats.members;
const BUDGET = KERNEL_STRUCTS.mf_budget.members;
const IFACE_STATS = KERNEL_STRUCTS.mf_iface_stats.members;

export const CHAIN_SIZE = KERNEL_STRUCTS.mf_chain.size;
export const CHAIN_KEY_SIZE = KERNEL_STRUCTS.mf_chain_key.size;
export const SLOT_SIZE = KERNEL_STRUCTS.mf_slot.size;
/** struct mf_bucket, and the index of the agent-wide one in mf_buckets (MF_AGENT_BUCKET). */
export const BUCKET_SIZE = KERNEL_STRUCTS.mf_bucket.size;
export const MF_AGENT_BUCKET = MF_SLOTS * MF_MAX_SESSIONS;
export const STATE_SIZE = KERNEL_STRUCTS.mf_state.size;
export const FRAG_KEY_SIZE = KERNEL_STRUCTS.mf_frag_key.size;
export const FRAG_VAL_SIZE = KERNEL_STRUCTS.mf_frag_val.size;
export const SESSION_STATS_SIZE = KERNEL_STRUCTS.mf_session_stats.size;
export const IFACE_KEY_SIZE = KERNEL_STRUCTS.mf_iface_key.size;
export const IFACE_STATS_SIZE = KERNEL_STRUCTS.mf_iface_stats.size;
export const FLOW_KEY_SIZE = KERNEL_STRUCTS.mf_flow_key.size;
export const FLOW_VAL_SIZE = KERNEL_STRUCTS.mf_flow_val.size;
export const CONN_KEY_SIZE = KERNEL_STRUCTS.mf_conn_key.size;
export const TCP_CONN_SIZE = KERNEL_STRUCTS.mf_tcp_conn.size;
export const REJECT_VAL_SIZE = KERNEL_STRUCTS.mf_reject_val.size;
export const REJECT_IFACE_SIZE = KERNEL_STRUCTS.mf_reject_iface.size;
export const POOL_SIZE = KERNEL_STRUCTS.mf_pool.size;
export const MEMBER_STATS_SIZE = KERNEL_STRUCTS.mf_member_stats.size;

function writeWords(buf: Buffer, offset: number, words: ArrayLike<number>): void {
  for (let i = 0; i < 4; i++) buf.writeUInt32BE(words[i]! >>> 0, offset + 4 * i);
}

function writeRule(buf: Buffer, offset: number, rule: CompiledRule): void {
  writeWords(buf, offset + RULE.src_net.offset, rule.srcNet);
  writeWords(buf, offset + RULE.src_mask.offset, rule.srcMask);
  writeWords(buf, offset + RULE.dst_net.offset, rule.dstNet);
  writeWords(buf, offset + RULE.dst_mask.offset, rule.dstMask);
  buf.writeInt32LE(rule.protocol === PROTO_ANY ? -1 : rule.protocol, offset + RULE.protocol.offset);
  const sportAny = rule.srcPortStart === PORT_ANY;
  const dportAny = rule.dstPortStart === PORT_ANY;
  buf.writeUInt16LE(sportAny ? 0 : rule.srcPortStart, offset + RULE.sport_lo.offset);
  buf.writeUInt16LE(sportAny ? 0 : rule.srcPortEnd, offset + RULE.sport_hi.offset);
  buf.writeUInt16LE(dportAny ? 0 : rule.dstPortStart, offset + RULE.dport_lo.offset);
  buf.writeUInt16LE(dportAny ? 0 : rule.dstPortEnd, offset + RULE.dport_hi.offset);
  buf.writeUInt8(rule.family, offset + RULE.family.offset);
  buf.writeUInt8(rule.accept ? 1 : 0, offset + RULE.accept.offset);
  buf.writeUInt8(sportAny ? 1 : 0, offset + RULE.sport_any.offset);
  buf.writeUInt8(dportAny ? 1 : 0, offset + RULE.dport_any.offset);
}

export interface ChainEntry {
  session: number;
  rules: readonly CompiledRule[];
}

/** struct mf_chain for one interface and direction; flowLogged sets MF_CHAIN_FLOW_LOG. */
export function encodeChain(entries: readonly ChainEntry[], flowLogged = false): Buffer {
  if (entries.length > MF_MAX_CHAIN) throw new MirrorflowError(ErrorCode.EBPF_LIMIT, `more than ${MF_MAX_CHAIN} sessions on one interface`);
  const buf = Buffer.alloc(CHAIN_SIZE);
  buf.writeUInt32LE(entries.length, CHAIN.n_sessions.offset);
  buf.writeUInt32LE(flowLogged ? MF_CHAIN_FLOW_LOG : 0, CHAIN.flags.offset);
  entries.forEach((entry, s) => {
    if (entry.rules.length > MF_MAX_RULES) throw new MirrorflowError(ErrorCode.EBPF_LIMIT, `more than ${MF_MAX_RULES} rules in one direction`);
    buf.writeUInt32LE(entry.session, CHAIN.session.offset + 4 * s);
    buf.writeUInt32LE(entry.rules.length, CHAIN.n_rules.offset + 4 * s);
    entry.rules.forEach((rule, r) => writeRule(buf, CHAIN.rules.offset + (s * MF_MAX_RULES + r) * RULE_SIZE, rule));
  });
  return buf;
}

/** Sets or clears MF_CHAIN_FLOW_LOG in an encoded struct mf_chain, in place. */
export function setChainFlowLog(chain: Buffer, flowLogged: boolean): void {
  chain.writeUInt32LE(flowLogged ? MF_CHAIN_FLOW_LOG : 0, CHAIN.flags.offset);
}

/** Whether an encoded struct mf_chain has MF_CHAIN_FLOW_LOG, and how many sessions. */
export function chainInfo(chain: Buffer): { flowLogged: boolean; sessions: number } {
  return { flowLogged: (chain.readUInt32LE(CHAIN.flags.offset) & MF_CHAIN_FLOW_LOG) !== 0, sessions: chain.readUInt32LE(CHAIN.n_sessions.offset) };
}

/** Two u32 fields: the shape of mf_chain_key, mf_state, mf_iface_key and mf_reject_iface. */
function u32Pair(first: number, second: number): Buffer {
  const buf = Buffer.alloc(8);
  buf.writeUInt32LE(first >>> 0, 0);
  buf.writeUInt32LE(second >>> 0, 4);
  return buf;
}

export function encodeChainKey(ifindex: number, dir: Direction, slot: number): Buffer {
  return u32Pair(ifindex, (dir === DIR_OUT ? 1 : 0) | (slot << 1));
}

export interface SlotSession {
  vni: number;
  truncLen: number;
  vxlanIfindex: number;
  family: 4 | 6;
  remote: ArrayLike<number>;
  /** Pool members' address words (empty or absent: no pool, copies go to `remote`). */
  members?: readonly ArrayLike<number>[];
  /** Bit i: member i healthy, at install. */
  healthy?: number;
  /** Absent: no budget of its own. */
  budget?: BudgetRate;
}

const NO_BUDGET: BudgetRate = { pps: 0, bps: 0 };

/** struct mf_budget: the rate as the kernel's GCRA costs (agent/mirror/budget.ts). */
function writeBudget(buf: Buffer, offset: number, rate: BudgetRate): void {
  const c = budgetCosts(rate);
  buf.writeBigUInt64LE(BigInt(c.packetCost), offset + BUDGET.packet_cost.offset);
  buf.writeBigUInt64LE(BigInt(c.byteCost), offset + BUDGET.byte_cost.offset);
  buf.writeBigUInt64LE(BigInt(c.packetDepth), offset + BUDGET.packet_depth.offset);
  buf.writeBigUInt64LE(BigInt(c.byteDepth), offset + BUDGET.byte_depth.offset);
}

/**
 * struct mf_slot: epoch, own outputs, the sessions of one rule set, where clones are
 * segmented and the agent-wide budget.
 */
export function encodeSlot(
  epoch: number, own: readonly OwnOutput[], sessions: readonly SlotSession[], segIfindex: number, agentBudget: BudgetRate = NO_BUDGET,
): Buffer {
  if (own.length > MF_MAX_OWN) throw new MirrorflowError(ErrorCode.EBPF_LIMIT, `more than ${MF_MAX_OWN} mirror targets and IPFIX collectors (the eBPF plane's limit)`);
  if (sessions.length > MF_MAX_SESSIONS) throw new MirrorflowError(ErrorCode.EBPF_LIMIT, `more than ${MF_MAX_SESSIONS} enabled sessions (the eBPF plane's limit)`);
  const buf = Buffer.alloc(SLOT_SIZE);
  buf.writeUInt32LE(epoch >>> 0, SLOT.epoch.offset);
  buf.writeUInt32LE(sessions.length, SLOT.n_sessions.offset);
  buf.writeUInt32LE(own.length, SLOT.n_own.offset);
  buf.writeUInt32LE(segIfindex, SLOT.seg_ifindex.offset);
  own.forEach((o, i) => {
    const off = SLOT.own.offset + i * OWN_SIZE;
    writeWords(buf, off + OWN.addr.offset, o.words);
    buf.writeUInt16LE(o.port, off + OWN.port.offset);
    buf.writeUInt8(o.family, off + OWN.family.offset);
  });
  sessions.forEach((s, i) => {
    const off = SLOT.sessions.offset + i * SESSION_SIZE;
    buf.writeUInt32LE(s.vni, off + SESSION.vni.offset);
    buf.writeUInt32LE(s.truncLen, off + SESSION.trunc_len.offset);
    buf.writeUInt32LE(s.vxlanIfindex, off + SESSION.vxlan_ifindex.offset);
    buf.writeUInt32LE(s.family, off + SESSION.family.offset);
    writeWords(buf, off + SESSION.remote.offset, s.remote);
    writeBudget(buf, off + SESSION.budget.offset, s.budget ?? NO_BUDGET);
  });
  writeBudget(buf, SLOT.agent_budget.offset, agentBudget);
  return buf;
}

/** struct mf_pool: the members' addresses (words in network order) and which are healthy; none: no pool. */
export function encodePool(members: readonly ArrayLike<number>[], healthy: number): Buffer {
  if (members.length > MF_MAX_POOL) throw new Error(`more than ${MF_MAX_POOL} pool members`);
  const buf = Buffer.alloc(POOL_SIZE);
  buf.writeUInt32LE(members.length, KERNEL_STRUCTS.mf_pool.members.n_members.offset);
  buf.writeUInt32LE(healthy >>> 0, POOL_HEALTHY_OFFSET);
  members.forEach((words, i) => writeWords(buf, KERNEL_STRUCTS.mf_pool.members.remote.offset + 16 * i, words));
  return buf;
}

/** Offset of struct mf_pool.healthy. */
export const POOL_HEALTHY_OFFSET = KERNEL_STRUCTS.mf_pool.members.healthy.offset;

/** mf_pools index of a session of a slot (also mf_session_stats'). */
export const sessionIndex = (slot: number, session: number): number => slot * MF_MAX_SESSIONS + session;

/** mf_member_stats index of one member of a session's pool. */
export const memberIndex = (slot: number, session: number, member: number): number => sessionIndex(slot, session) * MF_MAX_POOL + member;

/** Sums a per-CPU struct mf_member_stats lookup. */
export function sumMemberStats(perCpu: Buffer, cpus: number): { packets: number; bytes: number } {
  const out = { packets: 0, bytes: 0 };
  for (let c = 0; c < cpus; c++) {
    out.packets += Number(perCpu.readBigUInt64LE(c * MEMBER_STATS_SIZE));
    out.bytes += Number(perCpu.readBigUInt64LE(c * MEMBER_STATS_SIZE + 8));
  }
  return out;
}

/** Offset of a session's trunc_len in a slot value (struct mf_slot.sessions[i].trunc_len). */
export const sessionTruncLenOffset = (session: number): number => SLOT.sessions.offset + session * SESSION_SIZE + SESSION.trunc_len.offset;

/** struct mf_state: the live rule slot and the slot mf_flows and mf_rejects are counted in. */
export const encodeState = (activeSlot: number, countSlot: number): Buffer => u32Pair(activeSlot, countSlot);

export const encodeRejectIface = (netns: number, ifindex: number): Buffer => u32Pair(netns, ifindex);

/** An mf_flow_key: one direction of one 5-tuple on one interface (mf_flows and mf_rejects). */
export interface KernelFlowKey {
  ifindex: number;
  dir: Direction;
  family: 4 | 6;
  protocol: number;
  /** Address words as numbers in network order (like PacketView.src/dst). */
  src: number[];
  dst: number[];
  srcPort: number;
  /** ICMP/ICMPv6: type << 8 | code (srcPort 0). */
  dstPort: number;
  /** bpf_ktime_get_ns (CLOCK_MONOTONIC) of the last packet. */
  lastNs: bigint;
}

/** One drained mf_rejects entry: dropped packets of one interface, direction and 5-tuple. */
export interface RejectedFlow extends KernelFlowKey {
  packets: number;
  bytes: number;
}

/** The slot (mf_state.count_slot) an mf_flow_key was counted in. */
export const flowSlotOf = (key: Buffer): number => key.readUInt8(FLOW_KEY.slot.offset);

function decodeFlowKey(key: Buffer, lastNs: bigint): KernelFlowKey {
  const words = (off: number) => [key.readUInt32BE(off), key.readUInt32BE(off + 4), key.readUInt32BE(off + 8), key.readUInt32BE(off + 12)];
  return {
    src: words(FLOW_KEY.src.offset),
    dst: words(FLOW_KEY.dst.offset),
    ifindex: key.readUInt32LE(FLOW_KEY.ifindex.offset),
    srcPort: key.readUInt16LE(FLOW_KEY.sport.offset),
    dstPort: key.readUInt16LE(FLOW_KEY.dport.offset),
    protocol: key.readUInt8(FLOW_KEY.protocol.offset),
    family: key.readUInt8(FLOW_KEY.family.offset) === 6 ? 6 : 4,
    dir: key.readUInt8(FLOW_KEY.dir.offset) === 1 ? DIR_OUT : DIR_IN,
    lastNs,
  };
}

export function decodeReject(key: Buffer, value: Buffer): RejectedFlow {
  return {
    ...decodeFlowKey(key, value.readBigUInt64LE(REJECT_VAL.last_ns.offset)),
    packets: Number(value.readBigUInt64LE(REJECT_VAL.packets.offset)),
    bytes: Number(value.readBigUInt64LE(REJECT_VAL.bytes.offset)),
  };
}

/** An mf_flows entry summed over the CPUs: what one flow did between two drains. */
export interface KernelFlow {
  key: KernelFlowKey;
  counts: FlowCounts;
}

/** A u64 member as a number (exact below 2^53: counters, and nanoseconds of up to 104 days). */
const u64At = (buf: Buffer, off: number): number => buf.readUInt32LE(off) + buf.readUInt32LE(off + 4) * 2 ** 32;

/**
 * Sums an mf_flows entry's per-CPU values (each CPU's value 8-byte aligned; struct
 * mf_flow_val is). Where a flow has one value (RTTs, session), the CPU that saw its last
 * packet wins, as the last packet's would. Per flow and drain: no BigInt arithmetic, one
 * object per part, no spread (a drain of 100k flows must take milliseconds, not seconds:
 * BigInt reads and an object spread per flow made it 2.7 s).
 */
export function sumFlow(key: Buffer, perCpu: Buffer, cpus: number): KernelFlow {
  let packets = 0, bytes = 0, mirrored = 0, tcpFlags = 0, retrans = 0, synRetrans = 0, zeroWin = 0, resets = 0, outOfOrder = 0;
  let rttServerNs = 0, rttClientNs = 0, handshakeNs = 0, session = 0;
  let lastHi = -1, lastLo = 0;
  for (let c = 0; c < cpus; c++) {
    const off = c * FLOW_VAL_SIZE;
    const n = u64At(perCpu, off + FLOW_VAL.packets.offset);
    if (n === 0) continue;
    const hi = perCpu.readUInt32LE(off + FLOW_VAL.last_ns.offset + 4);
    const lo = perCpu.readUInt32LE(off + FLOW_VAL.last_ns.offset);
    const latest = hi > lastHi || (hi === lastHi && lo >= lastLo);
    if (latest) {
      lastHi = hi;
      lastLo = lo;
    }
    packets += n;
    bytes += u64At(perCpu, off + FLOW_VAL.bytes.offset);
    mirrored += u64At(perCpu, off + FLOW_VAL.mirrored.offset);
    tcpFlags |= perCpu.readUInt8(off + FLOW_VAL.tcp_flags.offset);
    retrans += perCpu.readUInt32LE(off + FLOW_VAL.retrans.offset);
    synRetrans += perCpu.readUInt32LE(off + FLOW_VAL.syn_retrans.offset);
    zeroWin += perCpu.readUInt32LE(off + FLOW_VAL.zero_win.offset);
    resets += perCpu.readUInt32LE(off + FLOW_VAL.resets.offset);
    outOfOrder += perCpu.readUInt32LE(off + FLOW_VAL.out_of_order.offset);
    const server = u64At(perCpu, off + FLOW_VAL.rtt_server_ns.offset);
    const client = u64At(perCpu, off + FLOW_VAL.rtt_client_ns.offset);
    const handshake = u64At(perCpu, off + FLOW_VAL.handshake_ns.offset);
    const s = perCpu.readUInt32LE(off + FLOW_VAL.session.offset);
    if (server > 0 && (latest || rttServerNs === 0)) rttServerNs = server;
    if (client > 0 && (latest || rttClientNs === 0)) rttClientNs = client;
    if (handshake > 0 && (latest || handshakeNs === 0)) handshakeNs = handshake;
    if (s > 0 && (latest || session === 0)) session = s;
  }
  return {
    key: decodeFlowKey(key, (BigInt(Math.max(lastHi, 0)) << 32n) | BigInt(lastLo)),
    counts: {
      packets, bytes, tcpFlags, retrans, synRetrans, zeroWin, resets, outOfOrder,
      rttServerUs: rttServerNs > 0 ? rttServerNs / 1000 : -1,
      rttClientUs: rttClientNs > 0 ? rttClientNs / 1000 : -1,
      handshakeUs: handshakeNs > 0 ? handshakeNs / 1000 : -1,
      mirrored,
      session: session - 1,
    },
  };
}

export function u32Key(n: number): Buffer {
  const key = Buffer.alloc(4);
  key.writeUInt32LE(n, 0);
  return key;
}

export interface SessionStats {
  packets: number;
  bytes: number;
  truncated: number;
  errors: number;
  /** Wire packets shed by the budget. */
  shed: number;
}

/** Sums a per-CPU struct mf_session_stats lookup (each CPU's value 8-byte aligned). */
export function sumSessionStats(perCpu: Buffer, cpus: number): SessionStats {
  const out = { packets: 0, bytes: 0, truncated: 0, errors: 0, shed: 0 };
  for (let c = 0; c < cpus; c++) {
    const off = c * SESSION_STATS_SIZE;
    out.packets += Number(perCpu.readBigUInt64LE(off + SESSION_STATS.packets.offset));
    out.bytes += Number(perCpu.readBigUInt64LE(off + SESSION_STATS.bytes.offset));
    out.truncated += Number(perCpu.readBigUInt64LE(off + SESSION_STATS.truncated.offset));
    out.errors += Number(perCpu.readBigUInt64LE(off + SESSION_STATS.errors.offset));
    out.shed += Number(perCpu.readBigUInt64LE(off + SESSION_STATS.shed.offset));
  }
  return out;
}

export interface IfaceStats {
  packets: number;
  bytes: number;
  /** Wire packets of a flow-logged interface not counted in a flow: mf_flows was full. */
  flowSkipped: number;
  /** Packets per decision: index 0 mirrored, else -code (rules/match.ts codes). */
  decisions: number[];
}

export const encodeIfaceKey = (ifindex: number, dir: Direction): Buffer => u32Pair(ifindex, dir);

/** Sums a per-CPU struct mf_iface_stats lookup. */
export function sumIfaceStats(perCpu: Buffer, cpus: number): IfaceStats {
  const out: IfaceStats = { packets: 0, bytes: 0, flowSkipped: 0, decisions: new Array<number>(MF_REASONS).fill(0) };
  for (let c = 0; c < cpus; c++) {
    const off = c * IFACE_STATS_SIZE;
    out.packets += Number(perCpu.readBigUInt64LE(off + IFACE_STATS.packets.offset));
    out.bytes += Number(perCpu.readBigUInt64LE(off + IFACE_STATS.bytes.offset));
    out.flowSkipped += Number(perCpu.readBigUInt64LE(off + IFACE_STATS.flow_skipped.offset));
    for (let i = 0; i < MF_REASONS; i++) {
      out.decisions[i]! += Number(perCpu.readBigUInt64LE(off + IFACE_STATS.decisions.offset + 8 * i));
    }
  }
  return out;
}
