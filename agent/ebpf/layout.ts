// Byte layout of the structs in bpf/mirrorflow.h, written little-endian (host order of
// the x86-64/aarch64 kernels we load into) except address words, which stay in network
// order exactly like the packet bytes the programs compare them with. The loader checks
// these sizes against the map definitions of the compiled object.

import { DIR_IN, DIR_OUT, type Direction } from '../packet/view.js';
import { PORT_ANY, PROTO_ANY, type CompiledRule, type OwnOutput } from '../rules/compile.js';
import type { BudgetRate } from '../config/types.js';
import { budgetCosts } from '../mirror/budget.js';

export const MF_MAX_SESSIONS = 64;
export const MF_MAX_CHAIN = 3;
export const MF_MAX_RULES = 10;
export const MF_MAX_OWN = 16;
export const MF_MAX_IFACES = 256;
export const MF_SLOTS = 2;
export const MF_REASONS = 8;
export const MF_MARK_MAGIC = 0x4d460000;
export const MF_MAX_POOL = 16;

export const RULE_SIZE = 80;
const CHAIN_RULES_OFFSET = 28;
export const CHAIN_SIZE = CHAIN_RULES_OFFSET + MF_MAX_CHAIN * MF_MAX_RULES * RULE_SIZE;
export const CHAIN_KEY_SIZE = 8;
/** struct mf_budget: four u64. */
const BUDGET_SIZE = 32;
const SESSION_BUDGET_OFFSET = 32;
const SESSION_SIZE = SESSION_BUDGET_OFFSET + BUDGET_SIZE;
const OWN_SIZE = 20;
const SLOT_OWN_OFFSET = 16;
const SLOT_SESSIONS_OFFSET = SLOT_OWN_OFFSET + MF_MAX_OWN * OWN_SIZE;
const SLOT_AGENT_BUDGET_OFFSET = SLOT_SESSIONS_OFFSET + MF_MAX_SESSIONS * SESSION_SIZE;
export const SLOT_SIZE = SLOT_AGENT_BUDGET_OFFSET + BUDGET_SIZE;
/** struct mf_bucket, and the index of the agent-wide one in mf_buckets (MF_AGENT_BUCKET). */
export const BUCKET_SIZE = 16;
export const MF_AGENT_BUCKET = MF_SLOTS * MF_MAX_SESSIONS;
export const STATE_SIZE = 8;
export const FRAG_KEY_SIZE = 48;
export const FRAG_VAL_SIZE = 16;
export const SESSION_STATS_SIZE = 40;
export const IFACE_KEY_SIZE = 8;
export const IFACE_STATS_SIZE = 16 + 8 * 8;
export const REJECT_KEY_SIZE = 44;
export const REJECT_VAL_SIZE = 32;
export const REJECT_IFACE_SIZE = 8;
export const POOL_SIZE = 8 + MF_MAX_POOL * 16;
export const MEMBER_STATS_SIZE = 16;

function writeWords(buf: Buffer, offset: number, words: ArrayLike<number>): void {
  for (let i = 0; i < 4; i++) buf.writeUInt32BE(words[i]! >>> 0, offset + 4 * i);
}

function writeRule(buf: Buffer, offset: number, rule: CompiledRule): void {
  writeWords(buf, offset, rule.srcNet);
  writeWords(buf, offset + 16, rule.srcMask);
  writeWords(buf, offset + 32, rule.dstNet);
  writeWords(buf, offset + 48, rule.dstMask);
  buf.writeInt32LE(rule.protocol === PROTO_ANY ? -1 : rule.protocol, offset + 64);
  const sportAny = rule.srcPortStart === PORT_ANY;
  const dportAny = rule.dstPortStart === PORT_ANY;
  buf.writeUInt16LE(sportAny ? 0 : rule.srcPortStart, offset + 68);
  buf.writeUInt16LE(sportAny ? 0 : rule.srcPortEnd, offset + 70);
  buf.writeUInt16LE(dportAny ? 0 : rule.dstPortStart, offset + 72);
  buf.writeUInt16LE(dportAny ? 0 : rule.dstPortEnd, offset + 74);
  buf.writeUInt8(rule.family, offset + 76);
  buf.writeUInt8(rule.accept ? 1 : 0, offset + 77);
  buf.writeUInt8(sportAny ? 1 : 0, offset + 78);
  buf.writeUInt8(dportAny ? 1 : 0, offset + 79);
}

export interface ChainEntry {
  session: number;
  rules: readonly CompiledRule[];
}

/** struct mf_chain for one interface and direction. */
export function encodeChain(entries: readonly ChainEntry[]): Buffer {
  if (entries.length > MF_MAX_CHAIN) throw new Error(`more than ${MF_MAX_CHAIN} sessions on one interface`);
  const buf = Buffer.alloc(CHAIN_SIZE);
  buf.writeUInt32LE(entries.length, 0);
  entries.forEach((entry, s) => {
    if (entry.rules.length > MF_MAX_RULES) throw new Error(`more than ${MF_MAX_RULES} rules in one direction`);
    buf.writeUInt32LE(entry.session, 4 + 4 * s);
    buf.writeUInt32LE(entry.rules.length, 16 + 4 * s);
    entry.rules.forEach((rule, r) => writeRule(buf, CHAIN_RULES_OFFSET + (s * MF_MAX_RULES + r) * RULE_SIZE, rule));
  });
  return buf;
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
  [c.packetCost, c.byteCost, c.packetDepth, c.byteDepth].forEach((v, i) => buf.writeBigUInt64LE(BigInt(v), offset + 8 * i));
}

/**
 * struct mf_slot: epoch, own outputs, the sessions of one rule set, where clones are
 * segmented and the agent-wide budget.
 */
export function encodeSlot(
  epoch: number, own: readonly OwnOutput[], sessions: readonly SlotSession[], segIfindex: number, agentBudget: BudgetRate = NO_BUDGET,
): Buffer {
  if (own.length > MF_MAX_OWN) throw new Error(`more than ${MF_MAX_OWN} mirror targets and collectors`);
  if (sessions.length > MF_MAX_SESSIONS) throw new Error(`more than ${MF_MAX_SESSIONS} enabled sessions`);
  const buf = Buffer.alloc(SLOT_SIZE);
  buf.writeUInt32LE(epoch >>> 0, 0);
  buf.writeUInt32LE(sessions.length, 4);
  buf.writeUInt32LE(own.length, 8);
  buf.writeUInt32LE(segIfindex, 12);
  own.forEach((o, i) => {
    const off = SLOT_OWN_OFFSET + i * OWN_SIZE;
    writeWords(buf, off, o.words);
    buf.writeUInt16LE(o.port, off + 16);
    buf.writeUInt8(o.family, off + 18);
  });
  sessions.forEach((s, i) => {
    const off = SLOT_SESSIONS_OFFSET + i * SESSION_SIZE;
    buf.writeUInt32LE(s.vni, off);
    buf.writeUInt32LE(s.truncLen, off + 4);
    buf.writeUInt32LE(s.vxlanIfindex, off + 8);
    buf.writeUInt32LE(s.family, off + 12);
    writeWords(buf, off + 16, s.remote);
    writeBudget(buf, off + SESSION_BUDGET_OFFSET, s.budget ?? NO_BUDGET);
  });
  writeBudget(buf, SLOT_AGENT_BUDGET_OFFSET, agentBudget);
  return buf;
}

/** struct mf_pool: the members' addresses (words in network order) and which are healthy; none: no pool. */
export function encodePool(members: readonly ArrayLike<number>[], healthy: number): Buffer {
  if (members.length > MF_MAX_POOL) throw new Error(`more than ${MF_MAX_POOL} pool members`);
  const buf = Buffer.alloc(POOL_SIZE);
  buf.writeUInt32LE(members.length, 0);
  buf.writeUInt32LE(healthy >>> 0, 4);
  members.forEach((words, i) => writeWords(buf, 8 + 16 * i, words));
  return buf;
}

/** Offset of struct mf_pool.healthy. */
export const POOL_HEALTHY_OFFSET = 4;

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
export const sessionTruncLenOffset = (session: number): number => SLOT_SESSIONS_OFFSET + session * SESSION_SIZE + 4;

export const encodeState = (activeSlot: number, rejectSlot: number): Buffer => u32Pair(activeSlot, rejectSlot);

export const encodeRejectIface = (netns: number, ifindex: number): Buffer => u32Pair(netns, ifindex);

/** One drained mf_rejects entry: dropped packets of one interface, direction and 5-tuple. */
export interface RejectedFlow {
  ifindex: number;
  dir: Direction;
  family: 4 | 6;
  protocol: number;
  /** Address words as numbers in network order (like PacketView.src/dst). */
  src: number[];
  dst: number[];
  srcPort: number;
  dstPort: number;
  packets: number;
  bytes: number;
  /** bpf_ktime_get_ns (CLOCK_MONOTONIC) of the last packet. */
  lastNs: bigint;
}

export const rejectSlotOf = (key: Buffer): number => key.readUInt8(43);

export function decodeReject(key: Buffer, value: Buffer): RejectedFlow {
  const words = (off: number) => [0, 1, 2, 3].map((i) => key.readUInt32BE(off + 4 * i));
  return {
    src: words(0),
    dst: words(16),
    ifindex: key.readUInt32LE(32),
    srcPort: key.readUInt16LE(36),
    dstPort: key.readUInt16LE(38),
    protocol: key.readUInt8(40),
    family: key.readUInt8(41) === 6 ? 6 : 4,
    dir: key.readUInt8(42) === 1 ? DIR_OUT : DIR_IN,
    packets: Number(value.readBigUInt64LE(0)),
    bytes: Number(value.readBigUInt64LE(8)),
    lastNs: value.readBigUInt64LE(24),
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
    out.packets += Number(perCpu.readBigUInt64LE(off));
    out.bytes += Number(perCpu.readBigUInt64LE(off + 8));
    out.truncated += Number(perCpu.readBigUInt64LE(off + 16));
    out.errors += Number(perCpu.readBigUInt64LE(off + 24));
    out.shed += Number(perCpu.readBigUInt64LE(off + 32));
  }
  return out;
}

export interface IfaceStats {
  packets: number;
  bytes: number;
  /** Packets per decision: index 0 mirrored, else -code (rules/match.ts codes). */
  decisions: number[];
}

export const encodeIfaceKey = (ifindex: number, dir: Direction): Buffer => u32Pair(ifindex, dir);

/** Sums a per-CPU struct mf_iface_stats lookup. */
export function sumIfaceStats(perCpu: Buffer, cpus: number): IfaceStats {
  const out: IfaceStats = { packets: 0, bytes: 0, decisions: new Array<number>(MF_REASONS).fill(0) };
  for (let c = 0; c < cpus; c++) {
    const off = c * IFACE_STATS_SIZE;
    out.packets += Number(perCpu.readBigUInt64LE(off));
    out.bytes += Number(perCpu.readBigUInt64LE(off + 8));
    for (let i = 0; i < MF_REASONS; i++) out.decisions[i]! += Number(perCpu.readBigUInt64LE(off + 16 + 8 * i));
  }
  return out;
}
