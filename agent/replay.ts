// `mirrorflow replay`: the live pipeline (decode → match → mirror) run over a capture file.
// Mirrored copies become whole outer frames in OUT.pcap, exactly as the live sender would
// put them on the wire, so tests and users can check the output with tshark offline.
import { readFileSync } from 'node:fs';
import { rename, rm } from 'node:fs/promises';
import { basename, dirname, extname, join } from 'node:path';
import { loadConfig } from './config/load.js';
import { ErrorCode, MirrorflowError } from './errors.js';
import type { Config } from './config/types.js';
import { compileRules } from './rules/compile.js';
import { MirrorPipeline } from './pipeline.js';
import { captureFormat, forEachFrame, PcapWriter } from './capture/pcap-file.js';
import { OuterFrameOutput, type FrameWriter } from './mirror/outer-frame.js';
import { DEFAULT_PATH_MTU } from './mirror/path-mtu.js';
import { DIR_IN, DIR_OUT } from './packet/view.js';
import { NO_OFFLOAD } from './packet/offload.js';
import type { MirrorOutput } from './mirror/output.js';
import { FlowLogs } from './flow/flow-logs.js';
import type { Logger } from './log.js';

export interface ReplayOptions {
  config: string;
  pcap: string;
  /**
   * The configured source interface the file was captured on; default: the file's own name
   * for it, or the only one. When it exists on this host and the file records no
   * directions, its MAC tells them (as for live capture).
   */
  interfaceName?: string;
  out?: string;
  /** For files that do not record direction (classic pcap): frames from this MAC are outbound. */
  localMac?: string;
  /**
   * Write flow log records to this JSON lines file instead of the configured sinks (which
   * are the live agent's); with several flow logs, one file each: FILE-<id>.ext.
   */
  flowLogOut?: string;
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
  /** Where packet directions came from: the file's own flags, or a MAC (given, or the interface's on this host). */
  directions: string;
}

const DOC_SOURCE_V4 = '192.0.2.1';
const DOC_SOURCE_V6 = '2001:db8::1';
const DIRECTION_UNKNOWN = -1;

/** Nothing to write when no --out was given; mirrored packets are still counted. */
const discard: FrameWriter = { write: () => undefined };

/** The interface's MAC on this host, or undefined when it has none here. */
function hostInterfaceMac(name: string): string | undefined {
  try {
    // Names reaching here are session sources, checked by the config schema (no "/" or "..").
    return readFileSync(`/sys/class/net/${name}/address`, 'utf8').trim();
  } catch {
    return undefined;
  }
}

function parseMac(text: string, what: string): Buffer {
  const mac = Buffer.from(text.replaceAll(':', ''), 'hex');
  if (mac.length !== 6 || !/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i.test(text)) throw new MirrorflowError(ErrorCode.REPLAY_INPUT, `${what}: not a MAC address: ${text}`);
  return mac;
}

/** FILE for one flow log, FILE-<id>.ext for each of several. */
function flowLogFile(out: string, id: string, several: boolean): string {
  if (!several) return out;
  const ext = extname(out);
  return join(dirname(out), `${basename(out, ext)}-${id}${ext}`);
}

/** The config with every flow log's sink replaced by a file of its own (never rotated: it is one replay's output). */
function withFlowLogOut(config: Config, out: string): Config {
  const several = config.flowLogs.filter((f) => f.enabled).length > 1;
  return {
    ...config,
    flowLogs: config.flowLogs.map((f) => ({
      ...f,
      sink: { type: 'file' as const, path: flowLogFile(out, f.id, several), maxBytes: Number.MAX_SAFE_INTEGER, keep: 1 },
    })),
  };
}

export async function replay(opts: ReplayOptions): Promise<ReplaySummary> {
  const loaded = await loadConfig(opts.config);
  const config = opts.flowLogOut === undefined ? loaded : withFlowLogOut(loaded, opts.flowLogOut);
  // Patterns in sources can only match the interface named with --interface.
  const rules = compileRules(config, opts.interfaceName === undefined ? [] : [opts.interfaceName]);
  let mac = opts.localMac === undefined ? undefined : parseMac(opts.localMac, '--local-mac');
  let directions = mac === undefined ? 'file' : `--local-mac ${opts.localMac}`;
  // Fails here, before anything is created, when the input cannot be read or is no capture file.
  const format = captureFormat(opts.pcap);

  // Written next to OUT and renamed at the end: a failed replay leaves no (empty) OUT behind.
  const partial = opts.out === undefined ? undefined : join(dirname(opts.out), `.${basename(opts.out)}.partial-${process.pid}`);
  const writer = partial === undefined ? undefined : new PcapWriter(partial, 65535);
  const outputs: MirrorOutput[] = rules.sessions.map(
    (s) =>
      new OuterFrameOutput(
        {
          sourceAddress: opts.outerSource ?? (s.targetFamily === 6 ? DOC_SOURCE_V6 : DOC_SOURCE_V4),
          targetAddress: s.targetAddress,
          targetPort: s.targetPort,
          members: s.members,
          pathMtu: opts.pathMtu ?? DEFAULT_PATH_MTU,
        },
        writer ?? discard,
      ),
  );
  // Flow logs go to the configured sinks (or --flow-log-out), windows following packet time.
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
  /** No directions in the file and no --local-mac: the MAC of --interface on this host, or a message saying what to pass. */
  const directionMac = (): Buffer => {
    const what = format === 'pcap' ? 'a classic pcap file (tcpdump -w) records no packet directions' : 'its packets carry no direction flags (pcapng epb_flags)';
    if (opts.interfaceName === undefined) {
      throw new MirrorflowError(ErrorCode.REPLAY_INPUT, `${opts.pcap}: ${what}: pass --interface NAME (the interface it was captured on, if it exists on this host its MAC tells outbound from inbound) or --local-mac MAC`);
    }
    const found = hostInterfaceMac(opts.interfaceName);
    if (found === undefined) {
      throw new MirrorflowError(ErrorCode.REPLAY_INPUT, `${opts.pcap}: ${what}, and ${opts.interfaceName} does not exist on this host: pass --local-mac with the MAC it had where the file was captured`);
    }
    directions = `MAC ${found} of ${opts.interfaceName} on this host`;
    return parseMac(found, opts.interfaceName);
  };

  let completed = false;
  try {
    const frames = await forEachFrame(opts.pcap, (buf, caplen, wireLen, tsUs, direction, fileIfName) => {
      if (ifIndex < 0) resolveInterface(fileIfName);
      let dir = direction;
      if (dir === DIRECTION_UNKNOWN && mac === undefined) mac = directionMac();
      if (mac !== undefined) dir = caplen >= 12 && mac.equals(buf.subarray(6, 12)) ? DIR_OUT : DIR_IN;
      // A capture file says nothing of offloads: its frames are taken as wire packets.
      pipeline.handleFrame(ifIndex, buf, caplen, wireLen, tsUs, dir === DIR_OUT ? DIR_OUT : DIR_IN, NO_OFFLOAD);
    });
    flow?.flushAll();
    const flowLogRecords = Object.fromEntries(flow?.aggregators.map((a) => [a.id, { ...a.recordsByStatus }]) ?? []);
    const perSession = (read: (o: MirrorOutput) => number) =>
      Object.fromEntries(rules.sessions.map((s) => [s.id, read(outputs[s.index]!)]));
    // Closing the sinks delivers what they hold; only then is it known what did not leave.
    await flowLogs.stop();
    const flowLogRecordsLost = Object.fromEntries(flowLogs.samples('sinkDropped').map(([labels, n]) => [labels.flow_log ?? '', n]));
    completed = true;
    return {
      frames,
      interfaceName: ifName,
      directions,
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
    if (partial !== undefined && opts.out !== undefined) {
      if (completed) await rename(partial, opts.out);
      else await rm(partial, { force: true });
    }
  }
}
