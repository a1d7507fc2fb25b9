// The control socket: a Unix domain socket (mode 0600 in a 0700 directory, so only root
// reaches it: Node cannot read SO_PEERCRED, the file modes are the access check) answering
// the operations of protocol.ts. Edits are applied one at a time, so two clients editing at
// once cannot lose each other's change.

import { mkdir, chmod, lstat, unlink } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import type { Config, Filter, Rule } from '../config/types.js';
import { ConfigError } from '../errors.js';
import type { Logger } from '../log.js';
import { serveConnection, type ConnectionErrorReason, type ConnectionLimits } from './connection.js';
import { applyEdit, isEditOperation, parseEdit } from './edit.js';
import {
  ControlError,
  ControlErrorCode,
  encodeMessage,
  OPERATIONS,
  type ControlErrorBody,
  type ControlResponse,
  type RequestId,
} from './protocol.js';
import { ErrorCode, MirrorflowError } from '../errors.js';

/** What the agent provides to the control socket. */
export interface ControlHandler {
  /** Data plane, interfaces, counters: whatever `mirrorflow status` shows. Must be JSON-serialisable. */
  status(): unknown;
  /** The running, validated config. */
  config(): Config;
  /** The plain document the running config was parsed from (before defaults). */
  rawConfig(): unknown;
  /**
   * Validates `next` like a config file (throws ConfigError when invalid, leaving the
   * running config untouched), writes it back to the config file atomically, and reloads.
   */
  apply(next: unknown): Promise<void>;
  /** Runtime state of one flow log (current window, records written), when the agent keeps it. */
  flowLogState?(id: string): unknown;
}

export interface ControlServerOptions {
  socketPath: string;
  handler: ControlHandler;
  log?: Logger;
  /** Overrides of DEFAULT_LIMITS (tests use small ones). */
  limits?: Partial<ControlLimits>;
}

export interface ControlLimits extends ConnectionLimits {
  /** Open connections at once; one more is answered with an error and closed. */
  maxConnections: number;
}

/**
 * Worst case held for clients: maxConnections × (maxLineBytes + maxUnsentBytes + one
 * answer) ≈ 32 × 320 KiB = 10 MiB, whatever they send or fail to read.
 */
export const DEFAULT_LIMITS: ControlLimits = {
  maxConnections: 32,
  maxLineBytes: 64 * 1024,
  maxQueuedLines: 16,
  maxUnsentBytes: 256 * 1024,
  idleMs: 5 * 60_000,
};

const SOCKET_MODE = 0o600;
const DIR_MODE = 0o700;
/** How long a stale-socket probe waits for an answer. */
const PROBE_TIMEOUT_MS = 1000;

const formatRange = (r: { start: number; end: number }) => `${r.start}/${r.end}`;

function ruleView(r: Rule) {
  return { ...r, sourcePortRange: formatRange(r.sourcePortRange), destinationPortRange: formatRange(r.destinationPortRange) };
}

function filterView(f: Filter) {
  return { ...f, ingressRules: f.ingressRules.map(ruleView), egressRules: f.egressRules.map(ruleView) };
}

/** True when something accepts connections on the socket file. */
function isListening(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = net.connect(socketPath);
    const done = (listening: boolean) => {
      probe.destroy();
      resolve(listening);
    };
    probe.setTimeout(PROBE_TIMEOUT_MS, () => done(true));
    probe.once('connect', () => done(true));
    probe.once('error', () => done(false));
  });
}

/**
 * Makes the socket path usable: creates a missing parent directory with mode 0700, and
 * removes a socket file left by an agent that is gone. Refuses when another agent listens
 * there or the path is something other than a socket.
 */
async function prepareSocketPath(socketPath: string): Promise<void> {
  await mkdir(path.dirname(socketPath), { recursive: true, mode: DIR_MODE });
  let stat;
  try {
    stat = await lstat(socketPath);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  if (!stat.isSocket()) throw new MirrorflowError(ErrorCode.CONTROL_SOCKET, `control socket path ${socketPath} exists and is not a socket`);
  if (await isListening(socketPath)) {
    throw new MirrorflowError(ErrorCode.CONTROL_SOCKET, `another process is listening on the control socket ${socketPath} (is mirrorflow already running?)`);
  }
  await unlink(socketPath);
}

function errorBody(err: unknown): ControlErrorBody {
  if (err instanceof ConfigError) return { code: err.code, message: err.message, issues: err.issues };
  if (err instanceof ControlError) {
    return err.issues === undefined ? { code: err.code, message: err.message } : { code: err.code, message: err.message, issues: err.issues };
  }
  return { code: ControlErrorCode.FAILED, message: err instanceof Error ? err.message : String(err) };
}

export class ControlServer {
  private readonly connections = new Set<net.Socket>();
  /** Edits run one after another: each starts from the config the previous one produced. */
  private edits: Promise<unknown> = Promise.resolve();
  /** Connections that ended badly, by reason (mirrorflow_control_errors_total). */
  readonly errors = new Map<ConnectionErrorReason, number>();

  private constructor(
    private readonly server: net.Server,
    readonly socketPath: string,
    private readonly handler: ControlHandler,
    private readonly log: Logger | undefined,
    private readonly limits: ControlLimits,
  ) {}

  /** Prepares the path, listens, and sets the socket file to mode 0600. */
  static async listen(opts: ControlServerOptions): Promise<ControlServer> {
    await prepareSocketPath(opts.socketPath);
    // Half-open: a client may send its requests and shut down its side, then read the answers.
    const server = net.createServer({ allowHalfOpen: true });
    const control = new ControlServer(server, opts.socketPath, opts.handler, opts.log, { ...DEFAULT_LIMITS, ...opts.limits });
    server.on('connection', (socket) => control.serve(socket));
    // bind() creates the file with the process umask; a tight umask for that instant means
    // the socket is never reachable with a wider mode, and chmod below makes the mode exact.
    const previous = process.umask(0o177);
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(opts.socketPath, () => {
          server.off('error', reject);
          // accept() failing (EMFILE) must not end the agent: counted, and the next accept retries.
          server.on('error', (err) => control.countError('other', err));
          resolve();
        });
      });
    } finally {
      process.umask(previous);
    }
    await chmod(opts.socketPath, SOCKET_MODE);
    return control;
  }

  /** Stops accepting, drops open connections and removes the socket file. */
  async close(): Promise<void> {
    for (const socket of this.connections) socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    await unlink(this.socketPath).catch(() => undefined);
  }

  /** Connections open now. */
  get connectionCount(): number {
    return this.connections.size;
  }

  private countError(reason: ConnectionErrorReason, err?: Error): void {
    this.errors.set(reason, (this.errors.get(reason) ?? 0) + 1);
    this.log?.debug({ err, reason }, 'control connection error');
  }

  private serve(socket: net.Socket): void {
    if (this.connections.size >= this.limits.maxConnections) {
      this.countError('too_many_connections');
      socket.on('error', () => undefined);
      const message = `too many control connections (${this.limits.maxConnections}); try again`;
      socket.end(encodeMessage({ id: null, ok: false, error: { code: ControlErrorCode.UNAVAILABLE, message } }), () => socket.destroy());
      return;
    }
    this.connections.add(socket);
    socket.once('close', () => this.connections.delete(socket));
    serveConnection(socket, this.limits, (line) => this.handle(line), (reason, err) => this.countError(reason, err));
  }

  private async handle(line: string): Promise<ControlResponse> {
    let id: RequestId = null;
    try {
      let request: unknown;
      try {
        request = JSON.parse(line);
      } catch {
        throw new ControlError(ControlErrorCode.BAD_REQUEST, 'request is not JSON');
      }
      if (typeof request !== 'object' || request === null || Array.isArray(request)) {
        throw new ControlError(ControlErrorCode.BAD_REQUEST, 'request must be an object {id, op, args}');
      }
      const { id: rawId, op, args } = request as Record<string, unknown>;
      if (typeof rawId === 'number' || typeof rawId === 'string') id = rawId;
      if (typeof op !== 'string') throw new ControlError(ControlErrorCode.BAD_REQUEST, 'request.op must be a string');
      const result = await this.dispatch(op, args);
      return { id, ok: true, result };
    } catch (err) {
      const body = errorBody(err);
      if (body.code === ControlErrorCode.FAILED) this.log?.error({ err }, 'control request failed');
      return { id, ok: false, error: body };
    }
  }

  private async dispatch(op: string, args: unknown): Promise<unknown> {
    const config = () => this.handler.config();
    switch (op) {
      case 'status':
        return this.handler.status();
      case 'sessions.list':
        return { sessions: config().sessions };
      case 'filters.list':
        return { filters: config().filters.map(filterView) };
      case 'flowlogs.list':
        return { flowLogs: config().flowLogs.map((f) => ({ ...f, state: this.handler.flowLogState?.(f.id) ?? null })) };
    }
    if (!isEditOperation(op)) {
      throw new ControlError(ControlErrorCode.UNKNOWN_OP, `unknown op ${JSON.stringify(op)}; known: ${OPERATIONS.join(', ')}`);
    }
    const edit = parseEdit(op, args);
    const run = this.edits.then(async () => {
      const { next, changed } = applyEdit(this.handler.rawConfig(), edit);
      if (changed) {
        await this.handler.apply(next);
        this.log?.info({ op, args }, 'config changed over the control socket');
      }
      return changed;
    });
    this.edits = run.catch(() => undefined);
    const changed = await run;
    if ('id' in edit) return { changed, session: config().sessions.find((s) => s.id === edit.id) ?? null };
    const filter = config().filters.find((f) => f.id === edit.filterId);
    return { changed, filter: filter ? filterView(filter) : null };
  }
}
