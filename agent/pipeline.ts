import { decode } from './packet/decode.js';
import { DECODE_MALFORMED, PacketView, type Direction } from './packet/view.js';
import { GSO_NONE, NO_OFFLOAD, type OffloadInfo } from './packet/offload.js';
import { GSO_ENCAPSULATED, Segmenter } from './packet/segment.js';
import { matchPacket } from './rules/match.js';
import { FragmentTable } from './rules/fragments.js';
import type { RuleSet } from './rules/compile.js';
import type { MirrorOutput } from './mirror/output.js';
import type { FlowStage } from './flow/stage.js';

/** Room per interface for the matcher's negative verdict codes. */
export const REASON_SLOTS = 16;

/**
 * The per-packet path: decode in place → match the rules → hand to the session's sender,
 * then (when flow logs are configured) TCP analysis and the flow tables.
 * An offloaded aggregate (TSO/GSO/GRO, UDP GSO, BIG TCP) is matched once, on its headers
 * (every segment has the same addresses, ports and protocol), then each of its wire segments
 * is mirrored and counted as a packet of its own (SPEC §3, §4).
 * Counters are plain numbers read by the metrics collector at scrape time, so the hot
 * path never touches prom-client's label maps.
 */
export class MirrorPipeline {
  readonly view = new PacketView();
  /** First-fragment decisions of this generation's packets, so later fragments follow them (SPEC §2). */
  private readonly fragments = new FragmentTable();
  readonly segmenter = new Segmenter();
  /** Wire packets seen (an aggregate counts its segments), indexed by ifIndex * 2 + direction. */
  readonly captured: Float64Array;
  /** Frames decode() or the segmenter refused, by reason label. */
  readonly malformed = new Map<string, number>();
  /**
   * Aggregates passed on as one packet because the segmenter does not take them apart (tunnel
   * aggregates), indexed like captured.
   */
  readonly unsegmented: Float64Array;
  /** Wire packets not mirrored, by match outcome, indexed by ifIndex * REASON_SLOTS - code (see rules/match.ts). */
  readonly notMirrored: Float64Array;

  constructor(
    readonly rules: RuleSet,
    /** One output per compiled session, by session index. */
    readonly senders: readonly MirrorOutput[],
    /** Flow logs and TCP analysis, when any flow log is configured. */
    readonly flow?: FlowStage,
  ) {
    this.captured = new Float64Array(rules.interfaces.length * 2);
    this.unsegmented = new Float64Array(rules.interfaces.length * 2);
    this.notMirrored = new Float64Array(rules.interfaces.length * REASON_SLOTS);
  }

  /**
   * One captured frame. `offload` is what the kernel said about it (PACKET_VNET_HDR); without
   * it (pcap files, libpcap) the frame is taken as one wire packet with its checksums as they are.
   */
  handleFrame(
    ifIndex: number, buf: Buffer, caplen: number, wireLen: number, tsUs: number, direction: Direction,
    offload: Readonly<OffloadInfo> = NO_OFFLOAD,
  ): void {
    const view = this.view;
    view.tsUs = tsUs;
    view.direction = direction;
    if (offload.gsoType !== GSO_NONE) this.handleAggregate(ifIndex, buf, caplen, wireLen, offload);
    else this.handlePacket(ifIndex, buf, caplen, wireLen, offload.needsCsum ? offload : undefined);
  }

  /** One wire packet; `partial` when its transport checksum holds only the pseudo-header sum. */
  private handlePacket(ifIndex: number, buf: Buffer, caplen: number, wireLen: number, partial: Readonly<OffloadInfo> | undefined): void {
    const view = this.view;
    this.captured[ifIndex * 2 + view.direction]! += 1;
    const status = decode(view, buf, caplen, wireLen);
    if (status >= DECODE_MALFORMED) {
      this.countMalformed(view.malformedReason);
      return;
    }
    // Non-IP and ARP frames go on to the matcher too: it counts them as excluded.
    const verdict = matchPacket(this.rules, this.fragments, ifIndex, view);
    let mirrored = -1;
    if (verdict < 0) {
      this.notMirrored[ifIndex * REASON_SLOTS - verdict]! += 1;
    } else {
      const session = this.rules.sessions[verdict]!;
      // An outbound packet's transport checksum is only the pseudo-header sum: the copy gets the real one.
      if (partial !== undefined) this.segmenter.completeChecksum(view, partial);
      if (this.senders[verdict]!.send(view, session.vni, session.packetLength)) mirrored = verdict;
    }
    if (this.flow !== undefined && view.ipVersion !== 0) this.flow.observe(ifIndex, view, mirrored);
  }

  /** An aggregate: one rule decision, then per wire segment a copy and a flow observation. */
  private handleAggregate(ifIndex: number, buf: Buffer, caplen: number, wireLen: number, offload: Readonly<OffloadInfo>): void {
    const view = this.view;
    const seg = this.segmenter;
    const n = seg.begin(buf, caplen, wireLen, offload);
    if (n === 0) {
      if (seg.malformedReason === GSO_ENCAPSULATED) {
        // As before offload information existed: one packet, one (cut) copy.
        this.unsegmented[ifIndex * 2 + view.direction]! += 1;
        this.handlePacket(ifIndex, buf, caplen, wireLen, undefined);
        return;
      }
      this.captured[ifIndex * 2 + view.direction]! += 1;
      this.countMalformed(seg.malformedReason);
      return;
    }
    seg.build(0, false);
    // The segmenter checked what decode() checks; should they ever disagree, the frame is one malformed frame.
    if (decode(view, seg.frame, seg.caplen, seg.wireLen) >= DECODE_MALFORMED) {
      this.captured[ifIndex * 2 + view.direction]! += 1;
      this.countMalformed(view.malformedReason);
      return;
    }
    this.captured[ifIndex * 2 + view.direction]! += n;
    const verdict = matchPacket(this.rules, this.fragments, ifIndex, view);
    if (verdict < 0) this.notMirrored[ifIndex * REASON_SLOTS - verdict]! += n;
    const flow = this.flow;
    if (verdict < 0 && flow === undefined) return;
    const session = verdict < 0 ? undefined : this.rules.sessions[verdict]!;
    const sender = verdict < 0 ? undefined : this.senders[verdict]!;
    for (let k = 0; k < n; k++) {
      // Segment 0's headers are already in place; the flow stage needs no payload.
      if (session !== undefined || k !== 0) {
        seg.build(k, session !== undefined);
        decode(view, seg.frame, seg.caplen, seg.wireLen);
      }
      let mirrored = -1;
      if (session !== undefined && sender!.send(view, session.vni, session.packetLength)) mirrored = verdict;
      flow?.observe(ifIndex, view, mirrored);
    }
  }

  private countMalformed(reason: string): void {
    this.malformed.set(reason, (this.malformed.get(reason) ?? 0) + 1);
  }
}
