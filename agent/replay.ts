// `mirrorflow replay`: the live pipeline (decode → match → mirror) run over a capture file.
// Mirrored copies become whole outer frames in OUT.pcap, exactly as the live sender would
// put them on the wire, so tests and users can check the output with tshark offline.
import { loadConfig } from './config/load.js';
import { compileRules } from './rules/compile.js';
import { MirrorPipeline } from './pipeline.js';
import { forEachFrame, PcapWriter } from './capture/pcap-file.js';
import { OuterFrameOutput, type FrameWriter } from './mirror/outer-frame.js';
import { DEFAULT_PATH_MTU } from './mirror/path-mtu.js';
import { DIR_IN, DIR_OUT } from './packet/view.js';
import type { MirrorOutput } from './mirror/output.js';
import { FlowLogs } from './flow/flow-logs.js';
import type { Logger } from './log.js';
import { ErrorCode, MirrorflowError } from './errors.js';

export interface ReplayOptions {
  config: string;
  pcap: string;
  /** The configured source interface the file was captured on; default: the file's own name for it, or the only one. */
  interfaceName?: string;
  out?: string;
  /** For files that do not record direction (classic pcap): frames from this MAC are outbound. */
  localMac?: string;
  logger: Logger;
  /** Outer source address of the written VXLAN frames. */
  outerSource?: string;
  pathMtu?: number;
}

export interface ReplaySummary {
  frames: number;
  interfaceName: string;
  mirrored: Record<string, number>;
  truncated: Record<string, number>;
  malformed: Record<string, number>;
  written: number;
  /** Flow log records written, by flow log id and log-status. */
  flowLogRecords: Record<string, Record<string, number>>;
  /** Flow log records that did not reach their sink (flow_log_sink_dropped_total), by flow log id. */
  flowLogRecordsLost: Record<string, number>;
}

const DOC_SOURCE_V4 = '192.0.2.1';
const DOC_SOURCE_V6 = '2001:db8::1';
const DIRECTION_UNKNOWN = -1;

/** Nothing to write when no --out was given; mirrored packets are still counted. */
const discard: FrameWriter = { write: () => undefined };

export async function replay(opts: ReplayOptions): Promise<ReplaySummary> {
  const config = await loadConfig(opts.config);
  const rules = compileRules(config);
  const mac = opts.localMac === undefined ? undefined : Buffer.from(opts.localMac.replaceAll(':', ''), 'hex');
  if (mac !== undefined && mac.length !== 6) throw new MirrorflowError(ErrorCode.REPLAY_INPUT, `--local-mac: not a MAC address: ${opts.localMac}`);

  const writer = opts.out === undefined ? undefined : new PcapWriter(opts.out, 65535);
  const outputs: MirrorOutput[] = rules.sessions.map(
    (s) =>
      new OuterFrameOutput(
        {
          sourceAddress: opts.outerSource ?? (s.targetFamily === 6 ? DOC_SOURCE_V6 : DOC_SOURCE_V4),
          targetAddress: s.targetAddress,
          targetPort: s.targetPort,
          pathMtu: opts.pathMtu ?? DEFAULT_PATH_MTU,
        },
        writer ?? discard,
      ),
  );
  // Flow logs go to the configured sinks, windows following packet time.
  const flowLogs = new FlowLogs(opts.logger);
  const flow = flowLogs.prepare(config, rules.interfaces);
  await flowLogs.commit(flow);
  const pipeline = new MirrorPipeline(rules, outputs, flow);

  let ifIndex = -1;
  let ifName = '';
  const resolveInterface = (fileName: string | undefined): void => {
    const wanted = opts.interfaceName ?? fileName ?? (rules.interfaces.length === 1 ? rules.interfaces[0] : undefined);
    if (wanted === undefined) {
      throw new MirrorflowError(ErrorCode.REPLAY_INPUT, `the file does not name its interface and the config has several (${rules.interfaces.join(', ')}): pass --interface`);
    }
    ifIndex = rules.interfaces.indexOf(wanted);
    if (ifIndex < 0) throw new MirrorflowError(ErrorCode.REPLAY_INPUT, `interface ${wanted} is not a source of any enabled session (${rules.interfaces.join(', ') || 'none'})`);
    ifName = wanted;
  };

  try {
    const frames = await forEachFrame(opts.pcap, (buf, caplen, wireLen, tsUs, direction, fileIfName) => {
      if (ifIndex < 0) resolveInterface(fileIfName);
      let dir = direction;
      if (mac !== undefined) dir = caplen >= 12 && mac.equals(buf.subarray(6, 12)) ? DIR_OUT : DIR_IN;
      if (dir === DIRECTION_UNKNOWN) {
        throw new MirrorflowError(ErrorCode.REPLAY_INPUT, `${opts.pcap} does not record packet directions (classic pcap): pass --local-mac with the interface's MAC`);
      }
      pipeline.handleFrame(ifIndex, buf, caplen, wireLen, tsUs, dir === DIR_OUT ? DIR_OUT : DIR_IN);
    });
    flow?.flushAll();
    const flowLogRecords = Object.fromEntries(flow?.aggregators.map((a) => [a.id, { ...a.recordsByStatus }]) ?? []);
    const perSession = (read: (o: MirrorOutput) => number) =>
      Object.fromEntries(rules.sessions.map((s) => [s.id, read(outputs[s.index]!)]));
    // Closing the sinks delivers what they hold; only then is it known what did not leave.
    await flowLogs.stop();
    const flowLogRecordsLost = Object.fromEntries(flowLogs.samples('sinkDropped').map(([labels, n]) => [labels.flow_log ?? '', n]));
    return {
      frames,
      interfaceName: ifName,
      mirrored: perSession((o) => o.packets),
      truncated: perSession((o) => o.truncated),
      malformed: Object.fromEntries(pipeline.malformed),
      written: writer?.frames ?? 0,
      flowLogRecords,
      flowLogRecordsLost,
    };
  } finally {
    await writer?.close();
    await flowLogs.stop();
  }
}
