// Per-connection TCP analysis, both directions in one entry, following the rules of
// Wireshark's tcp_analyze_sequence_number() (packet-tcp.c, as tshark 4.0 applies them) so
// the counts agree with tshark's tcp.analysis.* fields on the same packets:
//   zero window      window field 0 on a segment without SYN/FIN/RST, unless it is a
//                    zero-window probe (1 byte at nextseq while the peer's window is 0;
//                    a probe does not advance nextseq)
//   keep-alive       ≤ 1 byte at nextseq − 1, no SYN/FIN/RST (not a retransmission)
//   spurious         payload already ACKed by the peer: a retransmission
//   retransmission   payload, SYN or FIN below this direction's nextseq (not when it starts
//                    at nextseq − 1 with > 1 byte); fast when it starts at the peer's ACK
//                    after ≥ 2 duplicate ACKs, < 20 ms after the peer's last segment;
//                    otherwise out of order instead when it comes within the handshake RTT
//                    (3 ms before it is known) of the last advance and does not end at nextseq
//   duplicate ACK    empty, window ≠ 0, same seq/ack/window as the direction's last segment,
//                    not answering a keep-alive or probe; any new ack value resets the count
//   reused ports     a SYN (no ACK) whose sequence number is not its direction's base
//                    (the ISN, or first seq − 1 when the capture began mid-stream)
//                    starts a new connection in the same entry, as tshark starts a new
//                    tcp.stream; it is not a retransmission
//   handshake RTT    server side SYN → SYN-ACK, client side SYN-ACK → ACK, both as seen
//                    here; the whole handshake (SYN → ACK) is tshark's initial_rtt.
// Like tshark, a nextseq or ack of exactly 0 reads as "none yet" (1 in 2^32 segments).
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
/** lastSegment bits: what tshark remembers of a direction's last segment. */
const SEG_KEEP_ALIVE = 1;
const SEG_ZERO_WINDOW_PROBE = 2;
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
  /** Highest sequence number seen + 1; 0 means none yet, as in tshark (which also forgets a nextseq that wraps to exactly 0). */
  private readonly nextSeq: Uint32Array;
  /** Set by the direction's first segment, as tshark's base_seq. */
  private readonly baseSeq: Uint32Array;
  private readonly hasBase: Uint8Array;
  private readonly lastAdvanceUs: Float64Array;
  /** Ack field and window of the direction's last segment, and when it was seen. */
  private readonly lastAck: Uint32Array;
  private readonly lastAckUs: Float64Array;
  private readonly lastWindow: Int32Array;
  private readonly dupAcks: Uint32Array;
  /** SEG_* bits of the direction's last segment. */
  private readonly lastSegment: Uint8Array;
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
    this.baseSeq = new Uint32Array(cap * 2);
    this.hasBase = new Uint8Array(cap * 2);
    this.lastAdvanceUs = new Float64Array(cap * 2);
    this.lastAck = new Uint32Array(cap * 2);
    this.lastAckUs = new Float64Array(cap * 2);
    this.lastWindow = new Int32Array(cap * 2);
    this.dupAcks = new Uint32Array(cap * 2);
    this.lastSegment = new Uint8Array(cap * 2);
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
      const fwd = slot * 2 + side;
      if ((view.tcpFlags & (SYN | ACK)) === SYN && this.hasBase[fwd] === 1 && view.tcpSeq !== this.baseSeq[fwd]) this.reset(slot);
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
      this.hasBase[d] = 0;
      this.nextSeq[d] = 0;
      this.lastAck[d] = 0;
      this.lastAckUs[d] = 0;
      this.dupAcks[d] = 0;
      this.lastWindow[d] = -1;
      this.lastSegment[d] = 0;
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
    for (const arr of [this.nextSeq, this.baseSeq, this.hasBase, this.lastAdvanceUs, this.lastAck, this.lastAckUs, this.lastWindow, this.dupAcks, this.lastSegment]) {
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
    const win = view.tcpWindow;
    const seglen = view.payloadLength;
    const control = flags & (SYN | FIN | RST);
    let ev = 0;
    let segment = 0;

    if (flags & RST) {
      ev |= EV_RESET;
      this.resets++;
    }
    ev |= this.handshake(slot, side, flags, now);

    const next = this.nextSeq[fwd]!;
    const hasNext = next !== 0;
    if (this.hasBase[fwd] === 0) {
      this.baseSeq[fwd] = flags & SYN ? seq : (seq - 1) >>> 0;
      this.hasBase[fwd] = 1;
    }
    // An unchanged, empty segment: the base of keep-alive ACKs, probe ACKs and duplicate ACKs.
    const repeat = seglen === 0 && control === 0 && seq === next && ack === this.lastAck[fwd] && win === this.lastWindow[fwd];
    if (seglen === 1 && seq === next && this.lastWindow[rev] === 0) {
      segment = SEG_ZERO_WINDOW_PROBE;
    } else {
      if (win === 0 && control === 0) {
        ev |= EV_ZERO_WINDOW;
        this.zeroWindows++;
      }
      if (seglen <= 1 && control === 0 && seq === ((next - 1) >>> 0)) segment = SEG_KEEP_ALIVE;
      const probeAck = repeat && (this.lastSegment[rev]! & (win === 0 ? SEG_ZERO_WINDOW_PROBE : SEG_KEEP_ALIVE)) !== 0;
      if (repeat && win !== 0 && !probeAck) this.dupAcks[fwd]! += 1;
    }
    if (ack !== this.lastAck[fwd]) this.dupAcks[fwd] = 0;

    if ((seglen > 0 || (flags & (SYN | FIN)) !== 0) && segment !== SEG_KEEP_ALIVE) ev |= this.classify(slot, fwd, rev, seq, seglen, flags, hasNext, next, now);
    if (ev & EV_RETRANS) {
      this.retransmissions++;
      if (flags & SYN) {
        ev |= EV_SYN_RETRANS;
        this.synRetransmissions++;
      }
    }
    if (ev & EV_OUT_OF_ORDER) this.outOfOrder++;

    // SYN and FIN take one sequence number each; a zero-window probe does not advance.
    const segEnd = (seq + seglen + (flags & SYN ? 1 : 0) + (flags & FIN ? 1 : 0)) >>> 0;
    if ((!hasNext || lt(next, segEnd)) && segment !== SEG_ZERO_WINDOW_PROBE) {
      this.nextSeq[fwd] = segEnd;
      this.lastAdvanceUs[fwd] = now;
    }
    this.lastAck[fwd] = ack;
    this.lastAckUs[fwd] = now;
    this.lastWindow[fwd] = win;
    this.lastSegment[fwd] = segment;
    return ev;
  }

  /** A segment with payload, SYN or FIN: retransmission (fast, spurious, plain), out of order, or new. */
  private classify(slot: number, fwd: number, rev: number, seq: number, seglen: number, flags: number, hasNext: boolean, next: number, now: number): number {
    const end = (seq + seglen) >>> 0;
    const revAck = this.lastAck[rev]!;
    if (seglen > 0 && revAck !== 0 && le(end, revAck)) {
      // Already ACKed: spurious, which tshark flags as tcp.analysis.retransmission too.
      return EV_SPURIOUS | EV_RETRANS;
    }
    // Starting one below nextseq with more than a byte: new data after a zero-window probe.
    if (!hasNext || !lt(seq, next) || (seglen > 1 && seq === ((next - 1) >>> 0))) return 0;
    if (this.dupAcks[rev]! >= 2 && revAck === seq && now - this.lastAckUs[rev]! < FAST_RETRANS_US) return EV_RETRANS;
    const firstRtt = this.firstRttUs[slot]!;
    if (now - this.lastAdvanceUs[fwd]! < (firstRtt > 0 ? firstRtt : OOO_THRESHOLD_US) && next !== ((end + (flags & (SYN | FIN) ? 1 : 0)) >>> 0)) return EV_OUT_OF_ORDER;
    return EV_RETRANS;
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
