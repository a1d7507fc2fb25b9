// The flow half of the pipeline: decoded packet → TCP analysis → every flow log covering
// the interface. Built from the config's flowLogs; the agent keeps one across reloads that
// do not change what it depends on, so open windows and TCP state survive a reload.
import type { Config } from '../config/types.js';
import { carryBySlot } from '../rules/interface-slots.js';
import { DIR_OUT, type PacketView } from '../packet/view.js';
import type { RttRecorder } from '../metrics/metrics.js';
import { ACTION_ACCEPT, FlowLogAggregator, type FlowCounts } from './aggregator.js';
import type { FlowRecord } from './record.js';
import { EV_OUT_OF_ORDER, EV_RESET, EV_RETRANS, EV_RTT_CLIENT, EV_RTT_SERVER, EV_SYN_RETRANS, EV_ZERO_WINDOW, TcpTracker } from './tcp.js';

/** Flows per flow log table; a flood of new 5-tuples evicts instead of growing. */
export const DEFAULT_MAX_FLOWS = 100_000;
export const DEFAULT_MAX_CONNECTIONS = 100_000;

export interface FlowStageOptions {
  config: Config;
  /** Interface names by pipeline ifIndex. */
  interfaces: readonly string[];
  /** By ifIndex: 0 for a gone interface whose slot is kept until its flows are written (RuleSet.live); default all live. */
  live?: Uint8Array;
  /** Where each flow log's records go (its sink). */
  emit: (flowLogId: string, records: FlowRecord[]) => void;
  rtt?: RttRecorder;
  maxFlows?: number;
  maxConnections?: number;
}

/** Per-interface TCP counters for the metrics. */
export interface TcpCounters {
  retransmissions: Float64Array;
  synRetransmissions: Float64Array;
  zeroWindows: Float64Array;
  resets: Float64Array;
  outOfOrder: Float64Array;
}

/** The ids of the enabled sessions by the index the pipeline reports (priority ascending). */
export function enabledSessionIds(config: Config): string[] {
  return config.sessions.filter((s) => s.enabled).sort((a, b) => a.priority - b.priority).map((s) => s.id);
}

export class FlowStage {
  readonly tcp: TcpTracker;
  readonly aggregators: FlowLogAggregator[];
  counters: TcpCounters;
  /** Interface names by ifIndex, and which are live (undefined: all), as of the last retarget(). */
  interfaces: readonly string[];
  live: Uint8Array | undefined;
  /** Aggregators covering each interface, by ifIndex (no per-packet filtering). */
  private byInterface: FlowLogAggregator[][];
  private readonly rtt: RttRecorder | undefined;

  constructor(readonly opts: FlowStageOptions) {
    const { config, interfaces } = opts;
    this.interfaces = interfaces;
    this.live = opts.live;
    this.tcp = new TcpTracker(opts.maxConnections ?? DEFAULT_MAX_CONNECTIONS);
    const sessionIds = enabledSessionIds(config);
    this.aggregators = config.flowLogs
      .filter((f) => f.enabled)
      .map(
        (flowLog) =>
          new FlowLogAggregator({
            flowLog, agent: config.agent, interfaces, live: opts.live, sessionIds,
            maxFlows: opts.maxFlows ?? DEFAULT_MAX_FLOWS,
            emit: (records) => opts.emit(flowLog.id, records),
          }),
      );
    this.byInterface = interfaces.map((_, i) => this.aggregators.filter((a) => a.covers(i)));
    const perIf = () => new Float64Array(interfaces.length);
    this.counters = { retransmissions: perIf(), synRetransmissions: perIf(), zeroWindows: perIf(), resets: perIf(), outOfOrder: perIf() };
    this.rtt = opts.rtt;
  }

  /**
   * The agent's interface slots changed (an interface appeared or went; agent/rules/
   * interface-slots.ts keeps the index of every other one): coverage follows, open windows,
   * flows and TCP state stay. A slot given to a new interface starts its counters at 0.
   */
  retarget(interfaces: readonly string[], live: Uint8Array | undefined): void {
    for (const a of this.aggregators) a.retarget(interfaces, live);
    this.byInterface = interfaces.map((_, i) => this.aggregators.filter((a) => a.covers(i)));
    const kept = (a: Float64Array) => carryBySlot(a, this.interfaces, interfaces);
    const c = this.counters;
    this.counters = {
      retransmissions: kept(c.retransmissions), synRetransmissions: kept(c.synRetransmissions), zeroWindows: kept(c.zeroWindows),
      resets: kept(c.resets), outOfOrder: kept(c.outOfOrder),
    };
    this.interfaces = interfaces;
    this.live = live;
  }

  /**
   * The enabled sessions changed (ids by index, priority ascending): everything counted so
   * far is written first, since the counted flows name sessions by their old index.
   */
  setSessionIds(ids: readonly string[]): void {
    this.flushAll();
    for (const a of this.aggregators) a.sessionIds = ids;
  }

  /** True when some flow log covers the interface: its capture must then see all IP traffic. */
  covers(ifIndex: number): boolean {
    return (this.byInterface[ifIndex]?.length ?? 0) > 0;
  }

  /** One decoded IP packet; mirrorSession is the session that mirrored it, or -1. */
  observe(ifIndex: number, view: PacketView, mirrorSession: number): void {
    let ev = this.tcp.observe(ifIndex, view);
    // Seen where it was sent, a segment below nextseq is a retransmission even when tshark's
    // timing rule calls it out of order (SACK recovery of a later hole, sent amid new data);
    // the kernel's TcpRetransSegs counts it, and so do the records and the metric.
    if (ev & EV_OUT_OF_ORDER && view.direction === DIR_OUT) ev |= EV_RETRANS;
    let handshakeRtt = -1;
    if (ev !== 0) {
      const c = this.counters;
      if (ev & EV_RETRANS) c.retransmissions[ifIndex]! += 1;
      if (ev & EV_SYN_RETRANS) c.synRetransmissions[ifIndex]! += 1;
      if (ev & EV_ZERO_WINDOW) c.zeroWindows[ifIndex]! += 1;
      if (ev & EV_RESET) c.resets[ifIndex]! += 1;
      if (ev & EV_OUT_OF_ORDER) c.outOfOrder[ifIndex]! += 1;
      if (ev & EV_RTT_SERVER) this.rtt?.server(this.tcp.lastRttServerUs / 1e6);
      if (ev & EV_RTT_CLIENT) {
        this.rtt?.client(this.tcp.lastRttClientUs / 1e6);
        handshakeRtt = this.tcp.lastHandshakeRttUs;
      }
    }
    const aggs = this.byInterface[ifIndex];
    if (aggs === undefined) return;
    for (let i = 0; i < aggs.length; i++) aggs[i]!.observe(ifIndex, view, ev, handshakeRtt, mirrorSession, ACTION_ACCEPT);
  }

  /**
   * One flow the kernel counted and analysed (eBPF plane, bpf/flowlog.bpf.h) since the last
   * drain: into the TCP counters, the RTT histogram and every flow log covering the interface,
   * as observe() would have put its packets.
   */
  observeCounted(ifIndex: number, view: PacketView, counts: FlowCounts): void {
    const c = this.counters;
    c.retransmissions[ifIndex]! += counts.retrans;
    c.synRetransmissions[ifIndex]! += counts.synRetrans;
    c.zeroWindows[ifIndex]! += counts.zeroWin;
    c.resets[ifIndex]! += counts.resets;
    c.outOfOrder[ifIndex]! += counts.outOfOrder;
    if (counts.rttServerUs >= 0) this.rtt?.server(counts.rttServerUs / 1e6);
    if (counts.rttClientUs >= 0) this.rtt?.client(counts.rttClientUs / 1e6);
    for (const a of this.byInterface[ifIndex] ?? []) a.addCounted(ifIndex, view, counts);
  }

  /** Dropped packets of one 5-tuple counted by the kernel (eBPF plane): REJECT records. */
  observeRejected(ifIndex: number, view: PacketView, packets: number, bytes: number): void {
    for (const a of this.byInterface[ifIndex] ?? []) a.addRejected(ifIndex, view, packets, bytes);
  }

  noteDrops(ifIndex: number, frames: number): void {
    for (const a of this.byInterface[ifIndex] ?? []) a.noteDrops(ifIndex, frames);
  }

  closeWindowsBefore(nowSec: number): void {
    for (const a of this.aggregators) a.closeWindowsBefore(nowSec);
  }

  flushAll(): void {
    for (const a of this.aggregators) a.flushAll();
  }
}
