import { dirname, join } from 'node:path';
import type { Registry } from 'prom-client';
import type { Server } from 'node:http';
import { loadConfigDocument, parseConfigDocument, type ConfigDocument, type FileIdentity } from './config/load.js';
import { sessionTargets, type Config } from './config/types.js';
import { writeConfigAtomic } from './config/write.js';
import { HEADER_SNAP_LENGTH, MIRROR_SNAP_LENGTH, PacketRing } from './capture/packet-ring.js';
import { compileRules, type RuleSet } from './rules/compile.js';
import { prefilterExpression } from './rules/prefilter.js';
import { EXCLUDED_MALFORMED, matchReasonName } from './rules/match.js';
import { VxlanSender } from './mirror/sender.js';
import { SenderPool } from './mirror/sender-pool.js';
import { BudgetBucket, SessionBudget } from './mirror/budget.js';
import type { MirrorOutput } from './mirror/output.js';
import { pathMtu } from './mirror/path-mtu.js';
import { MirrorPipeline, REASON_SLOTS } from './pipeline.js';
import { DIR_IN, DIR_OUT, type Direction } from './packet/view.js';
import { createRegistry, type MetricsSource, type Sample } from './metrics/metrics.js';
import { serveMetrics } from './metrics/http.js';
import { Totals } from './metrics/totals.js';
import { ControlServer, type ControlHandler } from './control/server.js';
import { refuseIfChangedOnDisk } from './control/drift.js';
import { FlowLogs } from './flow/flow-logs.js';
import type { FlowStage } from './flow/stage.js';
import type { Logger } from './log.js';
import { EBPF_STATE_FILE_NAME, EbpfDataPlane } from './ebpf/data-plane.js';
import { KernelPoolOutput, KernelSessionOutput, openKernelPool } from './ebpf/kernel-output.js';
import { KernelFlowFeed } from './ebpf/flow-feed.js';
import { interfaceState, MISSING, sameLife } from './interface-state.js';
import { BUILD_INFO } from './version.js';

/** Capture ring per interface: ~210k 64-byte frames (160 bytes each in the ring), 0.2 s at 1 Mpps (docs/capture.md). */
const CAPTURE_BUFFER_BYTES = 32 * 1024 * 1024;
const CAPTURE_TIMEOUT_MS = 10;
const DIRECTION_NAMES = ['in', 'out'] as const;

/** How often windows are closed, capture drops read and interfaces checked. */
const TICK_MS = 1000;
/** How often the route to each target is read again for its path MTU (MIRRORFLOW_PATH_MTU_CHECK_MS overrides). */
const PATH_MTU_CHECK_MS = Number(process.env.MIRRORFLOW_PATH_MTU_CHECK_MS ?? 5000);
/** A window is written this long after it ends, so frames still in the capture ring land in it. */
const WINDOW_GRACE_SEC = 1;

type Plane = 'pcap' | 'ebpf';

/** The eBPF plane's own counters (cumulative since it was opened), by MetricsSource method name. */
function kernelSamples(plane: EbpfDataPlane): Record<string, Sample[]> {
  const capture: Sample[] = [];
  const skipped: Sample[] = [];
  const malformed: Sample[] = [];
  for (const { name, dir, stats } of plane.interfaceCounters()) {
    capture.push([{ interface: name, direction: DIRECTION_NAMES[dir] }, stats.packets]);
    stats.decisions.forEach((n, idx) => {
      if (idx === 0 || n === 0) return;
      if (-idx === EXCLUDED_MALFORMED) malformed.push([{ reason: 'malformed' }, n]);
      else skipped.push([{ interface: name, reason: matchReasonName(-idx) }, n]);
    });
  }
  return { capturePackets: capture, notMirroredPackets: skipped, malformedPackets: malformed };
}

/** Whether a series' interface and session labels (where it has them) are still in the generation's config. */
function configuredSeries(gen: Generation): (labels: Record<string, string>) => boolean {
  const interfaces = new Set(gen.rules.interfaces);
  const sessions = new Set(gen.config.sessions.map((s) => s.id));
  return (labels) =>
    (labels.interface === undefined || interfaces.has(labels.interface)) && (labels.session === undefined || sessions.has(labels.session));
}

/** Everything built from one config: replaced as a whole on reload. */
interface Generation {
  config: Config;
  rules: RuleSet;
  /** Where mirroring happens: user space (AF_PACKET ring + UDP sockets) or the kernel (TC programs). */
  plane: Plane;
  pipeline: MirrorPipeline;
  /** By session index: UDP senders (pcap plane) or views of the kernel's counters (eBPF plane). */
  senders: MirrorOutput[];
  /** Capture per present source interface (a missing one has none until it appears). */
  sources: PacketRing[];
  /** interfaceState() of each source interface when this generation was built. */
  ifStates: Map<string, string>;
  /** Flow logs and TCP analysis (shared with the previous generation when unchanged). */
  flow: FlowStage | undefined;
  /** Capture drops already reported to the flow logs, by ifIndex. */
  dropsSeen: Float64Array;
  /** By target address: the path MTU its sessions' copies are cut for (read at build, followed by checkPathMtu). */
  pathMtus: Map<string, number>;
}

/**
 * The composition root: config → rules → (capture → pipeline → senders), plus metrics and
 * the control socket. It is the only place where stages are wired together.
 */
export class Agent {
  private gen: Generation | undefined;
  private raw: unknown;
  private server: Server | undefined;
  private control: ControlServer | undefined;
  private readonly totals = new Map<keyof MetricsSource, Totals>();
  private readonly startedAt = Date.now();
  private ticker: NodeJS.Timeout | undefined;
  private readonly registry: Registry;
  private readonly flowLogs: FlowLogs;
  /** Reloads and control edits run one at a time. */
  private swapping: Promise<unknown> = Promise.resolve();
  /** The kernel data plane, kept across generations (its rule maps are double-buffered). */
  private ebpf: EbpfDataPlane | undefined;
  /** Why the eBPF plane could not be opened, so `auto` does not retry on every reload. */
  private ebpfUnusable: string | undefined;
  /** Hands what the kernel counted for the flow logs to the flow stage (eBPF plane). */
  private kernelFlows: KernelFlowFeed | undefined;
  /** Config reloads (SIGHUP and control edits) by result: ok, refused (invalid), failed (could not apply). */
  private readonly reloads = new Map<string, number>();
  /** Source interface changes (down/up, deleted, re-created, appeared) that rebuilt capture or attachment. */
  private readonly interfaceChanges = new Map<string, number>();
  /** The error code of the last failed interface check (logged once per code). */
  private watchError: string | undefined;
  private lastPathMtuCheck = 0;
  /** A reload waiting behind the one running (SIGHUPs coalesce into it). */
  private pendingReload: Promise<boolean> | undefined;
  private stopping = false;
  /** The config file as last loaded or written by the agent: a control edit refuses when it changed on disk. */
  private loadedFile: FileIdentity | undefined;
  /** tx_errors + tx_dropped of the eBPF plane's VXLAN devices at the last tick. */
  private deviceErrors: Array<{ device: string; errors: number }> = [];

  constructor(private readonly configPath: string, private readonly log: Logger) {
    const { registry, rtt } = createRegistry(this.metricsSource());
    this.registry = registry;
    this.flowLogs = new FlowLogs(log, rtt);
  }

  /**
   * Binds the endpoints first (a port in use fails before any capture is opened), then
   * builds the first generation. On failure the caller runs stop(), which releases
   * whatever was opened.
   */
  async start(): Promise<void> {
    const doc = await loadConfigDocument(this.configPath);
    const listen = doc.config.agent.metrics.listen;
    if (listen !== '') {
      this.server = await serveMetrics(listen, this.registry, () => this.gen !== undefined).catch((err: NodeJS.ErrnoException) => {
        const reason = err.code === 'EADDRINUSE' ? 'the address is already in use (another mirrorflow or another service listens there)' : err.message;
        throw new Error(`agent.metrics.listen ${listen}: ${reason}`, { cause: err });
      });
      this.log.info({ listen }, 'metrics endpoint listening');
    }
    const socketPath = doc.config.agent.control.socket;
    if (socketPath !== '') {
      this.control = await ControlServer.listen({ socketPath, handler: this.controlHandler(), log: this.log });
      this.log.info({ socket: socketPath }, 'control socket listening');
    }
    this.gen = await this.build(doc.config, undefined);
    await this.flowLogs.commit(this.gen.flow);
    this.raw = doc.raw;
    this.loadedFile = doc.file;
    this.ticker = setInterval(() => this.tick(), TICK_MS);
    this.ticker.unref();
    this.log.info({ ...BUILD_INFO, ...this.summary(this.gen) }, 'agent ready');
  }

  private tick(): void {
    const gen = this.gen;
    if (gen?.flow) {
      this.noteCaptureDrops(gen);
      this.kernelFlows?.feed(gen.flow, gen.rules, 'tick').catch((err: unknown) => this.log.warn({ err }, 'could not read the kernel\'s flow counts; retrying at the next tick'));
    }
    this.flowLogs.tick(Math.floor(Date.now() / 1000) - WINDOW_GRACE_SEC);
    void this.checkInterfaces();
    void this.checkDeviceErrors();
    if (Date.now() - this.lastPathMtuCheck >= PATH_MTU_CHECK_MS && gen) {
      this.lastPathMtuCheck = Date.now();
      this.checkPathMtu(gen).catch((err: unknown) => this.log.warn({ err }, 'could not apply a path MTU change; copies keep their cut'));
    }
  }

  /**
   * Reads the route to every target again (its mtu metric, a learned PMTU exception, or the
   * egress device's MTU) and re-cuts the copies of sessions whose path MTU changed.
   */
  private async checkPathMtu(gen: Generation): Promise<void> {
    for (const address of new Set(gen.rules.sessions.map((s) => s.targetAddress))) {
      const now = await pathMtu(address);
      const before = gen.pathMtus.get(address);
      if (this.gen !== gen || now.mtu === before) continue;
      gen.pathMtus.set(address, now.mtu);
      for (const s of gen.rules.sessions) if (s.targetAddress === address) gen.senders[s.index]!.setPathMtu?.(now.mtu);
      this.log.info({ target: address, pathMtu: now.mtu, before, mtuSource: now.reason }, 'path MTU to mirror target changed; copies are cut to fit it');
    }
  }

  /**
   * A source interface deleted, re-created (new index) or appearing late gets its capture
   * rebuilt with the running config; a deleted one stops being read until it returns. A
   * down/up of the same interface is logged and counted only.
   */
  private async checkInterfaces(): Promise<void> {
    const gen = this.gen;
    if (!gen) return;
    for (const [name, known] of gen.ifStates) {
      let now: string;
      try {
        now = await interfaceState(name);
      } catch (err) {
        this.noteWatchError(err);
        return;
      }
      if (now === known) continue;
      if (sameLife(known, now)) {
        // Down and up on the same interface: the capture ring's socket and the TC programs
        // stay bound to it and go on at link up; rebuilding would only lose frames in the
        // handover.
        gen.ifStates.set(name, now);
        this.log.warn({ interface: name }, 'source interface changed (down/up); capture and mirroring carry on');
        this.interfaceChanges.set(name, (this.interfaceChanges.get(name) ?? 0) + 1);
        continue;
      }
      await this.serialized(async () => {
        if (this.gen !== gen) return;
        this.log.warn({ interface: name }, 'source interface changed (deleted, re-created, down/up or appeared); reopening capture');
        this.interfaceChanges.set(name, (this.interfaceChanges.get(name) ?? 0) + 1);
        await this.swap({ config: gen.config, raw: this.raw });
      }).catch((err: unknown) => this.log.error({ err, interface: name }, 'reopening capture failed; retrying'));
      return;
    }
  }

  /** Logs a failing interface check once per kind of failure, not every second. */
  private noteWatchError(err: unknown): void {
    const code = (err as NodeJS.ErrnoException).code ?? String(err);
    if (code === this.watchError) return;
    this.watchError = code;
    this.log.warn({ err }, 'cannot check source interfaces; keeping capture as it is');
  }

  /** The kernel plane's send failures happen in the vxlan driver: say so when they rise. */
  private async checkDeviceErrors(): Promise<void> {
    if (!this.ebpf) return;
    const now = await this.ebpf.deviceErrors();
    for (const { device, errors } of now) {
      const before = this.deviceErrors.find((d) => d.device === device)?.errors ?? 0;
      if (errors > before) {
        this.log.warn({ device, copies: errors - before }, 'VXLAN device could not send mirrored copies (no route to the target, or it answers ICMP unreachable)');
      }
    }
    this.deviceErrors = now;
  }

  /**
   * Re-reads the config file; a config that fails validation leaves the running one as is.
   * Reloads coalesce: at most one runs and one waits, and every request made while one
   * waits is answered by it (it reads the file as it is when it starts).
   */
  reload(): Promise<boolean> {
    if (this.stopping) return Promise.resolve(false);
    if (this.pendingReload) return this.pendingReload;
    const pending: Promise<boolean> = this.serialized(async () => {
      if (this.pendingReload === pending) this.pendingReload = undefined;
      if (this.stopping) return false;
      let doc: ConfigDocument;
      try {
        doc = await loadConfigDocument(this.configPath);
      } catch (err) {
        this.log.error({ err }, 'reload refused: keeping the running config');
        this.countReload('refused');
        return false;
      }
      try {
        await this.swap(doc);
      } catch (err) {
        this.log.error({ err }, 'reload failed: keeping the running config');
        this.countReload('failed');
        return false;
      }
      this.log.info(this.summary(this.gen!), 'config reloaded');
      this.countReload('ok');
      return true;
    });
    this.pendingReload = pending;
    return pending;
  }

  private countReload(result: 'ok' | 'refused' | 'failed'): void {
    this.reloads.set(result, (this.reloads.get(result) ?? 0) + 1);
  }

  /** Frames capture lost since the last call, for the flow logs' SKIPDATA records. */
  private noteCaptureDrops(gen: Generation): void {
    if (!gen.flow) return;
    for (const src of gen.sources) {
      const i = gen.rules.interfaceIndex(src.interfaceName);
      const dropped = src.stats().dropped;
      gen.flow.noteDrops(i, dropped - gen.dropsSeen[i]!);
      gen.dropsSeen[i] = dropped;
    }
  }

  /** Flow log records accepted by the sinks and not delivered yet (what a forced exit loses). */
  pendingRecords(): number {
    return this.flowLogs.pendingRecords();
  }

  /**
   * Flushes open windows, detaches and closes everything. Resolves with the flow log
   * records that could not be delivered (0 on a clean stop).
   */
  async stop(): Promise<{ recordsLost: number }> {
    this.stopping = true;
    clearInterval(this.ticker);
    await this.swapping.catch(() => undefined);
    await this.control?.close();
    // Every flow and drop counted so far goes into the windows flushed below.
    if (this.gen) await this.kernelFlows?.feed(this.gen.flow, this.gen.rules, 'stop');
    if (this.gen) await this.retire(this.gen);
    this.gen = undefined;
    await this.closeEbpf();
    const recordsLost = await this.flowLogs.stop();
    // Kept-alive scrapers must not hold the close.
    this.server?.closeAllConnections();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
    this.log.info({ recordsLost }, 'agent stopped');
    return { recordsLost };
  }

  private serialized<T>(task: () => Promise<T>): Promise<T> {
    const next = this.swapping.then(task, task);
    this.swapping = next.catch(() => undefined);
    return next;
  }

  /**
   * Builds the new generation next to the running one (new capture handles open paused),
   * then retires the old one and resumes the new handles from where the old ones stopped:
   * no frame is lost or counted twice across a reload.
   */
  private async swap(doc: ConfigDocument): Promise<void> {
    const old = this.gen;
    const next = await this.build(doc.config, old);
    // The kernel's flows so far belong to the flow stage they were counted for.
    if (old && old.flow !== next.flow) await this.kernelFlows?.feed(old.flow, old.rules, 'all');
    if (old) await this.retire(old);
    await this.flowLogs.commit(next.flow);
    const lastTs = new Map(old?.sources.map((s) => [s.interfaceName, s.lastTsUs]) ?? []);
    for (const src of next.sources) src.resume(lastTs.get(src.interfaceName) ?? 0);
    this.gen = next;
    this.raw = doc.raw;
    if (doc.file) this.loadedFile = doc.file;
    this.forgetRemoved(next);
    if (next.plane === 'pcap') await this.closeEbpf();
  }

  /**
   * Series of interfaces and sessions the new config no longer has leave /metrics (a
   * counter that comes back later starts from 0, which Prometheus reads as a reset).
   */
  private forgetRemoved(gen: Generation): void {
    const keep = configuredSeries(gen);
    for (const totals of this.totals.values()) totals.retain(keep);
    for (const name of this.interfaceChanges.keys()) if (!keep({ interface: name })) this.interfaceChanges.delete(name);
  }

  /**
   * pcap when asked for; eBPF when asked for (an error when the kernel refuses); auto:
   * eBPF when the programs load here, else pcap with the reason logged once.
   */
  private async choosePlane(wanted: Config['agent']['dataPlane'], socket: string): Promise<Plane> {
    if (wanted === 'pcap') return 'pcap';
    if (this.ebpf) return 'ebpf';
    if (wanted === 'auto' && this.ebpfUnusable !== undefined) return 'pcap';
    try {
      // Kept beside the control socket: one state file per agent, also with one agent per network namespace.
      const stateFile = socket === '' ? undefined : join(dirname(socket), EBPF_STATE_FILE_NAME);
      this.ebpf = await EbpfDataPlane.open({ log: this.log, stateFile });
      this.kernelFlows = new KernelFlowFeed(this.ebpf);
      return 'ebpf';
    } catch (err) {
      this.ebpfUnusable = (err as Error).message;
      if (wanted === 'ebpf') throw new Error(`agent.dataPlane: ebpf is not usable on this host: ${this.ebpfUnusable}`);
      this.log.warn({ reason: this.ebpfUnusable }, 'eBPF data plane not usable; dataPlane auto uses pcap');
      return 'pcap';
    }
  }

  private async closeEbpf(): Promise<void> {
    const plane = this.ebpf;
    this.ebpf = undefined;
    this.kernelFlows = undefined;
    if (!plane) return;
    // The kernel's counters end with the plane: keep their totals.
    for (const [name, samples] of Object.entries(kernelSamples(plane))) this.totalsOf(name as keyof MetricsSource).fold(samples);
    await plane.close();
    this.log.info('eBPF data plane detached');
  }

  private async build(config: Config, previous: Generation | undefined): Promise<Generation> {
    const rules = compileRules(config);
    for (const s of config.sessions) {
      if (s.vniDerived) this.log.info({ session: s.id, vni: s.vni }, 'session has no vni in the config; derived one from its id');
    }
    const plane = await this.choosePlane(config.agent.dataPlane, config.agent.control.socket);
    const ebpf = plane === 'ebpf' ? this.ebpf : undefined;
    // One sender per session, so per-session counters stay exact even when targets are shared.
    const senders: MirrorOutput[] = [];
    const sources: PacketRing[] = [];
    const pathMtus = new Map<string, number>();
    // The kernel plane installs into the slot after the live one, as the last step of the build.
    const slot = ebpf ? ebpf.maps.activeSlot ^ 1 : 0;
    // pcap plane: every session's bucket and the one all sessions share (the kernel has its own).
    const agentBudget = new BudgetBucket(rules.agentBudget);
    try {
      for (const s of rules.sessions) {
        if (ebpf) {
          senders[s.index] = s.members.length > 1
            ? openKernelPool(ebpf.maps, slot, s, this.log)
            : new KernelSessionOutput(ebpf.maps, slot, s.index, { family: s.targetFamily, packetLength: s.packetLength });
          // What install() below cuts for (it reads the same route).
          if (!pathMtus.has(s.targetAddress)) pathMtus.set(s.targetAddress, (await pathMtu(s.targetAddress)).mtu);
          continue;
        }
        const mtu = await pathMtu(s.targetAddress);
        pathMtus.set(s.targetAddress, mtu.mtu);
        const budget = new SessionBudget(new BudgetBucket(s.budget), agentBudget);
        senders[s.index] = s.members.length > 1
          ? await SenderPool.open({ session: s.id, members: s.members, port: s.targetPort, family: s.targetFamily, pathMtu: mtu.mtu, check: s.healthCheck, logger: this.log, budget })
          : await VxlanSender.open({ address: s.targetAddress, port: s.targetPort, family: s.targetFamily, pathMtu: mtu.mtu, logger: this.log, budget });
        const target = s.members.map((a) => `${a}:${s.targetPort}`).join(',');
        this.log.info({ session: s.id, target, pathMtu: mtu.mtu, mtuSource: mtu.reason }, 'mirror target ready');
      }
      const flow = this.flowLogs.prepare(config, rules.interfaces);
      const pipeline = new MirrorPipeline(rules, senders, flow);
      const ifStates = new Map<string, string>();
      for (const [ifIndex, name] of rules.interfaces.entries()) {
        const state = await interfaceState(name);
        ifStates.set(name, state);
        if (state === MISSING) {
          this.log.warn({ interface: name }, 'source interface does not exist; capture starts when it appears');
          continue;
        }
        // The kernel mirrors and counts the flow logs' flows itself: no capture.
        if (ebpf) continue;
        const paused = previous?.sources.some((s) => s.interfaceName === name) ?? false;
        sources.push(this.capture(rules, pipeline, ifIndex, name, ebpf === undefined, paused));
      }
      const rejectInterfaces = rules.interfaces.filter((_, i) => flow?.covers(i) ?? false);
      const healthOf = (i: number) => (senders[i] instanceof KernelPoolOutput ? senders[i].healthy : undefined);
      if (ebpf && (await ebpf.install(rules, rejectInterfaces, healthOf)) !== slot) throw new Error('eBPF rule maps flipped to an unexpected slot');
      const dropsSeen = new Float64Array(rules.interfaces.length);
      return { config, rules, plane, pipeline, senders, sources, ifStates, flow, dropsSeen, pathMtus };
    } catch (err) {
      for (const src of sources) src.close();
      await Promise.all(senders.map((s) => s.close()));
      throw err;
    }
  }

  private capture(
    rules: RuleSet, pipeline: MirrorPipeline, ifIndex: number, name: string, userMirror: boolean, paused: boolean,
  ): PacketRing {
    // Mirroring needs aggregates whole (their segments are cut from them); flow logs only headers.
    const mirrored = userMirror && (rules.chains[ifIndex * 2]!.length > 0 || rules.chains[ifIndex * 2 + 1]!.length > 0);
    return new PacketRing({
      interfaceName: name,
      // A flow log needs every IP packet of its interfaces, not only the mirrored ones.
      filterIn: prefilterExpression(rules, name, DIR_IN, { allIp: pipeline.flow?.covers(ifIndex) ?? false }),
      filterOut: prefilterExpression(rules, name, DIR_OUT, { allIp: pipeline.flow?.covers(ifIndex) ?? false }),
      snapLength: mirrored ? MIRROR_SNAP_LENGTH : HEADER_SNAP_LENGTH,
      bufferBytes: CAPTURE_BUFFER_BYTES,
      bufferTimeoutMs: CAPTURE_TIMEOUT_MS,
      paused,
      onFrame: (buf, caplen, wireLen, tsUs, direction: Direction, offload) =>
        pipeline.handleFrame(ifIndex, buf, caplen, wireLen, tsUs, direction, offload),
      onWarning: (msg) => this.log.warn({ interface: name }, msg),
    });
  }

  private async retire(gen: Generation): Promise<void> {
    await Promise.all(gen.sources.map((src) => src.drain()));
    // Losses up to the last frame read belong in the windows written next.
    this.noteCaptureDrops(gen);
    const live = this.liveSamples(gen);
    for (const src of gen.sources) src.close();
    await Promise.all(gen.senders.map((s) => s.close()));
    for (const [name, samples] of Object.entries(live)) this.totalsOf(name as keyof MetricsSource).fold(samples);
  }

  private controlHandler(): ControlHandler {
    return {
      status: () => this.status(),
      config: () => this.running().config,
      rawConfig: () => this.raw,
      flowLogState: (id) => this.flowLogs.state(id) ?? null,
      apply: (next) =>
        this.serialized(async () => {
          // Validate before touching the file: an invalid edit changes nothing anywhere.
          const doc = parseConfigDocument(JSON.stringify(next), { source: `${this.configPath} (control socket)` });
          // The edit starts from the running config: writing it over a file edited since
          // it was loaded would throw that edit away.
          await refuseIfChangedOnDisk(this.configPath, this.loadedFile, this.raw);
          const file = await writeConfigAtomic(this.configPath, next);
          await this.swap({ ...doc, file });
          // The control server logs the change once, with the op and its arguments.
          this.countReload('ok');
        }),
    };
  }

  private running(): Generation {
    if (!this.gen) throw new Error('the agent is not running');
    return this.gen;
  }

  private status() {
    const gen = this.running();
    // Read once: every total below filters the same samples (the kernel's are map lookups).
    const live = this.liveSamples(gen);
    const kernel = this.ebpf ? kernelSamples(this.ebpf) : {};
    const total = (name: keyof MetricsSource, labels: Record<string, string>): number => {
      const match = (s: Sample) => Object.entries(labels).every(([k, v]) => s[0][k] === v);
      return this.samplesOf(name, live, kernel).filter(match).reduce((sum, s) => sum + s[1], 0);
    };
    return {
      dataPlane: gen.plane,
      configPath: this.configPath,
      uptimeSeconds: Math.round((Date.now() - this.startedAt) / 1000),
      interfaces: gen.rules.interfaces.map((name) => ({
        name,
        capturedIn: total('capturePackets', { interface: name, direction: 'in' }),
        capturedOut: total('capturePackets', { interface: name, direction: 'out' }),
        captureDrops: total('captureDrops', { interface: name }),
      })),
      sessions: gen.config.sessions.map((s) => ({
        id: s.id,
        enabled: s.enabled,
        vni: s.vni,
        target: sessionTargets(s).map((t) => `${t.address}:${t.port}`).join(','),
        sources: s.sources,
        packets: total('mirrorPackets', { session: s.id }),
        bytes: total('mirrorBytes', { session: s.id }),
        truncated: total('mirrorTruncated', { session: s.id }),
        sendErrors: total('mirrorSendErrors', { session: s.id }),
        dropped: total('mirrorDropped', { session: s.id }),
        budgetDrops: total('mirrorBudgetDrops', { session: s.id }),
      })),
    };
  }

  /** Everything counted under one metric: retired generations, the live one, the kernel's. */
  private samplesOf(
    name: keyof MetricsSource,
    live: Record<string, Sample[]> = this.gen ? this.liveSamples(this.gen) : {},
    kernel: Record<string, Sample[]> = this.ebpf ? kernelSamples(this.ebpf) : {},
  ): Sample[] {
    const all = this.totalsOf(name).with([...(live[name] ?? []), ...(kernel[name] ?? [])]);
    // The eBPF plane keeps counting every interface life it attached; show the configured ones.
    const keep = this.gen ? configuredSeries(this.gen) : () => true;
    return all.filter(([labels]) => keep(labels));
  }

  private totalsOf(name: keyof MetricsSource): Totals {
    let t = this.totals.get(name);
    if (!t) this.totals.set(name, (t = new Totals()));
    return t;
  }

  /**
   * Counter samples of one generation, by MetricsSource method name. With the kernel
   * mirroring, what the data plane saw and decided is the kernel's (kernelSamples); the
   * generation's capture only feeds flow logs.
   */
  private liveSamples(gen: Generation): Record<string, Sample[]> {
    const { rules, pipeline } = gen;
    const capture: Sample[] = [];
    const unsegmented: Sample[] = [];
    const drops: Sample[] = [];
    const skipped: Sample[] = [];
    const kernel = gen.plane === 'ebpf';
    rules.interfaces.forEach((name, i) => {
      const src = gen.sources.find((s) => s.interfaceName === name);
      if (src) drops.push([{ interface: name }, src.stats().dropped]);
      if (kernel) return;
      for (const dir of [DIR_IN, DIR_OUT] as const) {
        capture.push([{ interface: name, direction: DIRECTION_NAMES[dir] }, pipeline.captured[i * 2 + dir]!]);
        unsegmented.push([{ interface: name, direction: DIRECTION_NAMES[dir] }, pipeline.unsegmented[i * 2 + dir]!]);
      }
    });
    pipeline.notMirrored.forEach((count, slot) => {
      if (count > 0 && !kernel) {
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
      unsegmentedPackets: unsegmented,
      captureDrops: drops,
      malformedPackets: kernel ? [] : [...pipeline.malformed].map(([reason, n]) => [{ reason }, n] as const),
      notMirroredPackets: skipped,
      mirrorPackets: perSession((s) => s.packets),
      mirrorBytes: perSession((s) => s.bytes),
      mirrorTruncated: perSession((s) => s.truncated),
      mirrorSendErrors: perSession((s) => s.sendErrors),
      mirrorDropped: perSession((s) => s.dropped),
      mirrorTargetPackets: rules.sessions.flatMap((s) =>
        (pipeline.senders[s.index]!.targets?.() ?? []).map((t) => [{ session: s.id, target: t.target }, t.packets] as const)),
      mirrorBudgetDrops: perSession((s) => s.budgetDrops),
    };
  }

  private metricsSource(): MetricsSource {
    const read = (name: keyof MetricsSource) => (): Sample[] => this.samplesOf(name);
    return {
      capturePackets: read('capturePackets'),
      captureDrops: read('captureDrops'),
      malformedPackets: read('malformedPackets'),
      unsegmentedPackets: read('unsegmentedPackets'),
      notMirroredPackets: read('notMirroredPackets'),
      mirrorPackets: read('mirrorPackets'),
      mirrorBytes: read('mirrorBytes'),
      mirrorTruncated: read('mirrorTruncated'),
      mirrorSendErrors: read('mirrorSendErrors'),
      mirrorDropped: read('mirrorDropped'),
      mirrorTargetPackets: read('mirrorTargetPackets'),
      // A gauge of the live generation only: health of retired pools means nothing now.
      mirrorTargetHealthy: () => (this.gen?.rules.sessions ?? []).flatMap((s) =>
        (this.gen!.senders[s.index]!.targets?.() ?? []).map((t) => [{ session: s.id, target: t.target }, t.healthy ? 1 : 0] as const)),
      mirrorBudgetDrops: read('mirrorBudgetDrops'),
      sessionsActive: () => this.gen?.rules.sessions.length ?? 0,
      tcpRetransmissions: () => this.flowLogs.samples('tcpRetransmissions'),
      tcpSynRetransmissions: () => this.flowLogs.samples('tcpSynRetransmissions'),
      tcpZeroWindows: () => this.flowLogs.samples('tcpZeroWindows'),
      tcpResets: () => this.flowLogs.samples('tcpResets'),
      tcpOutOfOrder: () => this.flowLogs.samples('tcpOutOfOrder'),
      flowsActive: () => this.flowLogs.activeFlows(),
      flowLogRecords: () => this.flowLogs.samples('flowLogRecords'),
      flowTableEvictions: () => this.flowLogs.samples('flowTableEvictions'),
      sinkErrors: () => this.flowLogs.samples('sinkErrors'),
      sinkDropped: () => this.flowLogs.samples('sinkDropped'),
      vxlanDeviceErrors: () => this.deviceErrors.map(({ device, errors }) => [{ device }, errors] as const),
      configReloads: () => [...this.reloads].map(([result, n]) => [{ result }, n] as const),
      interfaceChanges: () => [...this.interfaceChanges].map(([name, n]) => [{ interface: name }, n] as const),
      controlErrors: () => [...(this.control?.errors ?? [])].map(([reason, n]) => [{ reason }, n] as const),
    };
  }

  private summary(gen: Generation) {
    return {
      dataPlane: gen.plane,
      interfaces: gen.rules.interfaces,
      sessions: gen.rules.sessions.map((s) => ({ id: s.id, vni: s.vni, target: `${s.targetAddress}:${s.targetPort}` })),
    };
  }
}
