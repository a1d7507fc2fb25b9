// Owns the flow stage and the sinks across reloads: a reload that leaves the flow logs and
// the agent identity as they were keeps the same stage (open windows and TCP state carry
// on; interfaces that came or went are retargeted, sessions renamed); otherwise the old
// stage writes its open windows and the new one starts. Sinks are kept while their flow log and setting are unchanged.
import type { Config } from '../config/types.js';
import type { Logger } from '../log.js';
import type { RttRecorder, Sample } from '../metrics/metrics.js';
import { Totals } from '../metrics/totals.js';
import { createSink, type FlowSink } from '../sinks/sink.js';
import type { FlowRecord } from './record.js';
import { enabledSessionIds, FlowStage } from './stage.js';

interface SinkEntry {
  key: string;
  sink: FlowSink;
}

/** Counter names this owner reports (MetricsSource method names). */
export type FlowMetric =
  | 'tcpRetransmissions' | 'tcpSynRetransmissions' | 'tcpZeroWindows' | 'tcpResets' | 'tcpOutOfOrder'
  | 'flowLogRecords' | 'flowTableEvictions' | 'sinkErrors' | 'sinkDropped';

export class FlowLogs {
  private stage: FlowStage | undefined;
  private stageKey = '';
  private sinks = new Map<string, SinkEntry>();
  private pendingSinks = new Map<string, SinkEntry>();
  /** The sinks stop() is closing: their undelivered records still count as pending. */
  private stoppingSinks: FlowSink[] = [];
  private pendingKey = '';
  /** The running stage's session ids, and those of the config being built. */
  private sessionIds: readonly string[] = [];
  private pendingSessionIds: readonly string[] | undefined;
  private readonly totals = new Map<FlowMetric, Totals>();

  constructor(private readonly log: Logger, private readonly rtt?: RttRecorder) {}

  get current(): FlowStage | undefined {
    return this.stage;
  }

  /**
   * The stage for a config: the running one when nothing it depends on changed, else a new
   * one (with its sinks) that becomes current at commit(). Undefined when no flow log is enabled.
   */
  prepare(config: Config, interfaces: readonly string[], live?: Uint8Array): FlowStage | undefined {
    if (!config.flowLogs.some((f) => f.enabled)) return undefined;
    // Sessions are not part of the key: a session started or stopped (a control edit) keeps
    // the stage, its TCP state and its tables (no 100k-flow tables thrown away per edit);
    // commit() writes what was counted and renames the sessions. Nor are the interfaces:
    // their indexes are stable (RuleSet), so one coming or going only retargets the stage.
    const key = JSON.stringify({ flowLogs: config.flowLogs, agent: config.agent });
    const sessionIds = enabledSessionIds(config);
    if (this.stage !== undefined && key === this.stageKey && stableIndexes(this.stage.interfaces, interfaces)) {
      this.pendingSessionIds = sessionIds;
      this.stage.retarget(interfaces, live);
      return this.stage;
    }
    const sinks = new Map<string, SinkEntry>();
    for (const f of config.flowLogs.filter((x) => x.enabled)) {
      const sinkKey = JSON.stringify(f.sink);
      const existing = this.sinks.get(f.id);
      sinks.set(f.id, existing?.key === sinkKey ? existing : { key: sinkKey, sink: createSink(f.sink, { logger: this.log, flowLogId: f.id }) });
    }
    this.pendingSinks = sinks;
    this.pendingKey = key;
    this.pendingSessionIds = sessionIds;
    return new FlowStage({
      config, interfaces, live, rtt: this.rtt,
      emit: (id: string, records: FlowRecord[]) => sinks.get(id)?.sink.write(records),
    });
  }

  /** Makes `next` current: the replaced stage writes its open windows; unused sinks close. */
  async commit(next: FlowStage | undefined): Promise<void> {
    if (next === this.stage) {
      const ids = this.pendingSessionIds;
      if (next !== undefined && ids !== undefined && ids.join('\n') !== this.sessionIds.join('\n')) next.setSessionIds(ids);
      if (ids !== undefined) this.sessionIds = ids;
      return;
    }
    const old = this.stage;
    if (old) {
      old.flushAll();
      for (const [name, samples] of Object.entries(this.samplesOf(old, new Map()))) this.totalsOf(name as FlowMetric).fold(samples);
    }
    const keep = next ? this.pendingSinks : new Map<string, SinkEntry>();
    const closing = [...this.sinks].filter(([, e]) => ![...keep.values()].includes(e));
    this.sinks = keep;
    this.stage = next;
    this.stageKey = next ? this.pendingKey : '';
    this.sessionIds = this.pendingSessionIds ?? [];
    await Promise.all(closing.map(([, e]) => e.sink.close()));
    // A sink's counters are its own (a kept sink counts on across reloads); a closed sink's
    // final counts, including what close() gave up on, join the totals.
    const closed = new Map(closing.map(([id, e]) => [id, e.sink]));
    this.totalsOf('sinkErrors').fold(sinkSamples(closed, (s) => s.stats.errors));
    this.totalsOf('sinkDropped').fold(sinkSamples(closed, (s) => s.stats.dropped));
  }

  /** Writes every window that has ended; `nowSec` already allows for capture latency. */
  tick(nowSec: number): void {
    this.stage?.closeWindowsBefore(nowSec);
  }

  /**
   * Clean shutdown: every open window written, every sink drained and closed. Resolves with
   * the records the sinks could not deliver before closing (each sink logs its own).
   */
  async stop(): Promise<number> {
    const sinks = [...this.sinks.values()].map((e) => e.sink);
    this.stoppingSinks = sinks;
    const droppedBefore = sinks.reduce((n, s) => n + s.stats.dropped, 0);
    await this.commit(undefined);
    return sinks.reduce((n, s) => n + s.stats.dropped, 0) - droppedBefore;
  }

  /** Records accepted by the sinks (those stop() is closing included) and not delivered yet. */
  pendingRecords(): number {
    let n = 0;
    for (const e of this.sinks.values()) n += e.sink.stats.pending;
    for (const sink of this.stoppingSinks) n += sink.stats.pending;
    return n;
  }

  /** Runtime state of one flow log for `mirrorflow` status queries; undefined when not running. */
  state(id: string): Record<string, unknown> | undefined {
    const agg = this.stage?.aggregators.find((a) => a.id === id);
    if (!agg) return undefined;
    const sink = this.sinks.get(id)?.sink.stats;
    return { windowSeconds: agg.windowSec, activeFlows: agg.activeFlows, evictions: agg.evictions, records: { ...agg.recordsByStatus }, sink };
  }

  activeFlows(): Sample[] {
    return this.stage?.aggregators.map((a) => [{ flow_log: a.id }, a.activeFlows] as const) ?? [];
  }

  samples(name: FlowMetric): Sample[] {
    const live = this.stage ? this.samplesOf(this.stage, new Map([...this.sinks].map(([id, e]) => [id, e.sink])))[name] : [];
    return this.totalsOf(name).with(live);
  }

  private totalsOf(name: FlowMetric): Totals {
    let t = this.totals.get(name);
    if (!t) this.totals.set(name, (t = new Totals()));
    return t;
  }

  /** The stage's counters, and those of `sinks` (the current ones; none when folding a retired stage). */
  private samplesOf(stage: FlowStage, sinks: ReadonlyMap<string, FlowSink>): Record<FlowMetric, Sample[]> {
    const { interfaces: names, live } = stage;
    // A gone interface's series end with it, though its slot waits for its flows to be written.
    const perIf = (arr: Float64Array): Sample[] => names.flatMap((name, i) => ((live?.[i] ?? 1) === 1 ? [[{ interface: name }, arr[i]!] as const] : []));
    const c = stage.counters;
    const sinkStat = (read: (s: FlowSink) => number): Sample[] => sinkSamples(sinks, read);
    return {
      tcpRetransmissions: perIf(c.retransmissions),
      tcpSynRetransmissions: perIf(c.synRetransmissions),
      tcpZeroWindows: perIf(c.zeroWindows),
      tcpResets: perIf(c.resets),
      tcpOutOfOrder: perIf(c.outOfOrder),
      flowLogRecords: stage.aggregators.flatMap((a) =>
        Object.entries(a.recordsByStatus).map(([status, n]) => [{ flow_log: a.id, status }, n] as const),
      ),
      flowTableEvictions: stage.aggregators.map((a) => [{ flow_log: a.id }, a.evictions] as const),
      sinkErrors: sinkStat((s) => s.stats.errors),
      sinkDropped: sinkStat((s) => s.stats.dropped),
    };
  }
}

function sinkSamples(sinks: ReadonlyMap<string, FlowSink>, read: (s: FlowSink) => number): Sample[] {
  return [...sinks].map(([id, sink]) => [{ flow_log: id }, read(sink)] as const);
}

/**
 * True when the interfaces keep their indexes: every one still listed is at the same index
 * (new ones appended or in slots of gone ones). A config whose list was compiled without
 * slots (indexes shifted) gets a new stage, as before.
 */
function stableIndexes(before: readonly string[], now: readonly string[]): boolean {
  const at = new Map(now.map((name, i) => [name, i]));
  return before.every((name, i) => !at.has(name) || at.get(name) === i);
}
