// One flow log (SPEC §4): per capture window, one record per (interface, direction,
// 5-tuple) seen on its source interfaces. Counters live in typed arrays indexed by the flow
// table slot; strings are built only when a window closes. Windows are aligned to
// multiples of `window` seconds and follow packet time, so replaying a file gives the
// same records as the live capture did.
import type { AgentSettings, FlowLog } from '../config/types.js';
import { sourcesCover } from '../config/sources.js';
import { isOwnDevice } from '../ebpf/device-names.js';
import { formatAddress } from '../packet/address.js';
import { carryBySlot } from '../rules/interface-slots.js';
import { IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP } from '../packet/offsets.js';
import { DIR_OUT, type PacketView } from '../packet/view.js';
import { EMPTY, FlowHashTable, hashKey, KEY_WORDS } from './flow-hash-table.js';
import type { FlowAction, FlowRecord, LogStatus } from './record.js';
import { EV_RETRANS, EV_ZERO_WINDOW } from './tcp.js';

export const ACTION_ACCEPT = 0;
export const ACTION_REJECT = 1;
const ACTIONS: readonly FlowAction[] = ['ACCEPT', 'REJECT'];
/** Flows looked at to pick the least recently seen one when the table is full. */
const VICTIM_SCAN = 8;
/** Idle windows reported as NODATA in one go at most (a clock jump must not flood the sink). */
const MAX_IDLE_WINDOWS = 1000;

/**
 * What one flow (one direction of one 5-tuple on one interface) did since it was last
 * handed over, counted elsewhere (the eBPF plane's TC programs) as observe() counts packets.
 */
export interface FlowCounts {
  packets: number;
  bytes: number;
  /** OR of the TCP flags (FIN..URG). */
  tcpFlags: number;
  /** Segments retransmitted (as the records count them: FlowStage.observe), SYNs among them, zero windows, out of order. */
  retrans: number;
  synRetrans: number;
  zeroWin: number;
  resets: number;
  outOfOrder: number;
  /** Handshake timings completed in this flow, in microseconds; -1 when none (tcp.ts: server SYN → SYN-ACK, client SYN-ACK → ACK, SYN → ACK). */
  rttServerUs: number;
  rttClientUs: number;
  handshakeUs: number;
  /** Wire packets mirrored, and the session index of the last one (-1: none). */
  mirrored: number;
  session: number;
}

export interface AggregatorOptions {
  flowLog: FlowLog;
  agent: AgentSettings;
  /** Interface names by the index observe() is called with. */
  interfaces: readonly string[];
  /** By index: 0 for a slot whose interface is gone (kept only until its flows are written); default all live. */
  live?: Uint8Array;
  /** Mirror session ids by session index. */
  sessionIds: readonly string[];
  maxFlows: number;
  emit: (records: FlowRecord[]) => void;
}

export class FlowLogAggregator {
  readonly id: string;
  readonly windowSec: number;
  /** Records emitted, by log-status. */
  readonly recordsByStatus: Record<LogStatus, number> = { OK: 0, NODATA: 0, SKIPDATA: 0 };
  evictions = 0;
  /**
   * By index: 1 when the flow log's sources name the interface, live or gone (a gone one's
   * last frames and drops still arrive from the generation that captured it).
   */
  private covered: Uint8Array;
  /** By index: 0 for a gone interface's slot (no NODATA for it); undefined: all live. */
  private live: Uint8Array | undefined;
  /** Interface names by index (retarget() changes them). */
  private names: readonly string[];
  private readonly table: FlowHashTable;
  private readonly key = new Int32Array(KEY_WORDS);
  private readonly packets: Float64Array;
  private readonly bytes: Float64Array;
  private readonly tcpFlags: Uint8Array;
  private readonly retrans: Float64Array;
  private readonly zeroWin: Float64Array;
  private readonly rttUs: Float64Array;
  private readonly mirrored: Float64Array;
  private readonly session: Int32Array;
  private readonly action: Uint8Array;
  /** Per interface, in the open window: packets seen, packets lost to capture drops, evictions. */
  private seen: Float64Array;
  private dropped: Float64Array;
  private evicted: Float64Array;
  private windowStart = -1;
  private pending: FlowRecord[] = [];

  /** Mirror session ids by session index; replaced (after a flush) when the sessions change. */
  sessionIds: readonly string[];

  constructor(private readonly opts: AggregatorOptions) {
    this.sessionIds = opts.sessionIds;
    this.id = opts.flowLog.id;
    this.windowSec = opts.flowLog.window;
    this.names = opts.interfaces;
    this.covered = this.coverage(opts.interfaces);
    this.live = opts.live;
    this.table = new FlowHashTable(opts.maxFlows);
    const cap = this.table.capacity;
    this.packets = new Float64Array(cap);
    this.bytes = new Float64Array(cap);
    this.tcpFlags = new Uint8Array(cap);
    this.retrans = new Float64Array(cap);
    this.zeroWin = new Float64Array(cap);
    this.rttUs = new Float64Array(cap);
    this.mirrored = new Float64Array(cap);
    this.session = new Int32Array(cap);
    this.action = new Uint8Array(cap);
    const n = opts.interfaces.length;
    this.seen = new Float64Array(n);
    this.dropped = new Float64Array(n);
    this.evicted = new Float64Array(n);
  }

  /**
   * The interface list changed around the open window (an interface appeared, went, or a
   * gone one's slot was given to a new one): coverage follows; the flows in the table stay.
   * A slot changing name starts its window counters afresh (the agent reuses a slot only
   * once the flows of its previous interface have been written).
   */
  retarget(interfaces: readonly string[], live: Uint8Array | undefined): void {
    const fresh = (a: Float64Array) => carryBySlot(a, this.names, interfaces);
    this.seen = fresh(this.seen);
    this.dropped = fresh(this.dropped);
    this.evicted = fresh(this.evicted);
    this.names = interfaces;
    this.covered = this.coverage(interfaces);
    this.live = live;
  }

  private coverage(interfaces: readonly string[]): Uint8Array {
    const sources = this.opts.flowLog.sources;
    return Uint8Array.from(interfaces, (name) => (sourcesCover(sources, name, isOwnDevice) ? 1 : 0));
  }

  get activeFlows(): number {
    return this.table.size;
  }

  covers(ifIndex: number): boolean {
    return this.covered[ifIndex] === 1;
  }

  /** Counts one decoded IP packet of a covered interface into its flow of the current window. */
  observe(ifIndex: number, view: PacketView, tcpEvents: number, handshakeRttUs: number, mirrorSession: number, action: number): void {
    const slot = this.slotFor(ifIndex, view, action);
    this.seen[ifIndex]! += 1;
    this.packets[slot]! += 1;
    this.bytes[slot]! += view.ipLength;
    if (view.protocol === IPPROTO_TCP) {
      this.tcpFlags[slot]! |= view.tcpFlags & 0x3f;
      if (tcpEvents & EV_RETRANS) this.retrans[slot]! += 1;
      if (tcpEvents & EV_ZERO_WINDOW) this.zeroWin[slot]! += 1;
      if (handshakeRttUs >= 0) this.rttUs[slot] = handshakeRttUs;
    }
    if (mirrorSession >= 0) {
      this.mirrored[slot]! += 1;
      this.session[slot] = mirrorSession;
    }
  }

  /**
   * Packets of one flow counted elsewhere (the eBPF plane's flow map) as observe() would have
   * counted them: `view` carries the 5-tuple, direction and time of the last packet.
   */
  addCounted(ifIndex: number, view: PacketView, c: FlowCounts): void {
    const slot = this.slotFor(ifIndex, view, ACTION_ACCEPT);
    this.seen[ifIndex]! += c.packets;
    this.packets[slot]! += c.packets;
    this.bytes[slot]! += c.bytes;
    if (view.protocol === IPPROTO_TCP) {
      this.tcpFlags[slot]! |= c.tcpFlags & 0x3f;
      this.retrans[slot]! += c.retrans;
      this.zeroWin[slot]! += c.zeroWin;
      if (c.handshakeUs >= 0) this.rttUs[slot] = c.handshakeUs;
    }
    if (c.session >= 0) {
      this.mirrored[slot]! += c.mirrored;
      this.session[slot] = c.session;
    }
  }

  /**
   * Packets of one 5-tuple the host's packet filter dropped (counted by the kernel), as a
   * REJECT flow: `view` carries the 5-tuple, direction and time of the last one.
   */
  addRejected(ifIndex: number, view: PacketView, packets: number, bytes: number): void {
    const slot = this.slotFor(ifIndex, view, ACTION_REJECT);
    this.seen[ifIndex]! += packets;
    this.packets[slot]! += packets;
    this.bytes[slot]! += bytes;
  }

  /** The flow table slot of the packet's flow in the open window (closing windows it has passed). */
  private slotFor(ifIndex: number, view: PacketView, action: number): number {
    const sec = Math.floor(view.tsUs / 1e6);
    if (this.windowStart < 0) this.windowStart = this.align(sec);
    else if (sec >= this.windowStart + this.windowSec) this.closeWindowsBefore(sec);
    // A late packet (its window already written) is counted in the open window: counted once, never lost.

    const k = this.key;
    k[0] = ifIndex;
    k[1] = view.direction | (action << 1);
    for (let i = 0; i < 4; i++) {
      k[2 + i] = view.src[i]! | 0;
      k[6 + i] = view.dst[i]! | 0;
    }
    // ICMP has no ports; its flows are keyed per type and code instead (as NetFlow exporters
    // and nfdump do), so each record carries the one type and code it counts.
    const icmp = view.protocol === IPPROTO_ICMP || view.protocol === IPPROTO_ICMPV6;
    k[10] = icmp ? (view.icmpType << 8) | view.icmpCode : (view.srcPort << 16) | view.dstPort;
    k[11] = view.protocol | (view.ipVersion << 8);
    const hash = hashKey(k);
    let slot = this.table.find(k, hash);
    if (slot === EMPTY) {
      if (this.table.size >= this.table.maxEntries) this.evict(hash);
      slot = this.table.insert(k, hash, view.tsUs);
      this.packets[slot] = 0;
      this.bytes[slot] = 0;
      this.tcpFlags[slot] = 0;
      this.retrans[slot] = 0;
      this.zeroWin[slot] = 0;
      this.rttUs[slot] = -1;
      this.mirrored[slot] = 0;
      this.session[slot] = -1;
      this.action[slot] = action;
    } else {
      this.table.lastSeenUs[slot] = view.tsUs;
    }
    return slot;
  }

  /** Frames the kernel dropped on this interface before we saw them: reported as SKIPDATA. */
  noteDrops(ifIndex: number, frames: number): void {
    if (frames > 0 && this.covers(ifIndex)) this.dropped[ifIndex]! += frames;
  }

  /** Writes every window that ended at or before `nowSec`; called by a timer and by observe(). */
  closeWindowsBefore(nowSec: number): void {
    if (this.windowStart < 0) this.windowStart = this.align(nowSec);
    let closed = 0;
    while (this.windowStart + this.windowSec <= nowSec) {
      if (closed < MAX_IDLE_WINDOWS || this.table.size > 0) this.writeWindow();
      else this.clearWindow();
      closed++;
      this.windowStart += this.windowSec;
      if (closed >= MAX_IDLE_WINDOWS && this.table.size === 0) this.windowStart = this.align(nowSec);
    }
    this.flushPending();
  }

  /** Writes the open window (clean shutdown, end of a replayed file). */
  flushAll(): void {
    if (this.windowStart >= 0) this.writeWindow();
    this.windowStart = -1;
    this.flushPending();
  }

  private align(sec: number): number {
    return Math.floor(sec / this.windowSec) * this.windowSec;
  }

  private evict(hash: number): void {
    const victim = this.table.victim(hash, VICTIM_SCAN);
    if (victim === EMPTY) return;
    this.evictions++;
    this.evicted[this.table.keys[victim * KEY_WORDS]!]! += 1;
    // The evicted flow's counts are written now: nothing counted is lost.
    this.pending.push(this.flowRecord(victim));
    this.table.remove(victim, this.hashOfSlot, this.moveSlot);
  }

  private readonly hashOfSlot = (slot: number): number => hashKey(this.table.keys, slot * KEY_WORDS);

  private readonly moveSlot = (from: number, to: number): void => {
    for (const arr of [this.packets, this.bytes, this.tcpFlags, this.retrans, this.zeroWin, this.rttUs, this.mirrored, this.session, this.action]) {
      arr[to] = arr[from]!;
    }
  };

  private writeWindow(): void {
    const out = this.pending;
    for (let slot = 0; slot < this.table.capacity; slot++) {
      if (this.table.isUsed(slot)) out.push(this.flowRecord(slot));
    }
    this.names.forEach((name, i) => {
      // An interface gone during the window still reports what it lost, but no NODATA.
      if (this.covered[i] === 1 && this.live?.[i] !== 0 && this.seen[i] === 0) out.push(this.statusRecord(name, 'NODATA', undefined));
      if (this.dropped[i]! > 0 || this.evicted[i]! > 0) out.push(this.statusRecord(name, 'SKIPDATA', this.dropped[i]!));
    });
    this.clearWindow();
  }

  private clearWindow(): void {
    this.table.clear();
    this.seen.fill(0);
    this.dropped.fill(0);
    this.evicted.fill(0);
  }

  private flushPending(): void {
    if (this.pending.length === 0) return;
    const { trafficType } = this.opts.flowLog;
    const batch = this.pending.filter(
      (r) => r['log-status'] !== 'OK' || trafficType === 'All' || (trafficType === 'Allow') === (r.action === 'ACCEPT'),
    );
    this.pending = [];
    for (const r of batch) this.recordsByStatus[r['log-status']] += 1;
    if (batch.length > 0) this.opts.emit(batch);
  }


  private flowRecord(slot: number): FlowRecord {
    const k = this.table.keys;
    const b = slot * KEY_WORDS;
    const v6 = k[b + 11]! >> 8 === 6;
    const proto = k[b + 11]! & 0xff;
    const tcp = proto === IPPROTO_TCP;
    const icmp = proto === IPPROTO_ICMP || proto === IPPROTO_ICMPV6;
    const ports = icmp ? 0 : k[b + 10]!;
    const session = this.session[slot]!;
    const rtt = this.rttUs[slot]!;
    const a = this.opts.agent;
    // One literal with every field (no spread): V8 builds it with a fixed shape, fast enough
    // for a window of 100k flows or a flood of evictions.
    return {
      version: 1,
      'vswitch-id': a.vswitchId ?? null,
      'vm-id': a.vmId,
      'vpc-id': a.vpcId ?? null,
      'account-id': a.accountId ?? null,
      'eni-id': this.names[k[b]!]!,
      srcaddr: formatAddress(v6 ? 6 : 4, k, b + 2),
      srcport: (ports >>> 16) & 0xffff,
      dstaddr: formatAddress(v6 ? 6 : 4, k, b + 6),
      dstport: ports & 0xffff,
      protocol: proto,
      direction: (k[b + 1]! & 1) === DIR_OUT ? 'out' : 'in',
      packets: this.packets[slot]!,
      bytes: this.bytes[slot]!,
      start: this.windowStart,
      end: this.windowStart + this.windowSec,
      'log-status': 'OK',
      action: ACTIONS[k[b + 1]! >> 1]!,
      'tcp-flags': tcp ? this.tcpFlags[slot]! : null,
      'icmp-type': icmp ? (k[b + 10]! >>> 8) & 0xff : null,
      'icmp-code': icmp ? k[b + 10]! & 0xff : null,
      retrans: tcp ? this.retrans[slot]! : null,
      'zero-win': tcp ? this.zeroWin[slot]! : null,
      'rtt-us': tcp && rtt >= 0 ? Math.round(rtt) : null,
      'mirrored-packets': this.mirrored[slot]!,
      'mirror-session': session >= 0 ? this.sessionIds[session] ?? null : null,
    };
  }

  private statusRecord(eni: string, status: 'NODATA' | 'SKIPDATA', skipped: number | undefined): FlowRecord {
    const a = this.opts.agent;
    const record: FlowRecord = {
      version: 1, 'vswitch-id': a.vswitchId ?? null, 'vm-id': a.vmId, 'vpc-id': a.vpcId ?? null, 'account-id': a.accountId ?? null,
      'eni-id': eni,
      srcaddr: null, srcport: null, dstaddr: null, dstport: null, protocol: null, direction: null,
      packets: null, bytes: null, start: this.windowStart, end: this.windowStart + this.windowSec, 'log-status': status, action: null,
      'tcp-flags': null, 'icmp-type': null, 'icmp-code': null, retrans: null, 'zero-win': null, 'rtt-us': null, 'mirrored-packets': null, 'mirror-session': null,
    };
    if (skipped !== undefined) record['skipped-packets'] = skipped;
    return record;
  }
}

