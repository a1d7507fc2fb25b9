// Where mirroring happens, as one shape for both planes: "pcap" (AF_PACKET rings and UDP
// sockets in user space) and "ebpf" (TC programs cloning in the kernel). The Agent builds a
// PlaneGeneration per config next to the running one and swaps them; it never asks which
// plane it has.
import type { CaptureSet } from '../capture/capture-set.js';
import type { Logger } from '../log.js';
import type { Sample } from '../metrics/metrics.js';
import type { PlaneCounters } from '../metrics/counters.js';
import type { MirrorOutput } from '../mirror/output.js';
import type { MirrorPipeline } from '../pipeline.js';
import type { RuleSet } from '../rules/compile.js';
import type { FlowStage } from '../flow/stage.js';

export type PlaneName = 'pcap' | 'ebpf';

/** What a generation is built from: the compiled config, its flow stage, the interfaces as they are. */
export interface GenerationInput {
  rules: RuleSet;
  /** Flow logs and TCP analysis (shared with the previous generation when unchanged). */
  flow: FlowStage | undefined;
  /**
   * Kernel ifindex of each source interface (rules.interfaces) present now: a missing one
   * gets no capture or attachment until it appears (the interface watch then rebuilds).
   */
  ifindexes: ReadonlyMap<string, number>;
  /**
   * The running generation (of either plane), if any: interfaces it captures open paused, to
   * be resumed after its last frame, so a reload (a plane change too) loses or repeats none.
   */
  previous: PlaneGeneration | undefined;
  log: Logger;
}

/**
 * One config's mirroring on a plane; replaced as a whole on reload, and when a burst of link
 * events changes the interfaces covered (one rebuild per burst; interface indexes and the
 * flow stage carry over, agent/rules/interface-slots.ts).
 */
export interface PlaneGeneration {
  readonly pipeline: MirrorPipeline;
  /** Capture of the present source interfaces, one socket (eBPF plane: none, the kernel counts the flow logs). */
  readonly capture: CaptureSet;
  /** By session index: UDP senders (pcap) or views of the kernel's session slots (ebpf). */
  readonly outputs: readonly MirrorOutput[];
  /** By target address: the path MTU its sessions' copies are cut for (read at build, followed by the agent). */
  readonly pathMtus: Map<string, number>;
  /** Starts delivering captured frames after the last one `previous` delivered (undefined: from now). */
  resume(previous: PlaneGeneration | undefined): void;
  /**
   * Hands the flow stage what the plane learnt since the last call: capture drops (SKIPDATA);
   * on the eBPF plane the flows the programs counted, packets the host's filter dropped
   * (REJECT) and packets a full kernel flow table could not count (SKIPDATA). `final` at
   * shutdown: stop counting and take everything counted.
   */
  feedFlow(final: boolean): Promise<void>;
  /** This generation's counters now (cumulative since it was built). */
  counters(): PlaneCounters;
  /** Drains capture into the flow logs, closes capture and outputs; returns the final counters. */
  retire(): Promise<PlaneCounters>;
}

export interface DataPlane {
  readonly name: PlaneName;
  /**
   * Builds a generation next to the running one: captures open paused, kernel rule maps go
   * into the idle slot and flip as the last step. On failure nothing of it stays open.
   */
  build(input: GenerationInput): Promise<PlaneGeneration>;
  /** Counters the plane keeps for its whole life (the kernel's per interface), not per generation. */
  counters(): PlaneCounters;
  /** Once a second: device health the plane watches (eBPF: VXLAN and segmenting devices' errors). */
  tick(): Promise<void>;
  /** mirrorflow_vxlan_device_errors_total. */
  deviceErrors(): Sample[];
  /** Detaches and frees what the plane holds (its last counters() are the caller's to fold first). */
  close(): Promise<void>;
}

/**
 * What both planes' generations share: the parts, resuming capture, and the end of the
 * generation (frames still in the rings are read, they belong to it; losses up to the last
 * one go into the windows written next; then capture and outputs close).
 */
export abstract class GenerationParts implements PlaneGeneration {
  constructor(
    readonly pipeline: MirrorPipeline,
    readonly outputs: readonly MirrorOutput[],
    readonly pathMtus: Map<string, number>,
    readonly capture: CaptureSet,
  ) {}

  resume(previous: PlaneGeneration | undefined): void {
    this.capture.resume(previous?.capture);
  }

  abstract feedFlow(final: boolean): Promise<void>;
  abstract counters(): PlaneCounters;

  async retire(): Promise<PlaneCounters> {
    await this.capture.drain();
    this.capture.noteDrops();
    const final = this.counters();
    this.capture.close();
    await Promise.all(this.outputs.map((s) => s.close()));
    return final;
  }
}
