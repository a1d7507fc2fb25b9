// What a data plane counts, as one typed snapshot, and how the agent keeps those counters
// monotonic across config generations and planes: a retired generation's (or a closed
// plane's) final snapshot is folded into Totals; a scrape adds the live ones on top.
import type { CompiledSession, RuleSet } from '../rules/compile.js';
import type { MirrorOutput } from '../mirror/output.js';
import type { Sample } from './metrics.js';
import { Totals } from './totals.js';

/** Label values of the direction label, by Direction (DIR_IN, DIR_OUT). */
export const DIRECTION_NAMES = ['in', 'out'] as const;

/** The counters a data plane reports, by MetricsSource method name (docs/metrics.md). */
export const PLANE_COUNTERS = [
  'capturePackets', 'captureDrops', 'malformedPackets', 'unsegmentedPackets', 'notMirroredPackets',
  'mirrorPackets', 'mirrorBytes', 'mirrorTruncated', 'mirrorSendErrors', 'mirrorDropped',
  'mirrorTargetPackets', 'mirrorBudgetDrops',
] as const;

export type PlaneCounterName = (typeof PLANE_COUNTERS)[number];

/** One read of a plane's counters; a counter the plane does not keep is absent. */
export type PlaneCounters = Partial<Record<PlaneCounterName, Sample[]>>;

/** The per-session counters of a generation's mirror outputs (both planes: UDP senders or kernel slots). */
export function outputCounters(sessions: readonly CompiledSession[], outputs: readonly MirrorOutput[]): PlaneCounters {
  const perSession = (read: (s: MirrorOutput) => number): Sample[] =>
    sessions.map((s) => [{ session: s.id }, read(outputs[s.index]!)] as const);
  return {
    mirrorPackets: perSession((s) => s.packets),
    mirrorBytes: perSession((s) => s.bytes),
    mirrorTruncated: perSession((s) => s.truncated),
    mirrorSendErrors: perSession((s) => s.sendErrors),
    mirrorDropped: perSession((s) => s.dropped),
    mirrorTargetPackets: sessions.flatMap((s) =>
      (outputs[s.index]!.targets?.() ?? []).map((t) => [{ session: s.id, target: t.target }, t.packets] as const)),
    mirrorBudgetDrops: perSession((s) => s.budgetDrops),
  };
}

/** mirrorflow_mirror_target_healthy: a gauge of the live generation only (health of retired pools means nothing now). */
export function targetHealth(sessions: readonly CompiledSession[], outputs: readonly MirrorOutput[]): Sample[] {
  return sessions.flatMap((s) =>
    (outputs[s.index]!.targets?.() ?? []).map((t) => [{ session: s.id, target: t.target }, t.healthy ? 1 : 0] as const));
}

/** Whether a series' interface and session labels (where it has them) are still in the config. */
export function configuredSeries(rules: RuleSet): (labels: Record<string, string>) => boolean {
  const interfaces = new Set(rules.interfaces);
  const sessions = new Set(rules.sessions.map((s) => s.id));
  return (labels) =>
    (labels.interface === undefined || interfaces.has(labels.interface)) && (labels.session === undefined || sessions.has(labels.session));
}

/** The data planes' counters over the agent's life: retired generations and closed planes folded in. */
export class PlaneTotals {
  private readonly totals = new Map<PlaneCounterName, Totals>();

  /** A final snapshot (a retired generation, a closed plane) joins the totals. */
  fold(counters: PlaneCounters): void {
    for (const name of PLANE_COUNTERS) {
      const samples = counters[name];
      if (samples) this.totalsOf(name).fold(samples);
    }
  }

  /**
   * Everything counted under one metric: the folded totals plus the live snapshots, keeping
   * the series `keep` accepts (the eBPF plane counts every interface life it attached; the
   * configured ones are shown).
   */
  samples(name: PlaneCounterName, live: readonly PlaneCounters[], keep: (labels: Record<string, string>) => boolean): Sample[] {
    return this.totalsOf(name).with(live.flatMap((c) => c[name] ?? [])).filter(([labels]) => keep(labels));
  }

  /**
   * Series of interfaces and sessions the config no longer has leave /metrics (a counter that
   * comes back later starts from 0, which Prometheus reads as a reset).
   */
  retain(keep: (labels: Record<string, string>) => boolean): void {
    for (const totals of this.totals.values()) totals.retain(keep);
  }

  private totalsOf(name: PlaneCounterName): Totals {
    let t = this.totals.get(name);
    if (!t) this.totals.set(name, (t = new Totals()));
    return t;
  }
}
