import type { PacketView } from '../packet/view.js';

/**
 * Where the pipeline hands a packet chosen for mirroring: the live VXLAN sender, or the
 * pcap writer of `mirrorflow replay`. Counters are plain fields read at scrape time.
 */
export interface MirrorOutput {
  /** True when the copy was handed on; false when it was dropped (and counted). */
  send(view: PacketView, vni: number, packetLength: number): boolean;
  readonly packets: number;
  readonly bytes: number;
  readonly truncated: number;
  readonly sendErrors: number;
  readonly dropped: number;
  /** The path MTU to the target changed (live outputs; a file writer has a fixed one). */
  setPathMtu?(mtu: number): void;
  /** Per pool member (sessions with `targets:` only): copies sent to it and its health. */
  targets?(): TargetCounters[];
  /** Wire packets shed by the mirror budget (docs/config.md "Mirror budget"). */
  readonly budgetDrops: number;
  close(): Promise<void>;
}

export interface TargetCounters {
  /** "address:port" of the member. */
  target: string;
  packets: number;
  healthy: boolean;
}
