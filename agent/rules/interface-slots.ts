// Stable interface indexes across the agent's rebuilds. Everything per interface (pipeline
// counters, rule chains, the flow stage's tables and TCP state, whose flow keys hold the
// index) is indexed by the position of the interface in RuleSet.interfaces. If an interface
// appearing or going shifted those positions, the flow stage would have to start over and
// every other interface's open flows would be written early. So an interface keeps its slot
// while it is covered; a slot whose interface went stays reserved for `quarantineSec` (its
// open flows are written at the end of their window, under its name), then the next new
// interface takes it. The list is as long as the most interfaces covered at once plus those
// gone within the quarantine: bounded however many come and go over time.

export interface SlotLayout {
  /** Interface names by slot. */
  interfaces: string[];
  /** By slot: 1 when covered now, 0 when its interface is gone and the slot is reserved. */
  live: Uint8Array;
}

export class InterfaceSlots {
  private names: string[] = [];
  /** When each reserved slot's interface stopped being covered (seconds). */
  private readonly goneSince = new Map<number, number>();

  /** `quarantineSec`: at least the longest flow log window plus the grace before it is written. */
  constructor(private quarantineSec: number) {}

  /** The quarantine follows the config (its longest window). */
  setQuarantine(seconds: number): void {
    this.quarantineSec = seconds;
  }

  /** Slots for the interfaces `covered` now (in their order for new ones) at time `nowSec`. */
  layout(covered: readonly string[], nowSec: number): SlotLayout {
    const wanted = new Set(covered);
    this.names.forEach((name, i) => {
      if (wanted.has(name)) this.goneSince.delete(i);
      else if (!this.goneSince.has(i)) this.goneSince.set(i, nowSec);
    });
    const placed = new Set(this.names);
    for (const name of covered) {
      if (placed.has(name)) continue;
      placed.add(name);
      const free = this.freeSlot(nowSec);
      if (free < 0) this.names.push(name);
      else {
        this.names[free] = name;
        this.goneSince.delete(free);
      }
    }
    return { interfaces: [...this.names], live: Uint8Array.from(this.names, (name) => (wanted.has(name) ? 1 : 0)) };
  }

  /** The longest-reserved slot past its quarantine, or -1. */
  private freeSlot(nowSec: number): number {
    let best = -1;
    let since = Infinity;
    for (const [slot, t] of this.goneSince) {
      if (nowSec - t >= this.quarantineSec && t < since) {
        best = slot;
        since = t;
      }
    }
    return best;
  }
}

/**
 * Per-interface counters carried across a change of slot layout: a slot keeps its value
 * while it names the same interface; a slot new, or given to another interface, starts at 0.
 */
export function carryBySlot(values: Float64Array, before: readonly string[], after: readonly string[]): Float64Array {
  const out = new Float64Array(after.length);
  for (let i = 0; i < Math.min(out.length, values.length); i++) if (after[i] === before[i]) out[i] = values[i]!;
  return out;
}
