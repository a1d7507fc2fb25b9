// The user space data plane: one AF_PACKET ring for every source interface, the pipeline's matcher
// and segmenter, and UDP senders (one per session, a SenderPool for a sensor pool).
import { CaptureSet } from '../capture/capture-set.js';
import type { Sample } from '../metrics/metrics.js';
import { DIRECTION_NAMES, outputCounters, type PlaneCounters } from '../metrics/counters.js';
import { BudgetBucket, SessionBudget } from '../mirror/budget.js';
import type { MirrorOutput } from '../mirror/output.js';
import { pathMtu } from '../mirror/path-mtu.js';
import { SenderPool } from '../mirror/sender-pool.js';
import { VxlanSender } from '../mirror/sender.js';
import { DIR_IN, DIR_OUT } from '../packet/view.js';
import { MirrorPipeline, REASON_SLOTS } from '../pipeline.js';
import { matchReasonName } from '../rules/match.js';
import { GenerationParts, type DataPlane, type GenerationInput, type PlaneGeneration } from './data-plane.js';

export class PcapPlane implements DataPlane {
  readonly name = 'pcap';

  async build({ rules, flow, ifindexes, previous, log }: GenerationInput): Promise<PlaneGeneration> {
    // One sender per session, so per-session counters stay exact even when targets are shared.
    const outputs: MirrorOutput[] = [];
    const pathMtus = new Map<string, number>();
    // Every session's bucket and the one all sessions share.
    const agentBudget = new BudgetBucket(rules.agentBudget);
    try {
      for (const s of rules.sessions) {
        const mtu = await pathMtu(s.targetAddress);
        pathMtus.set(s.targetAddress, mtu.mtu);
        const budget = new SessionBudget(new BudgetBucket(s.budget), agentBudget);
        outputs[s.index] = s.members.length > 1
          ? await SenderPool.open({ session: s.id, members: s.members, port: s.targetPort, family: s.targetFamily, pathMtu: mtu.mtu, check: s.healthCheck, logger: log, budget })
          : await VxlanSender.open({ address: s.targetAddress, port: s.targetPort, family: s.targetFamily, pathMtu: mtu.mtu, logger: log, budget });
        const target = s.members.map((a) => `${a}:${s.targetPort}`).join(',');
        log.info({ session: s.id, target, pathMtu: mtu.mtu, mtuSource: mtu.reason }, 'mirror target ready');
      }
      const pipeline = new MirrorPipeline(rules, outputs, flow);
      const capture = CaptureSet.open({ pipeline, ifindexes, previous: previous?.capture, log });
      return new PcapGeneration(pipeline, outputs, pathMtus, capture);
    } catch (err) {
      await Promise.all(outputs.map((s) => s.close()));
      throw err;
    }
  }

  /** Everything the pcap plane counts lives in its generations. */
  counters(): PlaneCounters {
    return {};
  }

  async tick(): Promise<void> {}

  deviceErrors(): Sample[] {
    return [];
  }

  async close(): Promise<void> {}
}

class PcapGeneration extends GenerationParts {
  async feedFlow(): Promise<void> {
    this.capture.noteDrops();
  }

  /** What user space saw and decided: capture_packets_total counts after the prefilter, per wire segment. */
  counters(): PlaneCounters {
    const { rules, captured, unsegmented, notMirrored, malformed } = this.pipeline;
    const capture: Sample[] = [];
    const unsegmentedSamples: Sample[] = [];
    rules.interfaces.forEach((name, i) => {
      for (const dir of [DIR_IN, DIR_OUT] as const) {
        capture.push([{ interface: name, direction: DIRECTION_NAMES[dir] }, captured[i * 2 + dir]!]);
        unsegmentedSamples.push([{ interface: name, direction: DIRECTION_NAMES[dir] }, unsegmented[i * 2 + dir]!]);
      }
    });
    const skipped: Sample[] = [];
    notMirrored.forEach((count, slot) => {
      if (count === 0) return;
      skipped.push([{ interface: rules.interfaces[Math.floor(slot / REASON_SLOTS)]!, reason: matchReasonName(-(slot % REASON_SLOTS)) }, count]);
    });
    return {
      capturePackets: capture,
      unsegmentedPackets: unsegmentedSamples,
      captureDrops: this.capture.dropSamples(),
      malformedPackets: [...malformed].map(([reason, n]) => [{ reason }, n] as const),
      notMirroredPackets: skipped,
      ...outputCounters(rules.sessions, this.outputs),
    };
  }
}

