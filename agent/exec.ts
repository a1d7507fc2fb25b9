// Process helpers for the agent (tc, ip), the lab and the e2e tests: run a command (never through a shell,
// arguments as arrays), run it inside a network namespace, and spawn long-running
// processes whose output lines can be awaited (tcpdump's "listening on", "agent ready").

import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { ErrorCode, MirrorflowError } from './errors.js';

const MAX_OUTPUT_BYTES = 64 * 1024 * 1024;
const STDERR_TAIL_CHARS = 2000;

/** A command that could not run or exited non-zero; the message names the command, the code and stderr. */
export class CommandError extends MirrorflowError {
  constructor(
    readonly argv: readonly string[],
    readonly exitCode: number | null,
    readonly signal: string | null,
    readonly stdout: string,
    readonly stderr: string,
    cause?: unknown,
  ) {
    const how = exitCode !== null ? `exited ${exitCode}` : signal !== null ? `killed by ${signal}` : 'failed to start';
    // Some tools (tsc) report on stdout.
    const detail = stderr.trim() || stdout.trim() || (cause instanceof Error ? cause.message : '');
    super(ErrorCode.COMMAND_FAILED, `\`${argv.join(' ')}\` ${how}${detail ? `: ${detail.slice(-STDERR_TAIL_CHARS)}` : ''}`, { cause });
  }
}

export interface RunOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  timeoutMs?: number;
  /** Bytes written to the command's stdin. */
  input?: string;
}

export interface RunResult {
  stdout: string;
  stderr: string;
}

/** Runs `cmd args...` and resolves with its output; rejects with CommandError on a non-zero exit. */
export function run(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const argv = [cmd, ...args];
  return new Promise((resolve, reject) => {
    const child = execFile(
      cmd,
      args,
      { cwd: opts.cwd, env: opts.env, timeout: opts.timeoutMs ?? 0, maxBuffer: MAX_OUTPUT_BYTES, encoding: 'utf8' },
      (err, stdout, stderr) => {
        if (err === null) {
          resolve({ stdout, stderr });
          return;
        }
        const code = typeof err.code === 'number' ? err.code : null;
        reject(new CommandError(argv, code, err.signal ?? null, stdout, stderr, err));
      },
    );
    if (opts.input !== undefined) child.stdin?.end(opts.input);
  });
}

/** The argv prefix that runs a command inside network namespace `ns`. */
export function netnsArgv(ns: string, cmd: string, args: readonly string[]): [string, string[]] {
  return ['ip', ['netns', 'exec', ns, cmd, ...args]];
}

/** Runs `cmd args...` inside network namespace `ns` (`ip netns exec`). */
export function runInNetns(ns: string, cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const [c, a] = netnsArgv(ns, cmd, args);
  return run(c, a, opts);
}

export type Stream = 'stdout' | 'stderr';

export interface ExitStatus {
  code: number | null;
  signal: NodeJS.Signals | null;
}

interface LineWaiter {
  re: RegExp;
  stream: Stream | undefined;
  count: number;
  resolve: (line: string) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

export interface SpawnOptions {
  /** Run inside this network namespace (`ip netns exec` execs the command: the pid is the command's). */
  netns?: string;
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Called with every complete output line, for live display. */
  onLine?: (stream: Stream, line: string) => void;
}

/**
 * A long-running child process with its stdout/stderr kept as lines. Awaiting a line
 * replaces any sleep: waitForLine() resolves as soon as a matching line is (or was) printed,
 * and rejects on timeout or when the process exits first.
 */
export class Spawned {
  readonly argv: readonly string[];
  readonly child: ChildProcess;
  readonly lines: Record<Stream, string[]> = { stdout: [], stderr: [] };
  /** Resolves once the process has exited (never rejects). */
  readonly exited: Promise<ExitStatus>;
  private exitStatus: ExitStatus | undefined;
  private spawnError: Error | undefined;
  private readonly partial: Record<Stream, string> = { stdout: '', stderr: '' };
  private readonly waiters = new Set<LineWaiter>();

  constructor(cmd: string, args: readonly string[], private readonly opts: SpawnOptions = {}) {
    const [c, a] = opts.netns !== undefined ? netnsArgv(opts.netns, cmd, args) : [cmd, [...args]];
    this.argv = [c, ...a];
    this.child = spawn(c, a, { cwd: opts.cwd, env: opts.env, stdio: ['ignore', 'pipe', 'pipe'] });
    this.child.stdout?.setEncoding('utf8').on('data', (s: string) => this.onData('stdout', s));
    this.child.stderr?.setEncoding('utf8').on('data', (s: string) => this.onData('stderr', s));
    this.exited = new Promise((resolve) => {
      this.child.once('error', (err) => {
        this.spawnError = err;
        this.finish({ code: null, signal: null });
        resolve({ code: null, signal: null });
      });
      this.child.once('close', (code, signal) => {
        this.finish({ code, signal });
        resolve({ code, signal });
      });
    });
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  get running(): boolean {
    return this.exitStatus === undefined;
  }

  /** Number of lines printed so far that match `re` (on `stream`, or either). */
  countLines(re: RegExp, stream?: Stream): number {
    let n = 0;
    for (const s of stream ? [stream] : (['stdout', 'stderr'] as const)) {
      for (const line of this.lines[s]) if (re.test(line)) n++;
    }
    return n;
  }

  /** Resolves with the `count`-th line matching `re`, waiting up to timeoutMs for it. */
  waitForLine(re: RegExp, timeoutMs: number, opts: { stream?: Stream; count?: number } = {}): Promise<string> {
    const count = opts.count ?? 1;
    const found = this.nthMatch(re, opts.stream, count);
    if (found !== undefined) return Promise.resolve(found);
    if (!this.running) return Promise.reject(this.waitError(re, 'the process exited first'));
    return new Promise((resolve, reject) => {
      const waiter: LineWaiter = {
        re,
        stream: opts.stream,
        count,
        resolve,
        reject,
        timer: setTimeout(() => {
          this.waiters.delete(waiter);
          reject(this.waitError(re, `timed out after ${timeoutMs} ms (${this.countLines(re, opts.stream)}/${count} seen)`));
        }, timeoutMs),
      };
      this.waiters.add(waiter);
    });
  }

  /** Sends `signal`, waits up to timeoutMs for the exit, then SIGKILLs. Idempotent. */
  async stop(signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 5000): Promise<ExitStatus> {
    if (!this.running) return this.exited;
    this.child.kill(signal);
    let timer: NodeJS.Timeout | undefined;
    const killed = new Promise<void>((resolve) => {
      timer = setTimeout(() => {
        this.child.kill('SIGKILL');
        resolve();
      }, timeoutMs);
    });
    await Promise.race([this.exited, killed]);
    clearTimeout(timer);
    return this.exited;
  }

  /** Everything printed so far, for error messages. */
  output(): string {
    return [...this.lines.stdout.map((l) => `out| ${l}`), ...this.lines.stderr.map((l) => `err| ${l}`)].join('\n');
  }

  private onData(stream: Stream, chunk: string): void {
    const parts = (this.partial[stream] + chunk).split('\n');
    this.partial[stream] = parts.pop() ?? '';
    for (const line of parts) this.addLine(stream, line);
  }

  private addLine(stream: Stream, line: string): void {
    this.lines[stream].push(line);
    this.opts.onLine?.(stream, line);
    for (const w of this.waiters) {
      if ((w.stream === undefined || w.stream === stream) && w.re.test(line)) {
        const nth = this.nthMatch(w.re, w.stream, w.count);
        if (nth === undefined) continue;
        clearTimeout(w.timer);
        this.waiters.delete(w);
        w.resolve(nth);
      }
    }
  }

  private finish(status: ExitStatus): void {
    if (this.exitStatus !== undefined) return;
    for (const s of ['stdout', 'stderr'] as const) {
      if (this.partial[s] !== '') this.addLine(s, this.partial[s]);
      this.partial[s] = '';
    }
    this.exitStatus = status;
    for (const w of this.waiters) {
      clearTimeout(w.timer);
      w.reject(this.waitError(w.re, 'the process exited first'));
    }
    this.waiters.clear();
  }

  private nthMatch(re: RegExp, stream: Stream | undefined, count: number): string | undefined {
    let n = 0;
    for (const s of stream ? [stream] : (['stdout', 'stderr'] as const)) {
      for (const line of this.lines[s]) if (re.test(line) && ++n === count) return line;
    }
    return undefined;
  }

  private waitError(re: RegExp, why: string): Error {
    const st = this.exitStatus;
    const exit = st === undefined ? '' : ` (exit code ${st.code}, signal ${st.signal})`;
    const start = this.spawnError ? ` (could not start: ${this.spawnError.message})` : '';
    const tail = this.output().slice(-STDERR_TAIL_CHARS);
    return new Error(`\`${this.argv.join(' ')}\`: no line matching ${re}: ${why}${exit}${start}\n${tail}`);
  }
}

/** Spawns a long-running process (optionally inside a namespace) with its output captured. */
export function spawnProcess(cmd: string, args: readonly string[], opts: SpawnOptions = {}): Spawned {
  return new Spawned(cmd, args, opts);
}
