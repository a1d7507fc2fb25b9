// Per-connection TCP analysis, both directions in one entry, following the rules of
// Wireshark's tcp_analyze_sequence_number() (packet-tcp.c) so the counts agree with
// tshark's tcp.analysis.* fields on the same packets:
//   zero window      window field 0 on a segment without SYN/FIN/RST
//   keep-alive       ≤ 1 byte at nextseq − 1, no SYN/FIN/RST (not a retransmission)
//   retransmission   payload, SYN or FIN below this direction's nextseq, no RST; unless
//                    out of order (arrived within the first RTT of the last advance and
//                    does not end at nextseq). Fast (≥ 2 duplicate ACKs for it, < 20 ms)
//                    and spurious (already ACKed by the peer) retransmissions count too.
//   handshake RTT    server side SYN → SYN-ACK, client side SYN-ACK → ACK, both as seen
//                    here; the whole handshake (SYN → ACK) is tshark's initial_rtt.
// State lives in typed arrays indexed by the hash-table slot: nothing per packet is allocated.
import { IPPROTO_TCP } from '../packet/offsets.js';
import type { PacketView } from '../packet/view.js';
import { EMPTY, FlowHashTable, hashKey, KEY_WORDS } from './flow-hash-table.js';

export const EV_RETRANS = 1;
export const EV_SYN_RETRANS = 2;
export const EV_ZERO_WINDOW = 4;
export const EV_RESET = 8;
export const EV_OUT_OF_ORDER = 16;
export const EV_RTT_SERVER = 32;
export const EV_RTT_CLIENT = 64;
export const EV_SPURIOUS = 128;

const FIN = 0x01;
const SYN = 0x02;
const RST = 0x04;
const ACK = 0x10;
/** tshark's fallback out-of-order threshold before the handshake RTT is known. */
const OOO_THRESHOLD_US = 3000;
/** tshark: a retransmission within 20 ms of ≥ 2 duplicate ACKs is a fast retransmission. */
const FAST_RETRANS_US = 20_000;
/** Entries looked at to find the least recently seen one when the table is full. */
const VICTIM_SCAN = 8;

/** seq a < b in 32-bit sequence space. */
const lt = (a: number, b: number): boolean => ((a - b) | 0) < 0;
const le = (a: number, b: number): boolean => ((a - b) | 0) <= 0;

export class TcpTracker {
  retransmissions = 0;
  synRetransmissions = 0;
  zeroWindows = 0;
  resets = 0;
  outOfOrder = 0;
  evictions = 0;
  /** Set with EV_RTT_SERVER / EV_RTT_CLIENT on the packet that completes them. */
  lastRttServerUs = 0;
  lastRttClientUs = 0;
  /** Set with EV_RTT_CLIENT: SYN → handshake ACK. */
  lastHandshakeRttUs = 0;

  private readonly table: FlowHashTable;
  private readonly key = new Int32Array(KEY_WORDS);
  // Per direction (slot * 2 + side; side 0 is the key's first endpoint).
  private readonly nextSeq: Uint32Array;
  private readonly hasNextSeq: Uint8Array;
  private readonly lastAdvanceUs: Float64Array;
  private readonly lastAck: Uint32Array;
  private readonly hasAck: Uint8Array;
  private readonly lastWindow: Int32Array;
  private readonly dupAcks: Uint32Array;
  // Per connection.
  private readonly synUs: Float64Array;
  private readonly synAckUs: Float64Array;
  private readonly firstRttUs: Float64Array;
  /** Side that sent the SYN, or -1. */
  private readonly clientSide: Int8Array;
  private readonly handshakeDone: Uint8Array;

  constructor(readonly maxConnections: number) {
    this.table = new FlowHashTable(maxConnections);
    const cap = this.table.capacity;
    this.nextSeq = new Uint32Array(cap * 2);
    this.hasNextSeq = new Uint8Array(cap * 2);
    this.lastAdvanceUs = new Float64Array(cap * 2);
    this.lastAck = new Uint32Array(cap * 2);
    this.hasAck = new Uint8Array(cap * 2);
    this.lastWindow = new Int32Array(cap * 2);
    this.dupAcks = new Uint32Array(cap * 2);
    this.synUs = new Float64Array(cap);
    this.synAckUs = new Float64Array(cap);
    this.firstRttUs = new Float64Array(cap);
    this.clientSide = new Int8Array(cap);
    this.handshakeDone = new Uint8Array(cap);
  }

  get active(): number {
    return this.table.size;
  }

  /** Analyses one decoded packet; returns the EV_* bits that apply to it (0 for non-TCP). */
  observe(ifIndex: number, view: PacketView): number {
    if (view.protocol !== IPPROTO_TCP || !view.hasPorts) return 0;
    const side = this.fillKey(ifIndex, view);
    const hash = hashKey(this.key);
    const now = view.tsUs;
    let slot = this.table.find(this.key, hash);
    if (slot === EMPTY) {
      if (this.table.size >= this.maxConnections) this.evict(hash);
      slot = this.table.insert(this.key, hash, now);
      this.reset(slot);
    } else {
      this.table.lastSeenUs[slot] = now;
    }
    return this.analyse(slot, side, view, now);
  }

  /** Fills the canonical key (lower endpoint first) and returns the packet's side. */
  private fillKey(ifIndex: number, view: PacketView): number {
    const src = view.src;
    const dst = view.dst;
    let side = 0;
    for (let i = 0; i < 4; i++) {
      if (src[i] !== dst[i]) {
        side = src[i]! > dst[i]! ? 1 : 0;
        break;
      }
      if (i === 3 && view.srcPort > view.dstPort) side = 1;
    }
    const k = this.key;
    const a = side === 0 ? src : dst;
    const b = side === 0 ? dst : src;
    k[0] = ifIndex;
    k[1] = IPPROTO_TCP;
    for (let i = 0; i < 4; i++) {
      k[2 + i] = a[i]! | 0;
      k[6 + i] = b[i]! | 0;
    }
    k[10] = side === 0 ? view.srcPort : view.dstPort;
    k[11] = side === 0 ? view.dstPort : view.srcPort;
    return side;
  }

  private reset(slot: number): void {
    for (let d = slot * 2; d < slot * 2 + 2; d++) {
      this.hasNextSeq[d] = 0;
      this.hasAck[d] = 0;
      this.dupAcks[d] = 0;
      this.lastWindow[d] = -1;
    }
    this.synUs[slot] = 0;
    this.synAckUs[slot] = 0;
    this.firstRttUs[slot] = 0;
    this.clientSide[slot] = -1;
    this.handshakeDone[slot] = 0;
  }

  private evict(hash: number): void {
    const victim = this.table.victim(hash, VICTIM_SCAN);
    if (victim === EMPTY) return;
    this.evictions++;
    this.table.remove(victim, this.hashOfSlot, this.moveSlot);
  }

  private readonly hashOfSlot = (slot: number): number => hashKey(this.table.keys, slot * KEY_WORDS);

  private readonly moveSlot = (from: number, to: number): void => {
    for (const arr of [this.nextSeq, this.hasNextSeq, this.lastAdvanceUs, this.lastAck, this.hasAck, this.lastWindow, this.dupAcks]) {
      arr[to * 2] = arr[from * 2]!;
      arr[to * 2 + 1] = arr[from * 2 + 1]!;
    }
    for (const arr of [this.synUs, this.synAckUs, this.firstRttUs, this.clientSide, this.handshakeDone]) arr[to] = arr[from]!;
  };

  private analyse(slot: number, side: number, view: PacketView, now: number): number {
    const fwd = slot * 2 + side;
    const rev = slot * 2 + (side ^ 1);
    const flags = view.tcpFlags;
    const seq = view.tcpSeq;
    const ack = view.tcpAck;
    const seglen = view.payloadLength;
    let ev = 0;

    if (flags & RST) {
      ev |= EV_RESET;
      this.resets++;
    }
    if (view.tcpWindow === 0 && (flags & (RST | FIN | SYN)) === 0) {
      ev |= EV_ZERO_WINDOW;
      this.zeroWindows++;
    }
    ev |= this.handshake(slot, side, flags, now);

    const hasNext = this.hasNextSeq[fwd] === 1;
    const next = this.nextSeq[fwd]!;
    const keepAlive = hasNext && seglen <= 1 && (flags & (SYN | FIN | RST)) === 0 && seq === ((next - 1) >>> 0);
    if (hasNext && (flags & RST) === 0 && (seglen > 0 || (flags & (SYN | FIN)) !== 0) && lt(seq, next) && !keepAlive) {
      const sinceAdvance = now - this.lastAdvanceUs[fwd]!;
      const end = (seq + seglen) >>> 0;
      const firstRtt = this.firstRttUs[slot]!;
      if (this.dupAcks[rev]! >= 2 && this.hasAck[rev] === 1 && this.lastAck[rev] === seq && sinceAdvance < FAST_RETRANS_US) {
        ev |= EV_RETRANS;
      } else if (seglen > 0 && this.hasAck[rev] === 1 && le(end, this.lastAck[rev]!)) {
        // Already ACKed: spurious, which tshark flags as tcp.analysis.retransmission too
        // (and never as out of order, however soon it follows).
        ev |= EV_SPURIOUS | EV_RETRANS;
      } else if (seglen > 0 && sinceAdvance < (firstRtt > 0 ? firstRtt : OOO_THRESHOLD_US) && next !== end) {
        ev |= EV_OUT_OF_ORDER;
      } else {
        ev |= EV_RETRANS;
      }
      if (ev & EV_RETRANS) {
        this.retransmissions++;
        if (flags & SYN) {
          ev |= EV_SYN_RETRANS;
          this.synRetransmissions++;
        }
      }
      if (ev & EV_OUT_OF_ORDER) this.outOfOrder++;
    }

    // SYN and FIN take one sequence number each.
    const segEnd = (seq + seglen + (flags & SYN ? 1 : 0) + (flags & FIN ? 1 : 0)) >>> 0;
    if (!hasNext || lt(next, segEnd)) {
      this.nextSeq[fwd] = segEnd;
      this.hasNextSeq[fwd] = 1;
      this.lastAdvanceUs[fwd] = now;
    }

    if (flags & ACK) {
      // Duplicate ACK as tshark counts it: no data, same ack and window, no SYN/FIN/RST.
      if (this.hasAck[fwd] === 1 && seglen === 0 && (flags & (SYN | FIN | RST)) === 0 && ack === this.lastAck[fwd] && view.tcpWindow === this.lastWindow[fwd]) {
        this.dupAcks[fwd]! += 1;
      } else if (this.hasAck[fwd] === 0 || ack !== this.lastAck[fwd]) {
        this.dupAcks[fwd] = 0;
      }
      if (this.hasAck[fwd] === 0 || lt(this.lastAck[fwd]!, ack)) this.lastAck[fwd] = ack;
      this.hasAck[fwd] = 1;
    }
    this.lastWindow[fwd] = view.tcpWindow;
    return ev;
  }

  /** Handshake timing; the latest SYN counts (as tshark's ts_mru_syn). */
  private handshake(slot: number, side: number, flags: number, now: number): number {
    if (this.handshakeDone[slot] === 1) return 0;
    if ((flags & (SYN | ACK)) === SYN) {
      this.synUs[slot] = now;
      this.clientSide[slot] = side;
      return 0;
    }
    if (this.clientSide[slot]! < 0) return 0;
    if ((flags & (SYN | ACK)) === (SYN | ACK) && side !== this.clientSide[slot]) {
      const first = this.synAckUs[slot] === 0;
      this.synAckUs[slot] = now;
      if (!first) return 0;
      this.lastRttServerUs = now - this.synUs[slot]!;
      return EV_RTT_SERVER;
    }
    if ((flags & (SYN | ACK | RST)) === ACK && side === this.clientSide[slot] && this.synAckUs[slot]! > 0) {
      this.handshakeDone[slot] = 1;
      this.lastRttClientUs = now - this.synAckUs[slot]!;
      this.lastHandshakeRttUs = now - this.synUs[slot]!;
      this.firstRttUs[slot] = this.lastHandshakeRttUs;
      return EV_RTT_CLIENT;
    }
    return 0;
  }
}
