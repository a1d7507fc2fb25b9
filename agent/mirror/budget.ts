// Mirror budget (docs/config.md "Mirror budget"): production traffic wins, so copies past a
// rate are shed before they cost the host anything more. A session's budget and the
// agent-wide one are token buckets in two dimensions, wire packets per second and bits per
// second of the copies' inner frames after the cut (what mirror_bytes_total counts). A copy
// is sent only when both buckets have room for it in both dimensions; then both are charged.
//
// Each bucket is a GCRA (virtual scheduling): per dimension, the time its debt runs out
// (tat). A copy of cost c fits when max(tat, now) + c - now <= depth. The eBPF plane runs the
// same rule in bpf/budget.bpf.h with the costs budgetCosts() computes here.
//
// "now" is the packet's capture time, as in the kernel (which charges at the clone), not the
// time user space gets to the copy: an agent that falls behind and then works through its
// ring's backlog would otherwise see the backlog as one burst past the bucket's depth and
// shed copies of traffic well under the budget (measured: 6,533 of 40,000 copies shed at
// 20k pps against a 100k pps budget). Capture times are wall-clock, so a clock stepped back
// would leave the debt in the future; a debt beyond what any charge can leave (depth) plus
// CLOCK_STEP_NS starts the bucket afresh.

import type { BudgetRate } from '../config/types.js';

/** The kernel's time unit for budgets: 1/256 ns (bpf/mirrorflow.h MF_BUDGET_SHIFT). */
export const BUDGET_SHIFT = 8;
const UNITS_PER_NS = 1 << BUDGET_SHIFT;
/** How much of its rate a bucket can save up: its burst. */
export const BUDGET_BURST_NS = 100e6;
/** The least a bucket holds whatever its rate: a whole 64 KiB aggregate of up to 64 segments. */
export const BUDGET_MIN_BURST_PACKETS = 64;
export const BUDGET_MIN_BURST_BYTES = 65536;
/** Debt this far past the most a charge can leave is a wall clock stepped back, not traffic. */
const CLOCK_STEP_NS = 1e9;

/** A budget as the kernel takes it (struct mf_budget): costs and depths in 1/256 ns; a cost of 0 is no limit. */
export interface BudgetCosts {
  packetCost: number;
  byteCost: number;
  packetDepth: number;
  byteDepth: number;
}

/** The costs of a rate; 0 (no limit) in a dimension gives cost and depth 0 there. */
export function budgetCosts(rate: BudgetRate): BudgetCosts {
  const dimension = (perSecond: number, minBurst: number) => {
    if (perSecond === 0) return { cost: 0, depth: 0 };
    const ns = 1e9 / perSecond;
    return { cost: Math.round(ns * UNITS_PER_NS), depth: Math.round(Math.max(BUDGET_BURST_NS, minBurst * ns) * UNITS_PER_NS) };
  };
  const packets = dimension(rate.pps, BUDGET_MIN_BURST_PACKETS);
  const bytes = dimension(rate.bps / 8, BUDGET_MIN_BURST_BYTES);
  return { packetCost: packets.cost, byteCost: bytes.cost, packetDepth: packets.depth, byteDepth: bytes.depth };
}

/** One bucket, both dimensions; times in ns of a monotonic clock. */
export class BudgetBucket {
  private readonly packetCost: number;
  private readonly byteCost: number;
  private readonly packetDepth: number;
  private readonly byteDepth: number;
  private packetTat = 0;
  private byteTat = 0;

  constructor(readonly rate: BudgetRate) {
    const c = budgetCosts(rate);
    this.packetCost = c.packetCost / UNITS_PER_NS;
    this.byteCost = c.byteCost / UNITS_PER_NS;
    this.packetDepth = c.packetDepth / UNITS_PER_NS;
    this.byteDepth = c.byteDepth / UNITS_PER_NS;
  }

  fits(packets: number, bytes: number, nowNs: number): boolean {
    if (this.packetTat - nowNs > this.packetDepth + CLOCK_STEP_NS || this.byteTat - nowNs > this.byteDepth + CLOCK_STEP_NS) {
      this.packetTat = 0;
      this.byteTat = 0;
    }
    // A cost of 0 is no limit in that dimension: it fits whatever the time stamps do (capture
    // times from several CPUs can step back by microseconds, past a depth of 0).
    return (this.packetCost === 0 || Math.max(this.packetTat, nowNs) + packets * this.packetCost - nowNs <= this.packetDepth)
      && (this.byteCost === 0 || Math.max(this.byteTat, nowNs) + bytes * this.byteCost - nowNs <= this.byteDepth);
  }

  charge(packets: number, bytes: number, nowNs: number): void {
    this.packetTat = Math.max(this.packetTat, nowNs) + packets * this.packetCost;
    this.byteTat = Math.max(this.byteTat, nowNs) + bytes * this.byteCost;
  }
}

/** A session's bucket with the agent-wide one it shares with every session; counts what it sheds. */
export class SessionBudget {
  /** Wire packets not sent because a bucket had no room. */
  shed = 0;

  constructor(private readonly own: BudgetBucket, private readonly agent: BudgetBucket) {}

  /** True (both buckets charged) when the copy may go; false (counted in shed) when it is shed. */
  admit(packets: number, bytes: number, nowNs: number): boolean {
    if (!this.own.fits(packets, bytes, nowNs) || !this.agent.fits(packets, bytes, nowNs)) {
      this.shed += packets;
      return false;
    }
    this.own.charge(packets, bytes, nowNs);
    this.agent.charge(packets, bytes, nowNs);
    return true;
  }
}
