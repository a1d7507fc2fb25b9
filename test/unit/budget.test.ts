// The mirror budget's token buckets (agent/mirror/budget.ts), on a clock the test drives.
import { describe, expect, it } from 'vitest';
import {
  BUDGET_BURST_NS, BUDGET_MIN_BURST_BYTES, BUDGET_MIN_BURST_PACKETS, BudgetBucket, SessionBudget, budgetCosts,
} from '../../agent/mirror/budget.js';

const MS = 1e6;
const NONE = { pps: 0, bps: 0 };

/** Offers `count` copies of `bytes` evenly over [start, start + spanNs); returns how many were admitted. */
function offer(budget: SessionBudget, count: number, bytes: number, start: number, spanNs: number): number {
  let admitted = 0;
  for (let i = 0; i < count; i++) if (budget.admit(1, bytes, start + (i * spanNs) / count)) admitted++;
  return admitted;
}

describe('mirror budget buckets', () => {
  it('a full bucket lets a burst of 100 ms of its rate through at once, then sheds', () => {
    const budget = new SessionBudget(new BudgetBucket({ pps: 10_000, bps: 0 }), new BudgetBucket(NONE));
    // 5000 copies in the same instant: 100 ms of 10k pps is 1000, plus the one whose cost ends exactly at the depth.
    expect(offer(budget, 5000, 64, 1e12, 0)).toBe(1000);
    expect(budget.shed).toBe(4000);
  });

  it('refills at its rate: a 10x flood for 2 s delivers the rate plus one burst', () => {
    const budget = new SessionBudget(new BudgetBucket({ pps: 1000, bps: 0 }), new BudgetBucket(NONE));
    const admitted = offer(budget, 20_000, 64, 1e12, 2000 * MS);
    // 2 s at 1000 pps plus the 100-packet burst (the 64-packet minimum is less), give or take one copy at the edge.
    expect(admitted).toBeGreaterThanOrEqual(2000 + 100 - 1);
    expect(admitted).toBeLessThanOrEqual(2000 + 100 + 1);
    expect(budget.shed).toBe(20_000 - admitted);
  });

  it('below its rate nothing is shed', () => {
    const budget = new SessionBudget(new BudgetBucket({ pps: 1000, bps: 8_000_000 }), new BudgetBucket(NONE));
    expect(offer(budget, 900, 1000, 0, 1000 * MS)).toBe(900);
    expect(budget.shed).toBe(0);
  });

  it('the bit rate limits bytes: 1500-byte copies at 12 Mbit/s pass at 1000 per second', () => {
    const budget = new SessionBudget(new BudgetBucket({ pps: 0, bps: 12_000_000 }), new BudgetBucket(NONE));
    // 10 s of 5000 copies per second; the burst is 100 ms (150 kB) of the rate.
    const admitted = offer(budget, 50_000, 1500, 5e12, 10_000 * MS);
    expect(admitted).toBeGreaterThanOrEqual(10_000 + 100 - 1);
    expect(admitted).toBeLessThanOrEqual(10_000 + 100 + 1);
  });

  it('both dimensions hold: whichever is tighter decides', () => {
    // 1000 pps, and 800 kbit/s = 100 kB/s: 64-byte copies meet the packet limit, 1000-byte copies the byte limit.
    const small = new SessionBudget(new BudgetBucket({ pps: 1000, bps: 800_000 }), new BudgetBucket(NONE));
    const large = new SessionBudget(new BudgetBucket({ pps: 1000, bps: 800_000 }), new BudgetBucket(NONE));
    const s = offer(small, 10_000, 64, 0, 1000 * MS);
    const l = offer(large, 10_000, 1000, 0, 1000 * MS);
    expect(s).toBeGreaterThanOrEqual(1000);
    expect(s).toBeLessThanOrEqual(1000 + 100 + 1);
    // 100 kB/s of 1000-byte copies is 100/s, plus a burst of 64 KiB (65 copies: more than 100 ms of the rate).
    expect(l).toBeGreaterThanOrEqual(100 + 65 - 1);
    expect(l).toBeLessThanOrEqual(100 + 66 + 1);
  });

  it('the agent-wide bucket caps sessions together; a copy shed by one bucket charges neither', () => {
    const agent = new BudgetBucket({ pps: 1000, bps: 0 });
    const a = new SessionBudget(new BudgetBucket(NONE), agent);
    const b = new SessionBudget(new BudgetBucket({ pps: 100, bps: 0 }), agent);
    let admitted = 0;
    for (let i = 0; i < 20_000; i++) {
      const t = (i * 1000 * MS) / 20_000;
      if (a.admit(1, 64, t)) admitted++;
      if (b.admit(1, 64, t)) admitted++;
    }
    // One second: the agent's 1000 plus its burst of 100.
    expect(admitted).toBeGreaterThanOrEqual(1099);
    expect(admitted).toBeLessThanOrEqual(1101);
    // b's own 100 pps with its 64-packet minimum burst; what b shed on its own bucket left the agent's budget to a.
    expect(20_000 - b.shed).toBeLessThanOrEqual(100 + 64 + 1);
    expect(a.shed + b.shed).toBe(40_000 - admitted);
  });

  it('an aggregate is charged its wire packets and fits only when the bucket holds them all', () => {
    const budget = new SessionBudget(new BudgetBucket({ pps: 100, bps: 0 }), new BudgetBucket(NONE));
    expect(budget.admit(45, 45 * 1514, 0)).toBe(true);
    // 64-packet minimum depth: 45 used, 19 left.
    expect(budget.admit(20, 20 * 1514, 0)).toBe(false);
    expect(budget.shed).toBe(20);
    expect(budget.admit(19, 19 * 1514, 0)).toBe(true);
  });

  it('a wall clock stepped back an hour does not leave the bucket in debt for that hour', () => {
    const budget = new SessionBudget(new BudgetBucket({ pps: 1000, bps: 8_000_000 }), new BudgetBucket(NONE));
    const start = 5e12;
    // Emptied: 100 ms of the rate at once, the rest shed.
    expect(offer(budget, 500, 1000, start, 0)).toBe(100);
    // Capture times jump back an hour (an NTP step): the flow at 500 pps goes on being sent.
    expect(offer(budget, 500, 1000, start - 3600e9, 1000 * MS)).toBe(500);
    // A reorder within a second is still traffic: at the empty bucket's edge nothing extra fits.
    expect(offer(budget, 200, 1000, start - 3600e9 + 1000 * MS + 100 * MS, 0)).toBe(100);
    expect(budget.admit(1, 1000, start - 3600e9 + 1000 * MS + 50 * MS)).toBe(false);
  });

  it('no limit in either dimension admits everything', () => {
    const budget = new SessionBudget(new BudgetBucket(NONE), new BudgetBucket(NONE));
    expect(offer(budget, 100_000, 9000, 0, 0)).toBe(100_000);
  });

  it('no limit admits copies whose capture times step back (frames from several CPUs)', () => {
    const budget = new SessionBudget(new BudgetBucket(NONE), new BudgetBucket({ pps: 0, bps: 8e9 }));
    let admitted = 0;
    for (let i = 0; i < 1000; i++) if (budget.admit(1, 1500, 5e12 + (i % 2 === 0 ? 3000 : 0) + i)) admitted++;
    expect(admitted).toBe(1000);
    expect(budget.shed).toBe(0);
  });

  it('the kernel costs: 1/256 ns units, depth 100 ms or the minimum burst, 0 for no limit', () => {
    expect(budgetCosts({ pps: 1000, bps: 8_000_000 })).toEqual({
      packetCost: 1e6 * 256, byteCost: 1000 * 256, packetDepth: BUDGET_BURST_NS * 256, byteDepth: BUDGET_BURST_NS * 256,
    });
    // 10 pps: 100 ms would be one packet; the depth is 64 packets' worth.
    expect(budgetCosts({ pps: 10, bps: 0 }).packetDepth).toBe(BUDGET_MIN_BURST_PACKETS * 1e8 * 256);
    // 100 kbit/s: 100 ms is 1250 bytes; the depth is 64 KiB's worth.
    expect(budgetCosts({ pps: 0, bps: 100_000 }).byteDepth).toBe(BUDGET_MIN_BURST_BYTES * 80_000 * 256);
    expect(budgetCosts(NONE)).toEqual({ packetCost: 0, byteCost: 0, packetDepth: 0, byteDepth: 0 });
    // The largest costs and depths stay exact in a double (the kernel takes them as u64).
    const c = budgetCosts({ pps: 1, bps: 100_000 });
    for (const v of Object.values(c)) expect(Number.isSafeInteger(v)).toBe(true);
  });
});
