// The kernel data plane: TC programs clone and cut on every source interface and send
// through external VXLAN devices (agent/ebpf/data-plane.ts owns that kernel side). User
// space captures only what flow logs need, reads the kernel's counters, drains the REJECTs
// the kfree_skb tracer counted and watches the devices' send errors.
import { dirname, join } from 'node:path';
import { CaptureSet } from '../capture/capture-set.js';
import { EBPF_STATE_FILE_NAME, EbpfDataPlane } from '../ebpf/data-plane.js';
import { KernelPoolOutput, KernelSessionOutput, openKernelPool } from '../ebpf/kernel-output.js';
import { fillRejectView } from '../ebpf/reject-view.js';
import type { Logger } from '../log.js';
import type { Sample } from '../metrics/metrics.js';
import { DIRECTION_NAMES, outputCounters, type PlaneCounters } from '../metrics/counters.js';
import type { MirrorOutput } from '../mirror/output.js';
import { pathMtu } from '../mirror/path-mtu.js';
import { PacketView } from '../packet/view.js';
import { MirrorPipeline } from '../pipeline.js';
import { EXCLUDED_MALFORMED, matchReasonName } from '../rules/match.js';
import { GenerationParts, type DataPlane, type GenerationInput, type PlaneGeneration } from './data-plane.js';

export class EbpfPlane implements DataPlane {
  readonly name = 'ebpf';
  /** tx_errors + tx_dropped of the plane's devices at the last tick. */
  private errors: Array<{ device: string; errors: number }> = [];
  /** Reused for every REJECT entry handed to the flow stage. */
  private readonly rejectView = new PacketView();

  private constructor(private readonly kernel: EbpfDataPlane, private readonly log: Logger) {}

  /**
   * Loads the programs (after removing what a crashed run left). The state file is kept
   * beside the control socket: one per agent, also with one agent per network namespace.
   * Throws when the kernel or libbpf cannot run them.
   */
  static async open(controlSocket: string, log: Logger): Promise<EbpfPlane> {
    const stateFile = controlSocket === '' ? undefined : join(dirname(controlSocket), EBPF_STATE_FILE_NAME);
    return new EbpfPlane(await EbpfDataPlane.open({ log, stateFile }), log);
  }

  async build({ rules, flow, ifindexes, previous, log }: GenerationInput): Promise<PlaneGeneration> {
    const maps = this.kernel.maps;
    const outputs: MirrorOutput[] = [];
    const pathMtus = new Map<string, number>();
    // The rules install into the slot after the live one, as the last step of the build.
    const slot = maps.activeSlot ^ 1;
    let capture: CaptureSet | undefined;
    try {
      for (const s of rules.sessions) {
        outputs[s.index] = s.members.length > 1
          ? openKernelPool(maps, slot, s, log)
          : new KernelSessionOutput(maps, slot, s.index, { family: s.targetFamily, packetLength: s.packetLength });
        // What install() below cuts for (it reads the same route).
        if (!pathMtus.has(s.targetAddress)) pathMtus.set(s.targetAddress, (await pathMtu(s.targetAddress)).mtu);
      }
      const pipeline = new MirrorPipeline(rules, outputs, flow);
      capture = CaptureSet.open({ pipeline, ifindexes, userMirror: false, previous: previous?.capture, log });
      const rejectInterfaces = rules.interfaces.filter((_, i) => flow?.covers(i) ?? false);
      const healthOf = (i: number) => (outputs[i] instanceof KernelPoolOutput ? outputs[i].healthy : undefined);
      if ((await this.kernel.install(rules, rejectInterfaces, healthOf)) !== slot) throw new Error('eBPF rule maps flipped to an unexpected slot');
      return new EbpfGeneration(this, pipeline, outputs, pathMtus, capture);
    } catch (err) {
      capture?.close();
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

  /** Drops the kernel counted since the last call into the flow logs as REJECT records. */
  feedRejects(pipeline: MirrorPipeline, final: boolean): void {
    const flow = pipeline.flow;
    if (final) this.kernel.stopRejects();
    const rejected = this.kernel.drainRejects(final);
    if (!flow || rejected.length === 0) return;
    const nowWallUs = Date.now() * 1000;
    const nowMonoNs = process.hrtime.bigint();
    for (const r of rejected) {
      const i = pipeline.rules.interfaceIndex(r.interfaceName);
      if (i >= 0) flow.observeRejected(i, fillRejectView(this.rejectView, r, nowWallUs, nowMonoNs), r.packets, r.bytes);
    }
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

  feedFlow(final: boolean): void {
    if (!final) this.capture.noteDrops();
    this.plane.feedRejects(this.pipeline, final);
  }

  /**
   * The sessions' counters from this generation's kernel slot, and capture drops of the
   * rings feeding flow logs; what the programs saw per interface is the plane's (counters()).
   */
  counters(): PlaneCounters {
    return { captureDrops: this.capture.dropSamples(), ...outputCounters(this.pipeline.rules.sessions, this.outputs) };
  }
}
