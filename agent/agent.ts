import type { Registry } from 'prom-client';
import type { Server } from 'node:http';
import { loadConfigDocument, parseConfigDocument, type ConfigDocument, type FileIdentity } from './config/load.js';
import type { Config } from './config/types.js';
import { writeConfigAtomic } from './config/write.js';
import { compileRules, type RuleSet } from './rules/compile.js';
import { pathMtu } from './mirror/path-mtu.js';
import { createRegistry, type MetricsSource, type Sample } from './metrics/metrics.js';
import { serveMetrics } from './metrics/http.js';
import { configuredSeries, PlaneTotals, targetHealth, type PlaneCounterName, type PlaneCounters } from './metrics/counters.js';
import { agentStatus } from './metrics/status.js';
import { ControlServer, type ControlHandler } from './control/server.js';
import { refuseIfChangedOnDisk } from './control/drift.js';
import { FlowLogs } from './flow/flow-logs.js';
import type { FlowStage } from './flow/stage.js';
import type { Logger } from './log.js';
import { InterfaceWatch } from './capture/interface-watch.js';
import type { DataPlane, PlaneGeneration } from './plane/data-plane.js';
import { PlaneChooser } from './plane/choose.js';
import { ErrorCode, MirrorflowError } from './errors.js';
import { BUILD_INFO } from './version.js';
import type { LinkEvent } from './capture/link-watcher.js';
import { sourcesCover } from './config/sources.js';
import { isOwnDevice } from './ebpf/device-names.js';
import { InterfaceSlots } from './rules/interface-slots.js';

/** How often windows are closed and capture drops read. */
const TICK_MS = 1000;
/** How often the route to each target is read again for its path MTU (MIRRORFLOW_PATH_MTU_CHECK_MS overrides). */
const PATH_MTU_CHECK_MS = Number(process.env.MIRRORFLOW_PATH_MTU_CHECK_MS ?? 5000);
/** A window is written this long after it ends, so frames still in the capture ring land in it. */
const WINDOW_GRACE_SEC = 1;
/** Departures rebuild once no other came for this long, or at the latest GONE_MAX_WAIT_MS after the first. */
const GONE_SETTLE_MS = 500;
const GONE_MAX_WAIT_MS = 5000;

/** Everything built from one config: replaced as a whole on reload. */
interface Generation {
  config: Config;
  rules: RuleSet;
  /** Where mirroring happens; kept across generations while the config keeps asking for it. */
  plane: DataPlane;
  /** The plane's capture, pipeline and outputs for this config. */
  mirror: PlaneGeneration;
  /** Flow logs and TCP analysis (shared with the previous generation when unchanged). */
  flow: FlowStage | undefined;
}

/**
 * The composition root: config → rules → data plane (capture → pipeline → outputs), flow
 * logs, metrics and the control socket. It wires the stages and swaps config generations;
 * what differs between the planes is theirs (agent/plane/).
 */
export class Agent {
  private gen: Generation | undefined;
  private raw: unknown;
  private server: Server | undefined;
  private control: ControlServer | undefined;
  private readonly totals = new PlaneTotals();
  private readonly startedAt = Date.now();
  private ticker: NodeJS.Timeout | undefined;
  private readonly registry: Registry;
  private readonly flowLogs: FlowLogs;
  private readonly planes: PlaneChooser;
  private readonly watch: InterfaceWatch;
  /** Stable interface indexes across rebuilds (the flow stage survives interfaces coming and going). */
  private readonly slots = new InterfaceSlots(0);
  /** A rebuild for link events waiting behind the running swap (bursts coalesce into it). */
  private pendingLinks: Promise<void> | undefined;
  /** Interfaces that went wait for the end of their burst (GONE_SETTLE_MS), since goneSince. */
  private goneTimer: NodeJS.Timeout | undefined;
  private goneSince = 0;
  /** Reloads and control edits run one at a time. */
  private swapping: Promise<unknown> = Promise.resolve();
  /** Config reloads (SIGHUP and control edits) by result: ok, refused (invalid), failed (could not apply). */
  private readonly reloads = new Map<string, number>();
  private lastPathMtuCheck = 0;
  /** A reload waiting behind the one running (SIGHUPs coalesce into it). */
  private pendingReload: Promise<boolean> | undefined;
  private stopping = false;
  /** The config file as last loaded or written by the agent: a control edit refuses when it changed on disk. */
  private loadedFile: FileIdentity | undefined;

  constructor(private readonly configPath: string, private readonly log: Logger) {
    const { registry, rtt } = createRegistry(this.metricsSource());
    this.registry = registry;
    this.flowLogs = new FlowLogs(log, rtt);
    this.planes = new PlaneChooser(log);
    this.watch = new InterfaceWatch(log);
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
        throw new MirrorflowError(ErrorCode.METRICS_LISTEN, `agent.metrics.listen ${listen}: ${reason}`, { cause: err });
      });
      this.log.info({ listen }, 'metrics endpoint listening');
    }
    const socketPath = doc.config.agent.control.socket;
    if (socketPath !== '') {
      this.control = await ControlServer.listen({ socketPath, handler: this.controlHandler(), log: this.log });
      this.log.info({ socket: socketPath }, 'control socket listening');
    }
    // Before the first build: sources resolve against the links it reports.
    this.watch.start((events) => this.linksChanged(events));
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
    if (gen?.flow) gen.mirror.feedFlow(false).catch((err: unknown) => this.log.warn({ err }, 'could not hand the data plane\'s flow counts to the flow logs; retrying at the next tick'));
    this.flowLogs.tick(Math.floor(Date.now() / 1000) - WINDOW_GRACE_SEC);
    if (gen) void gen.plane.tick();
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
    const { pathMtus, outputs } = gen.mirror;
    for (const address of new Set(gen.rules.sessions.map((s) => s.targetAddress))) {
      const now = await pathMtu(address);
      const before = pathMtus.get(address);
      if (this.gen !== gen || now.mtu === before) continue;
      pathMtus.set(address, now.mtu);
      for (const s of gen.rules.sessions) if (s.targetAddress === address) outputs[s.index]!.setPathMtu?.(now.mtu);
      this.log.info({ target: address, pathMtu: now.mtu, before, mtuSource: now.reason }, 'path MTU to mirror target changed; copies are cut to fit it');
    }
  }

  /**
   * A burst of link events (interface-watch.ts coalesces them). Those of interfaces the
   * running config covers, or could cover (a pattern matching a new or renamed one), are
   * counted; a down or up only that (capture sockets and TC filters survive it); anything
   * else rebuilds the generation once with the running config: new interfaces covered,
   * gone ones detached, the others' indexes and the flow stage kept.
   */
  private linksChanged(events: readonly LinkEvent[]): void {
    const gen = this.gen;
    if (!gen || this.stopping) return;
    const sources = [...gen.config.sessions.map((s) => s.sources), ...gen.config.flowLogs.filter((f) => f.enabled).map((f) => f.sources)];
    const covered = (name: string) => gen.rules.interfaceIndex(name) >= 0 || sources.some((list) => sourcesCover(list, name, isOwnDevice));
    const named = new Set(sources.flat());
    let rebuild = false;
    let arrived = false;
    for (const e of events) {
      const names = e.kind === 'renamed' ? [e.from, e.link.name] : [e.link.name];
      const ours = names.filter(covered);
      if (ours.length === 0) continue;
      for (const name of ours) this.watch.count(name);
      const flap = e.kind === 'down' || e.kind === 'up';
      rebuild ||= !flap;
      arrived ||= e.kind === 'appeared' || e.kind === 'renamed';
      // An interface named in the config is worth a warning; pods matched by a pattern come and go all day.
      const level = ours.some((n) => named.has(n)) ? 'warn' : 'info';
      const from = e.kind === 'renamed' ? { from: e.from } : {};
      this.log[level]({ interface: e.link.name, change: e.kind, ...from },
        flap ? 'source interface changed (down or up); capture and mirroring carry on' : `source interface changed (${e.kind}); following it`);
    }
    if (!rebuild) return;
    if (arrived) {
      // New interfaces are covered at once (within a second, docs/config.md); pending departures ride along.
      clearTimeout(this.goneTimer);
      this.goneTimer = undefined;
      this.rebuildForLinks();
      return;
    }
    // Only departures: a gone interface sends nothing more, so there is no hurry, and a
    // deletion burst trickles in over a second or more (`ip link del` waits for the network
    // to quiesce per device): wait for it to end, then rebuild once.
    if (this.goneTimer === undefined) this.goneSince = Date.now();
    else clearTimeout(this.goneTimer);
    const wait = Math.max(0, Math.min(GONE_SETTLE_MS, this.goneSince + GONE_MAX_WAIT_MS - Date.now()));
    this.goneTimer = setTimeout(() => {
      this.goneTimer = undefined;
      this.rebuildForLinks();
    }, wait);
    this.goneTimer.unref();
  }

  /** One rebuild with the running config, queued behind a running swap; requests while one waits join it. */
  private rebuildForLinks(): void {
    if (this.pendingLinks || this.stopping) return;
    const pending: Promise<void> = this.serialized(async () => {
      if (this.pendingLinks === pending) this.pendingLinks = undefined;
      if (this.stopping || !this.gen) return;
      await this.swap({ config: this.gen.config, raw: this.raw });
    }).catch((err: unknown) => this.log.error({ err }, 'following source interfaces failed; the next link event retries'));
    this.pendingLinks = pending;
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
    clearTimeout(this.goneTimer);
    this.watch.close();
    await this.swapping.catch(() => undefined);
    await this.control?.close();
    const gen = this.gen;
    if (gen) {
      // Every flow and drop counted so far goes into the windows flushed below.
      await gen.mirror.feedFlow(true);
      this.totals.fold(await gen.mirror.retire());
    }
    this.gen = undefined;
    if (gen) await this.closePlane(gen.plane);
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
    if (old) this.totals.fold(await old.mirror.retire());
    await this.flowLogs.commit(next.flow);
    next.mirror.resume(old?.mirror);
    this.gen = next;
    this.raw = doc.raw;
    if (doc.file) this.loadedFile = doc.file;
    this.logCoverage(old?.rules, next.rules);
    const keep = configuredSeries(next.rules);
    this.totals.retain(keep);
    this.watch.retain((name) => keep({ interface: name }));
    if (old && old.plane !== next.plane) await this.closePlane(old.plane);
  }

  /** The plane's own counters end with it: their totals are kept. */
  private async closePlane(plane: DataPlane): Promise<void> {
    this.totals.fold(plane.counters());
    await plane.close();
  }

  /** Says which interfaces a rebuild started and stopped covering (the e2e test and the bench time coverage by it). */
  private logCoverage(before: RuleSet | undefined, now: RuleSet): void {
    const live = (rules: RuleSet | undefined) => new Set(rules?.interfaces.filter((_, i) => rules.live[i] === 1) ?? []);
    const was = live(before);
    const is = live(now);
    const added = [...is].filter((n) => !was.has(n));
    const removed = [...was].filter((n) => !is.has(n));
    if (added.length > 0) this.log.info({ added, covered: is.size }, 'source interfaces covered');
    if (removed.length > 0) this.log.info({ removed, covered: is.size }, 'source interfaces no longer covered (gone, or no longer matched)');
  }

  private async build(config: Config, previous: Generation | undefined): Promise<Generation> {
    // A gone interface's slot waits until its open flows are written (the longest window, then the grace).
    const windows = config.flowLogs.filter((f) => f.enabled).map((f) => f.window);
    this.slots.setQuarantine(windows.length === 0 ? 0 : Math.max(...windows) + WINDOW_GRACE_SEC + 1);
    const nowSec = Math.floor(Date.now() / 1000);
    // Patterns and `*` cover the interfaces present now (docs/config.md), in stable slots.
    const rules = compileRules(config, this.watch.present(), (covered) => this.slots.layout(covered, nowSec));
    for (const s of config.sessions) {
      if (s.vniDerived) this.log.info({ session: s.id, vni: s.vni }, 'session has no vni in the config; derived one from its id');
    }
    const plane = await this.planes.choose(config, previous?.plane);
    try {
      const flow = this.flowLogs.prepare(config, rules.interfaces, rules.live);
      const ifindexes = this.watch.ifindexes(rules.interfaces);
      const mirror = await plane.build({ rules, flow, ifindexes, previous: previous?.mirror, log: this.log });
      return { config, rules, plane, mirror, flow };
    } catch (err) {
      // A plane opened for this config alone goes with it.
      if (plane !== previous?.plane) await this.closePlane(plane);
      throw err;
    }
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
    // Read once: every total filters the same snapshot (the kernel's are map lookups).
    const live = this.liveCounters(gen);
    return agentStatus({
      dataPlane: gen.plane.name,
      configPath: this.configPath,
      uptimeSeconds: Math.round((Date.now() - this.startedAt) / 1000),
      config: gen.config,
      rules: gen.rules,
      samples: (name) => this.samplesOf(name, live),
    });
  }

  /** The live generation's counters and its plane's. */
  private liveCounters(gen: Generation | undefined): PlaneCounters[] {
    return gen ? [gen.mirror.counters(), gen.plane.counters()] : [];
  }

  /** Everything counted under one metric: retired generations, closed planes, the live ones. */
  private samplesOf(name: PlaneCounterName, live = this.liveCounters(this.gen)): Sample[] {
    return this.totals.samples(name, live, this.gen ? configuredSeries(this.gen.rules) : () => true);
  }

  private metricsSource(): MetricsSource {
    const read = (name: PlaneCounterName) => (): Sample[] => this.samplesOf(name);
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
      mirrorTargetHealthy: () => (this.gen ? targetHealth(this.gen.rules.sessions, this.gen.mirror.outputs) : []),
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
      vxlanDeviceErrors: () => this.gen?.plane.deviceErrors() ?? [],
      configReloads: () => [...this.reloads].map(([result, n]) => [{ result }, n] as const),
      interfaceChanges: () => this.watch.samples(),
      controlErrors: () => [...(this.control?.errors ?? [])].map(([reason, n]) => [{ reason }, n] as const),
    };
  }

  private summary(gen: Generation) {
    return {
      dataPlane: gen.plane.name,
      interfaces: gen.rules.interfaces.filter((_, i) => gen.rules.live[i] === 1),
      sessions: gen.rules.sessions.map((s) => ({ id: s.id, vni: s.vni, target: `${s.targetAddress}:${s.targetPort}` })),
    };
  }
}
