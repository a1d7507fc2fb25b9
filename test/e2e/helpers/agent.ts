// Runs the compiled agent (`node dist/agent/cli.js run`) inside a lab namespace with a
// config object, and gives the e2e tests what they poke it with: its metrics (scraped with
// curl inside the namespace), its log lines, its control CLI (as root or another uid), the
// state of the interfaces it captures on, and a restart with the same config.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { run, type Spawned } from '../../../agent/exec.js';
import type { NsRole, Topology } from '../../../agent/lab/topology.js';
import { sumMetric } from '../../../agent/lab/report.js';
import { AGENT_CLI, REPO_ROOT } from './build.js';

const READY = /"msg":"agent ready"/;
export const AGENT_TIMEOUT_MS = 20_000;
/** Metrics ports are picked at random here; each lab namespace has its own port space. */
const PORT_MIN = 20_000;
const PORT_SPAN = 20_000;
/** Between two scrapes while waiting for a metric to change. */
const METRIC_POLL_MS = 50;

export interface CliResult {
  code: number;
  out: string;
  err: string;
}

export interface AgentConfig {
  agent?: Record<string, unknown>;
  filters?: unknown[];
  sessions?: unknown[];
  flowLogs?: unknown[];
}

export interface LabAgent {
  proc: Spawned;
  configFile: string;
  socket: string;
  /** host:port of the metrics endpoint inside the namespace. */
  metricsListen: string;
  /** The config as first written (the agent may rewrite the file through the control socket). */
  config: AgentConfig;
  /** Sum of every sample of a metric whose labels include `labels`. */
  metric(name: string, labels?: Record<string, string>): Promise<number>;
  /** Polls the metric until `ok(value)` holds; resolves with that value, rejects after timeoutMs. */
  waitForMetric(name: string, labels: Record<string, string>, ok: (value: number) => boolean, timeoutMs?: number): Promise<number>;
  /** Log lines (pino JSON: errors on stderr, the rest on stdout) matching `re` so far. */
  logCount(re: RegExp): number;
  /** Waits for the `count`-th log line matching `re` (default: one more than now). */
  waitForLog(re: RegExp, count?: number, timeoutMs?: number): Promise<string>;
  /** `mirrorflow <args> --socket <socket>` in the agent's namespace, as root or as `uid`. */
  cli(args: readonly string[], opts?: { uid?: number }): Promise<CliResult>;
  /** Starts a new agent process with the same config file (after the old one is gone). */
  restart(): Promise<void>;
}

/** Exit code and output of a command, whether or not it succeeded. */
export function settle(p: Promise<{ stdout: string; stderr: string }>): Promise<CliResult> {
  return p.then(
    (r) => ({ code: 0, out: r.stdout, err: r.stderr }),
    (e: { exitCode?: number | null; stdout?: string; stderr?: string }) => ({ code: e.exitCode ?? -1, out: e.stdout ?? '', err: e.stderr ?? '' }),
  );
}


/**
 * Writes `config` (control socket and metrics endpoint filled in unless given) to the lab's
 * work directory with mode 0600, starts the agent in `role` and waits for "agent ready".
 */
export async function startLabAgent(topo: Topology, config: AgentConfig, role: NsRole = 'src'): Promise<LabAgent> {
  const socket = join(topo.workDir, 'run', 'control.sock');
  const metricsListen = `127.0.0.1:${PORT_MIN + Math.floor(Math.random() * PORT_SPAN)}`;
  const agentSection = {
    metrics: { listen: metricsListen },
    control: { socket },
    ...config.agent,
  };
  const doc = { ...config, agent: agentSection };
  const configFile = join(topo.workDir, 'agent.yaml');
  await writeFile(configFile, stringify(doc), { mode: 0o600 });
  const listen = (agentSection.metrics as { listen: string }).listen;
  const sock = (agentSection.control as { socket: string }).socket;

  const spawn = async (): Promise<Spawned> => {
    const p = topo.spawn(role, process.execPath, [AGENT_CLI, 'run', '--config', configFile], { cwd: REPO_ROOT });
    await p.waitForLine(READY, AGENT_TIMEOUT_MS, { stream: 'stdout' });
    return p;
  };

  const agent: LabAgent = {
    proc: await spawn(),
    configFile,
    socket: sock,
    metricsListen: listen,
    config: doc,
    metric: async (name, labels) => {
      const { stdout } = await topo.exec(role, 'curl', ['-sS', '--max-time', '5', `http://${listen}/metrics`]);
      return sumMetric(stdout, name, labels);
    },
    waitForMetric: async (name, labels, ok, timeoutMs = AGENT_TIMEOUT_MS) => {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const value = await agent.metric(name, labels);
        if (ok(value)) return value;
        if (Date.now() > deadline) throw new Error(`${name}${JSON.stringify(labels)} is ${value}: condition not met after ${timeoutMs} ms`);
        await new Promise((resolve) => setTimeout(resolve, METRIC_POLL_MS));
      }
    },
    logCount: (re) => agent.proc.countLines(re),
    waitForLog: (re, count, timeoutMs = AGENT_TIMEOUT_MS) =>
      agent.proc.waitForLine(re, timeoutMs, { count: count ?? agent.logCount(re) + 1 }),
    cli: (args, opts = {}) => {
      const cmd = [process.execPath, AGENT_CLI, ...args, '--socket', sock];
      const argv = opts.uid === undefined ? cmd : ['setpriv', `--reuid=${opts.uid}`, `--regid=${opts.uid}`, '--clear-groups', ...cmd];
      return settle(topo.exec(role, argv[0]!, argv.slice(1), { cwd: REPO_ROOT }));
    },
    restart: async () => {
      if (agent.proc.running) throw new Error('restart: the agent is still running');
      agent.proc = await spawn();
    },
  };
  return agent;
}

/**
 * What the agent could leave behind on an interface: qdiscs and tc filters (an eBPF plane
 * attaches clsact), XDP programs and the promiscuity count. Compared before and after.
 */
export async function interfaceFootprint(topo: Topology, role: NsRole, dev: string): Promise<string> {
  const qdisc = (await topo.exec(role, 'tc', ['qdisc', 'show', 'dev', dev])).stdout.trim();
  const ingress = (await topo.exec(role, 'tc', ['filter', 'show', 'dev', dev, 'ingress']).catch(() => ({ stdout: '' }))).stdout.trim();
  const egress = (await topo.exec(role, 'tc', ['filter', 'show', 'dev', dev, 'egress']).catch(() => ({ stdout: '' }))).stdout.trim();
  const [link] = JSON.parse((await topo.exec(role, 'ip', ['-d', '-j', 'link', 'show', 'dev', dev])).stdout) as Record<string, unknown>[];
  const { flags, promiscuity, xdp, operstate } = link ?? {};
  return JSON.stringify({ qdisc, ingress, egress, flags, promiscuity, xdp: xdp ?? null, operstate });
}

/** True while a process with this pid exists. */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** `mirrorflow validate --config file` (exit code and output). */
export function validateFile(file: string): Promise<CliResult> {
  return settle(run(process.execPath, [AGENT_CLI, 'validate', '--config', file], { cwd: REPO_ROOT }));
}
