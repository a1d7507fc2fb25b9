// What the eBPF plane's programs counted for the flow logs, handed to the flow stage once a
// tick: the flows of flow-logged interfaces (bpf/flowlog.bpf.h) as ACCEPT records with their
// TCP analysis, the host's packet filter drops (bpf/reject.bpf.h) as REJECT records, and the
// packets a full kernel flow table could not count as SKIPDATA. No packet of a flow log goes
// through user space on this plane; the work here is per flow and tick.

import type { FlowStage } from '../flow/stage.js';
import { PacketView } from '../packet/view.js';
import type { RuleSet } from '../rules/compile.js';
import type { FlowCounts } from '../flow/aggregator.js';
import type { EbpfDataPlane } from './data-plane.js';
import type { KernelFlowKey, RejectedFlow } from './layout.js';
import { fillRejectView } from './reject-view.js';

/** How much to take: what was counted until now (every tick), both slots (the flow stage is replaced), or everything once counting stopped (shutdown). */
export type FeedMode = 'tick' | 'all' | 'stop';

export class KernelFlowFeed {
  /** Reused for every entry handed to the flow stage. */
  private readonly view = new PacketView();
  /** mf_iface_stats.flow_skipped already reported, by interface name. */
  private readonly skippedSeen = new Map<string, number>();

  /** Drains run one after the other (a tick's may still wait when a reload or shutdown asks for one). */
  private running: Promise<void> = Promise.resolve();

  constructor(private readonly kernel: EbpfDataPlane) {}

  /** Drains the kernel's flow and REJECT maps into `flow` (interface indexes from `rules`). */
  feed(flow: FlowStage | undefined, rules: RuleSet, mode: FeedMode): Promise<void> {
    const next = this.running.then(() => this.drainInto(flow, rules, mode));
    this.running = next.catch(() => undefined);
    return next;
  }

  /**
   * Everything counted so far while the programs go on counting: two flips, each slot taken
   * after the programs left it. Taking the live slot directly would race them (an entry
   * updated between its read and its delete loses that packet: one per interface per
   * rebuild when interfaces come and go under traffic).
   */
  private async bothSlots(): ReturnType<EbpfDataPlane['drainCounted']> {
    const first = await this.kernel.drainCounted(false);
    const second = await this.kernel.drainCounted(false);
    return { flows: [...first.flows, ...second.flows], rejects: [...first.rejects, ...second.rejects] };
  }

  private async drainInto(flow: FlowStage | undefined, rules: RuleSet, mode: FeedMode): Promise<void> {
    if (mode === 'stop') {
      this.kernel.stopFlows();
      this.kernel.stopRejects();
    }
    const { flows, rejects } = mode === 'all' ? await this.bothSlots() : await this.kernel.drainCounted(mode === 'stop');
    const skipped = this.newlySkipped();
    if (!flow) return;
    for (const [name, packets] of skipped) {
      const i = rules.interfaceIndex(name);
      if (i >= 0) flow.noteDrops(i, packets);
    }
    // In time order: a flow of the next window closes the open one, so no earlier flow may follow it.
    const entries: Array<{ name: string; key: KernelFlowKey; counts?: FlowCounts; reject?: RejectedFlow }> = [
      ...flows.map((f) => ({ name: f.interfaceName, key: f.flow.key, counts: f.flow.counts })),
      ...rejects.map((r) => ({ name: r.interfaceName, key: r, reject: r })),
    ];
    entries.sort((a, b) => (a.key.lastNs < b.key.lastNs ? -1 : a.key.lastNs > b.key.lastNs ? 1 : 0));
    const nowWallUs = Date.now() * 1000;
    const nowMonoNs = process.hrtime.bigint();
    for (const e of entries) {
      const i = rules.interfaceIndex(e.name);
      if (i < 0) continue;
      const view = fillRejectView(this.view, e.key, nowWallUs, nowMonoNs);
      if (e.counts) flow.observeCounted(i, view, e.counts);
      else if (e.reject) flow.observeRejected(i, view, e.reject.packets, e.reject.bytes);
    }
  }

  /** Packets of flow-logged interfaces the kernel's flow table had no room for since the last call. */
  private newlySkipped(): Map<string, number> {
    const total = new Map<string, number>();
    for (const { name, stats } of this.kernel.interfaceCounters()) total.set(name, (total.get(name) ?? 0) + stats.flowSkipped);
    const fresh = new Map<string, number>();
    for (const [name, n] of total) {
      const before = this.skippedSeen.get(name) ?? 0;
      if (n > before) fresh.set(name, n - before);
      this.skippedSeen.set(name, n);
    }
    // Names no longer counted (interfaces gone) leave: pod interfaces come and go all day,
    // each under a new name, and a name that returns starts a new count from 0.
    for (const name of this.skippedSeen.keys()) if (!total.has(name)) this.skippedSeen.delete(name);
    return fresh;
  }
}
