// The kernel data plane: TC programs clone and cut on every source interface and send
// through external VXLAN devices (agent/ebpf/data-plane.ts owns that kernel side); on the
// interfaces a flow log covers they also count the flows and analyse TCP. User space
// captures nothing: it reads the kernel's counters, drains the flows and the REJECTs the
// kfree_skb tracer counted into the flow stage (agent/ebpf/flow-feed.ts) and watches the
// devices' send errors.
import { dirname, join } from 'node:path';
import { CaptureSet } from '../capture/capture-set.js';
import { EBPF_STATE_FILE_NAME, EbpfDataPlane } from '../ebpf/data-plane.js';
import { KernelPoolOutput, KernelSessionOutput, openKernelPool } from '../ebpf/kernel-output.js';
import { KernelFlowFeed, type FeedMode } from '../ebpf/flow-feed.js';
import type { Logger } from '../log.js';
import type { Sample } from '../metrics/metrics.js';
import { DIRECTION_NAMES, outputCounters, type PlaneCounters } from '../metrics/counters.js';
import type { MirrorOutput } from '../mirror/output.js';
import { pathMtu } from '../mirror/path-mtu.js';
import { MirrorPipeline } from '../pipeline.js';
import { EXCLUDED_MALFORMED, matchReasonName } from '../rules/match.js';
import { GenerationParts, type DataPlane, type GenerationInput, type PlaneGeneration } from './data-plane.js';

export class EbpfPlane implements DataPlane {
  readonly name = 'ebpf';
  /** tx_errors + tx_dropped of the plane's devices at the last tick. */
  private errors: Array<{ device: string; errors: number }> = [];
  private readonly flows: KernelFlowFeed;

  private constructor(private readonly kernel: EbpfDataPlane, private readonly log: Logger) {
    this.flows = new KernelFlowFeed(kernel);
  }

  /**
   * Loads the programs (after removing what a crashed run left). The state file is kept
   * beside the control socket: one per agent, also with one agent per network namespace.
   * Throws when the kernel or libbpf cannot run them.
   */
  static async open(controlSocket: string, log: Logger): Promise<EbpfPlane> {
    const stateFile = controlSocket === '' ? undefined : join(dirname(controlSocket), EBPF_STATE_FILE_NAME);
    return new EbpfPlane(await EbpfDataPlane.open({ log, stateFile }), log);
  }

  async build({ rules, flow, log }: GenerationInput): Promise<PlaneGeneration> {
    const maps = this.kernel.maps;
    const outputs: MirrorOutput[] = [];
    const pathMtus = new Map<string, number>();
    // The rules install into the slot after the live one, as the last step of the build.
    const slot = maps.activeSlot ^ 1;
    try {
      for (const s of rules.sessions) {
        outputs[s.index] = s.members.length > 1
          ? openKernelPool(maps, slot, s, log)
          : new KernelSessionOutput(maps, slot, s.index, { family: s.targetFamily, packetLength: s.packetLength });
        // What install() below cuts for (it reads the same route).
        if (!pathMtus.has(s.targetAddress)) pathMtus.set(s.targetAddress, (await pathMtu(s.targetAddress)).mtu);
      }
      const pipeline = new MirrorPipeline(rules, outputs, flow);
      // A gone interface's reserved slot is still covered (its last flows are written) but has nothing to attach.
      const flowInterfaces = rules.interfaces.filter((_, i) => rules.live[i] === 1 && (flow?.covers(i) ?? false));
      const healthOf = (i: number) => (outputs[i] instanceof KernelPoolOutput ? outputs[i].healthy : undefined);
      if ((await this.kernel.install(rules, flowInterfaces, healthOf)) !== slot) throw new Error('eBPF rule maps flipped to an unexpected slot');
      return new EbpfGeneration(this, pipeline, outputs, pathMtus, CaptureSet.none(pipeline));
    } catch (err) {
      await Promise.all(outputs.map((s) => s.close()));
      throw err;
    }
  }

  /** What the programs saw and decided per interface since the plane was opened: capture_packets_total counts every skb. */
  counters(): PlaneCounters {
    const capture: Sample[] = [];
    const skipped: Sample[] = [];
    const malformed: Sample[] = [];
    for (const { name, dir, stats } of this.kernel.interfaceCounters()) {
      capture.push([{ interface: name, direction: DIRECTION_NAMES[dir] }, stats.packets]);
      stats.decisions.forEach((n, idx) => {
        if (idx === 0 || n === 0) return;
        if (-idx === EXCLUDED_MALFORMED) malformed.push([{ reason: 'malformed' }, n]);
        else skipped.push([{ interface: name, reason: matchReasonName(-idx) }, n]);
      });
    }
    return { capturePackets: capture, notMirroredPackets: skipped, malformedPackets: malformed };
  }

  /** The kernel plane's send failures happen in the vxlan driver: say so when they rise. */
  async tick(): Promise<void> {
    const now = await this.kernel.deviceErrors();
    for (const { device, errors } of now) {
      const before = this.errors.find((d) => d.device === device)?.errors ?? 0;
      if (errors > before) {
        this.log.warn({ device, copies: errors - before }, 'VXLAN device could not send mirrored copies (no route to the target, or it answers ICMP unreachable)');
      }
    }
    this.errors = now;
  }

  deviceErrors(): Sample[] {
    return this.errors.map(({ device, errors }) => [{ device }, errors] as const);
  }

  /** Flows and drops the kernel counted into the generation's flow logs (see KernelFlowFeed). */
  feedFlows(pipeline: MirrorPipeline, mode: FeedMode): Promise<void> {
    return this.flows.feed(pipeline.flow, pipeline.rules, mode);
  }

  async close(): Promise<void> {
    await this.kernel.close();
    this.log.info('eBPF data plane detached');
  }
}

class EbpfGeneration extends GenerationParts {
  constructor(
    private readonly plane: EbpfPlane,
    pipeline: MirrorPipeline, outputs: readonly MirrorOutput[], pathMtus: Map<string, number>, capture: CaptureSet,
  ) {
    super(pipeline, outputs, pathMtus, capture);
  }

  feedFlow(final: boolean): Promise<void> {
    return this.plane.feedFlows(this.pipeline, final ? 'stop' : 'tick');
  }

  /** What the kernel counted so far goes to the flow stage this generation counted it for. */
  override async retire(): Promise<PlaneCounters> {
    await this.plane.feedFlows(this.pipeline, 'all');
    return super.retire();
  }

  /** The sessions' counters from this generation's kernel slot; what the programs saw per interface is the plane's (counters()). */
  counters(): PlaneCounters {
    return outputCounters(this.pipeline.rules.sessions, this.outputs);
  }
}
