import { decode } from './packet/decode.js';
import { DECODE_MALFORMED, PacketView, type Direction } from './packet/view.js';
import type { OffloadInfo } from './packet/offload.js';
import { matchPacket } from './rules/match.js';
import type { RuleSet } from './rules/compile.js';
import type { MirrorOutput } from './mirror/output.js';
import type { FlowStage } from './flow/stage.js';

/** Room per interface for the matcher's negative verdict codes. */
export const REASON_SLOTS = 16;

/**
 * The per-packet path: decode in place → match the rules → hand to the session's sender,
 * then (when flow logs are configured) TCP analysis and the flow tables.
 * Counters are plain numbers read by the metrics collector at scrape time, so the hot
 * path never touches prom-client's label maps.
 */
export class MirrorPipeline {
  readonly view = new PacketView();
  /** Frames seen, indexed by ifIndex * 2 + direction. */
  readonly captured: Float64Array;
  /** Frames decode() refused, by reason label. */
  readonly malformed = new Map<string, number>();
  /** Match outcomes that did not mirror, indexed by ifIndex * REASON_SLOTS - code (see rules/match.ts). */
  readonly notMirrored: Float64Array;

  constructor(
    readonly rules: RuleSet,
    /** One output per compiled session, by session index. */
    readonly senders: readonly MirrorOutput[],
    /** Flow logs and TCP analysis, when any flow log is configured. */
    readonly flow?: FlowStage,
  ) {
    this.captured = new Float64Array(rules.interfaces.length * 2);
    this.notMirrored = new Float64Array(rules.interfaces.length * REASON_SLOTS);
  }

  handleFrame(
    ifIndex: number, buf: Buffer, caplen: number, wireLen: number, tsUs: number, direction: Direction, _offload?: OffloadInfo,
  ): void {
    const view = this.view;
    this.captured[ifIndex * 2 + direction]! += 1;
    view.tsUs = tsUs;
    view.direction = direction;
    const status = decode(view, buf, caplen, wireLen);
    if (status >= DECODE_MALFORMED) {
      this.malformed.set(view.malformedReason, (this.malformed.get(view.malformedReason) ?? 0) + 1);
      return;
    }
    // Non-IP and ARP frames go on to the matcher too: it counts them as excluded.
    const verdict = matchPacket(this.rules, ifIndex, view);
    let mirrored = -1;
    if (verdict < 0) {
      this.notMirrored[ifIndex * REASON_SLOTS - verdict]! += 1;
    } else {
      const session = this.rules.sessions[verdict]!;
      if (this.senders[verdict]!.send(view, session.vni, session.packetLength)) mirrored = verdict;
    }
    if (this.flow !== undefined && view.ipVersion !== 0) this.flow.observe(ifIndex, view, mirrored);
  }
}
