import { readFile } from 'node:fs/promises';
import type { Server } from 'node:http';
import { loadConfig } from './config/load.js';
import type { Config } from './config/types.js';
import { PcapSource } from './capture/pcap-source.js';
import { compileRules, type RuleSet } from './rules/compile.js';
import { prefilterExpression } from './rules/prefilter.js';
import { matchReasonName } from './rules/match.js';
import { VxlanSender } from './mirror/sender.js';
import type { MirrorOutput } from './mirror/output.js';
import { pathMtu } from './mirror/path-mtu.js';
import { MirrorPipeline, REASON_SLOTS } from './pipeline.js';
import { DIR_IN, DIR_OUT, type Direction } from './packet/view.js';
import { createRegistry, type MetricsSource, type Sample } from './metrics/metrics.js';
import { serveMetrics } from './metrics/http.js';
import { Totals } from './metrics/totals.js';
import type { Logger } from './log.js';

/** Kernel socket buffer per capture handle: room for ~100 ms of 64-byte frames at 1 Mpps. */
const CAPTURE_BUFFER_BYTES = 32 * 1024 * 1024;
const CAPTURE_TIMEOUT_MS = 10;
const DIRECTION_NAMES = ['in', 'out'] as const;

/** The MAC the kernel uses as source on this interface (names are checked by the config schema). */
async function interfaceMac(name: string): Promise<string> {
  try {
    return (await readFile(`/sys/class/net/${name}/address`, 'utf8')).trim();
  } catch (err) {
    throw new Error(`source interface ${name}: cannot read its MAC address (${(err as NodeJS.ErrnoException).code ?? err})`);
  }
}

/** Everything built from one config: replaced as a whole on reload. */
interface Generation {
  config: Config;
  rules: RuleSet;
  pipeline: MirrorPipeline;
  senders: VxlanSender[];
  sources: PcapSource[];
}

/**
 * The composition root: config → rules → (capture → pipeline → senders), plus metrics.
 * It is the only place where stages are wired together.
 */
export class Agent {
  private gen: Generation | undefined;
  private server: Server | undefined;
  private readonly totals = new Map<keyof MetricsSource, Totals>();

  constructor(private readonly configPath: string, private readonly log: Logger) {}

  async start(): Promise<void> {
    const config = await loadConfig(this.configPath);
    this.gen = await this.build(config);
    const listen = config.agent.metrics.listen;
    if (listen !== '') {
      this.server = await serveMetrics(listen, createRegistry(this.metricsSource()), () => this.gen !== undefined);
      this.log.info({ listen }, 'metrics endpoint listening');
    }
    this.log.info(this.summary(this.gen), 'agent ready');
  }

  /** Re-reads the config file; a config that fails validation leaves the running one as is. */
  async reload(): Promise<boolean> {
    let config: Config;
    try {
      config = await loadConfig(this.configPath);
    } catch (err) {
      this.log.error({ err }, 'reload refused: keeping the running config');
      return false;
    }
    const old = this.gen;
    if (old) await this.retire(old);
    this.gen = undefined;
    this.gen = await this.build(config);
    this.log.info(this.summary(this.gen), 'config reloaded');
    return true;
  }

  async stop(): Promise<void> {
    if (this.gen) await this.retire(this.gen);
    this.gen = undefined;
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
    this.log.info('agent stopped');
  }

  private async build(config: Config): Promise<Generation> {
    const rules = compileRules(config);
    for (const s of config.sessions) {
      if (s.vniDerived) this.log.info({ session: s.id, vni: s.vni }, 'session has no vni in the config; derived one from its id');
    }
    // One sender per session, so per-session counters stay exact even when targets are shared.
    const senders: VxlanSender[] = [];
    try {
      for (const s of rules.sessions) {
        const mtu = await pathMtu(s.targetAddress);
        senders[s.index] = await VxlanSender.open({
          address: s.targetAddress, port: s.targetPort, family: s.targetFamily, pathMtu: mtu.mtu, logger: this.log,
        });
        this.log.info({ session: s.id, target: `${s.targetAddress}:${s.targetPort}`, pathMtu: mtu.mtu, mtuSource: mtu.reason }, 'mirror target ready');
      }
    } catch (err) {
      await Promise.all(senders.map((s) => s.close()));
      throw err;
    }
    const pipeline = new MirrorPipeline(rules, senders);
    const sources: PcapSource[] = [];
    try {
      for (const [ifIndex, name] of rules.interfaces.entries()) {
        sources.push(this.capture(rules, pipeline, ifIndex, name, await interfaceMac(name)));
      }
    } catch (err) {
      for (const src of sources) src.close();
      await Promise.all(senders.map((s) => s.close()));
      throw err;
    }
    return { config, rules, pipeline, senders, sources };
  }

  private capture(rules: RuleSet, pipeline: MirrorPipeline, ifIndex: number, name: string, macAddress: string): PcapSource {
    const snap = Math.max(...rules.sessions.map((s) => s.packetLength), 128);
    return new PcapSource({
      interfaceName: name,
      macAddress,
      filterIn: prefilterExpression(rules, name, DIR_IN, { allIp: false }),
      filterOut: prefilterExpression(rules, name, DIR_OUT, { allIp: false }),
      snapLength: snap,
      bufferBytes: CAPTURE_BUFFER_BYTES,
      bufferTimeoutMs: CAPTURE_TIMEOUT_MS,
      onFrame: (buf, caplen, wireLen, tsUs, direction: Direction) =>
        pipeline.handleFrame(ifIndex, buf, caplen, wireLen, tsUs, direction),
      onWarning: (msg) => this.log.warn({ interface: name }, msg),
    });
  }

  private async retire(gen: Generation): Promise<void> {
    await Promise.all(gen.sources.map((src) => src.drain()));
    for (const src of gen.sources) src.close();
    await Promise.all(gen.senders.map((s) => s.close()));
    const live = this.liveSamples(gen);
    for (const [name, samples] of Object.entries(live)) this.totalsOf(name as keyof MetricsSource).fold(samples);
  }

  private totalsOf(name: keyof MetricsSource): Totals {
    let t = this.totals.get(name);
    if (!t) this.totals.set(name, (t = new Totals()));
    return t;
  }

  /** Counter samples of one generation, by MetricsSource method name. */
  private liveSamples(gen: Generation): Record<string, Sample[]> {
    const { rules, pipeline } = gen;
    const capture: Sample[] = [];
    const drops: Sample[] = [];
    const skipped: Sample[] = [];
    rules.interfaces.forEach((name, i) => {
      for (const dir of [DIR_IN, DIR_OUT] as const) {
        capture.push([{ interface: name, direction: DIRECTION_NAMES[dir] }, pipeline.captured[i * 2 + dir]!]);
      }
      const src = gen.sources[i];
      if (src) drops.push([{ interface: name }, src.stats().dropped]);
    });
    pipeline.notMirrored.forEach((count, slot) => {
      if (count > 0) {
        skipped.push([
          { interface: rules.interfaces[Math.floor(slot / REASON_SLOTS)]!, reason: matchReasonName(-(slot % REASON_SLOTS)) },
          count,
        ]);
      }
    });
    const perSession = (read: (s: MirrorOutput) => number): Sample[] =>
      rules.sessions.map((s) => [{ session: s.id }, read(pipeline.senders[s.index]!)] as const);
    return {
      capturePackets: capture,
      captureDrops: drops,
      malformedPackets: [...pipeline.malformed].map(([reason, n]) => [{ reason }, n] as const),
      notMirroredPackets: skipped,
      mirrorPackets: perSession((s) => s.packets),
      mirrorBytes: perSession((s) => s.bytes),
      mirrorTruncated: perSession((s) => s.truncated),
      mirrorSendErrors: perSession((s) => s.sendErrors),
      mirrorDropped: perSession((s) => s.dropped),
    };
  }

  private metricsSource(): MetricsSource {
    const read = (name: keyof MetricsSource) => (): Sample[] =>
      this.totalsOf(name).with(this.gen ? this.liveSamples(this.gen)[name] ?? [] : []);
    return {
      capturePackets: read('capturePackets'),
      captureDrops: read('captureDrops'),
      malformedPackets: read('malformedPackets'),
      notMirroredPackets: read('notMirroredPackets'),
      mirrorPackets: read('mirrorPackets'),
      mirrorBytes: read('mirrorBytes'),
      mirrorTruncated: read('mirrorTruncated'),
      mirrorSendErrors: read('mirrorSendErrors'),
      mirrorDropped: read('mirrorDropped'),
      sessionsActive: () => this.gen?.rules.sessions.length ?? 0,
    };
  }

  private summary(gen: Generation) {
    return {
      dataPlane: 'pcap',
      interfaces: gen.rules.interfaces,
      sessions: gen.rules.sessions.map((s) => ({ id: s.id, vni: s.vni, target: `${s.targetAddress}:${s.targetPort}` })),
    };
  }
}
