#!/usr/bin/env node
import os from 'node:os';
import { Command } from 'commander';
import { Agent } from './agent.js';
import { loadConfig } from './config/load.js';
import { missingSources } from './config/host-check.js';
import { ConfigError, ConfigReadError, describeError } from './errors.js';
import { createLogger } from './log.js';
import { flowsCommand } from './analysis/flows-command.js';
import { runLab } from './lab/lab.js';
import { runPoolLab } from './lab/pool-lab.js';
import { replay } from './replay.js';
import { controlRequest, formatControlError, formatResult, formatSessionList } from './control/client.js';
import { ControlError } from './control/protocol.js';
import { socketFromConfig } from './control/socket-path.js';
import { formatEditSummary } from './control/edit-summary.js';
import { versionText } from './version.js';
import { armStopDeadline, writeStderrLine } from './stop-deadline.js';

const DEFAULT_CONFIG = '/etc/mirrorflow/mirrorflow.yaml';
/** SIGTERM must end in bounded time even if a sink or socket hangs (MIRRORFLOW_STOP_DEADLINE_MS overrides, for tests). */
const STOP_DEADLINE_MS = Number(process.env.MIRRORFLOW_STOP_DEADLINE_MS ?? 10_000);
/** Scheduling priority of the daemon (nice): below the workloads it observes. */
const AGENT_NICE = 10;

const program = new Command()
  .name('mirrorflow')
  .description('Host traffic mirroring (VXLAN) and VPC-style flow logs')
  .version(versionText(), '-V, --version', 'print the version (and the commit it was built from)')
  .showHelpAfterError();

program
  .command('run')
  .description('run the agent in the foreground; SIGHUP reloads, SIGTERM/SIGINT stop')
  .option('-c, --config <file>', 'configuration file (YAML or JSON)', DEFAULT_CONFIG)
  .action(async (opts: { config: string }) => {
    const log = createLogger(process.env.MIRRORFLOW_LOG_LEVEL ?? 'info');
    // Mirroring and flow logs are best effort next to the host's own work: when CPU is
    // short the agent yields (and counts what it then misses) rather than the workload.
    os.setPriority(AGENT_NICE);
    const agent = new Agent(opts.config, log);
    try {
      await agent.start();
    } catch (err) {
      // Exit now and non-zero (systemd's Restart=on-failure), after releasing what start
      // opened; the deadline bounds that release too.
      log.fatal({ err }, 'agent failed to start');
      armStopDeadline(STOP_DEADLINE_MS, () => agent.pendingRecords());
      await agent.stop().catch((stopErr: unknown) => log.error({ err: stopErr }, 'error while releasing after the failed start'));
      process.exit(1);
    }
    let stopping = false;
    const stop = (signal: string): void => {
      if (stopping) return;
      stopping = true;
      // Armed before anything is logged: a log line to a stuck stdout may never return.
      const deadline = armStopDeadline(STOP_DEADLINE_MS, () => agent.pendingRecords());
      deadline.setPending(agent.pendingRecords());
      log.info({ signal, deadlineMs: STOP_DEADLINE_MS }, 'stopping');
      const counting = setInterval(() => deadline.setPending(agent.pendingRecords()), 100);
      counting.unref();
      agent.stop().then(
        ({ recordsLost }) => {
          if (recordsLost > 0) {
            writeStderrLine('stopped with flow log records that could not be written', { recordsLost });
            log.error({ recordsLost }, 'stopped with flow log records that could not be written');
          }
          process.exit(recordsLost > 0 ? 1 : 0);
        },
        (err: unknown) => {
          log.error({ err }, 'error while stopping');
          process.exit(1);
        },
      );
    };
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
    // Reloads coalesce in the agent: a burst of SIGHUPs costs one running and one pending.
    process.on('SIGHUP', () => {
      void agent.reload();
    });
  });

/**
 * A failed command's message on stderr, exit code 1; no stack trace, since these are the
 * user's mistakes (a bad file, a missing capture). Config problems come one per line,
 * `FILE: path: reason`, as compilers print them.
 */
function reportFailure(command: string, err: unknown): void {
  if (err instanceof ConfigError) {
    for (const issue of err.issues) process.stderr.write(`${err.source ?? 'config'}: ${issue.path}: ${issue.message}\n`);
  } else if (err instanceof ConfigReadError) {
    process.stderr.write(`${describeError(err)}\n`);
  } else {
    process.stderr.write(`${command}: ${describeError(err)}\n`);
  }
  process.exitCode = 1;
}

program
  .command('validate')
  .description('check a configuration file; exit 0 when valid, 1 with every error listed (FILE: path: reason); warns about sources missing on this host')
  .option('-c, --config <file>', 'configuration file (YAML or JSON)', DEFAULT_CONFIG)
  .action(async (opts: { config: string }) => {
    try {
      const config = await loadConfig(opts.config);
      for (const w of missingSources(config)) process.stderr.write(`${opts.config}: warning: ${w.path}: ${w.message}\n`);
      process.stdout.write(`${opts.config}: valid\n`);
    } catch (err) {
      reportFailure('validate', err);
    }
  });

program
  .command('replay')
  .description('run the pipeline over a capture file: mirrored copies as VXLAN frames into --out, flow logs to the sinks')
  .option('-c, --config <file>', 'configuration file (YAML or JSON)', DEFAULT_CONFIG)
  .requiredOption('--pcap <file>', 'capture file to read (pcap or pcapng, Ethernet)')
  .option('--interface <name>', "the source interface the file was captured on; for files without directions its MAC on this host tells them")
  .option('--out <file>', 'write the VXLAN copies (whole outer frames) to this pcap file (only when the replay succeeds)')
  .option('--local-mac <mac>', "the capture interface's MAC: frames from it are outbound (for files without directions)")
  .option('--flow-log-out <file>', "write flow log records to this JSON lines file instead of the config's sinks (FILE-<id>.ext each with several flow logs)")
  .option('--outer-source <address>', 'outer source address of the written copies (default 192.0.2.1 / 2001:db8::1)')
  .option('--mtu <bytes>', 'path MTU to the targets', (v) => Number(v), 1500)
  .action(async (opts: { config: string; pcap: string; interface?: string; out?: string; localMac?: string; flowLogOut?: string; outerSource?: string; mtu: number }) => {
    try {
      const summary = await replay({
        config: opts.config, pcap: opts.pcap, interfaceName: opts.interface, out: opts.out,
        localMac: opts.localMac, flowLogOut: opts.flowLogOut, outerSource: opts.outerSource, pathMtu: opts.mtu,
        logger: createLogger(process.env.MIRRORFLOW_LOG_LEVEL ?? 'warn'),
      });
      process.stdout.write(`${JSON.stringify(summary)}\n`);
      const lost = Object.entries(summary.flowLogRecordsLost).filter(([, n]) => n > 0);
      if (lost.length > 0) {
        const total = lost.reduce((sum, [, n]) => sum + n, 0);
        process.stderr.write(`replay: ${total} flow log records did not reach their sink (${lost.map(([id, n]) => `${id}: ${n}`).join(', ')})\n`);
        process.exitCode = 1;
      }
    } catch (err) {
      reportFailure('replay', err);
    }
  });

program
  .command('lab')
  .description('build throwaway namespaces, run the agent on sample traffic, show what the destination got, clean up')
  .option('--keep-files', 'keep the captures and config (the directory is printed)')
  .option('--sensors <n>', 'instead: a pool of n sensors (2..8); show the spread of flows, a failover and the return')
  .action(async (opts: { keepFiles?: boolean; sensors?: string }) => {
    const result = opts.sensors === undefined
      ? await runLab({ keepFiles: opts.keepFiles === true })
      : await runPoolLab({ sensors: Number(opts.sensors), keepFiles: opts.keepFiles === true });
    process.exitCode = result.ok ? 0 : 1;
  });

interface ControlOptions {
  socket?: string;
  config: string;
  json?: boolean;
}

/**
 * Runs one control-socket request and prints its result; a refusal exits 1 with the reason.
 * The socket is --socket, else the one the config file names (agent.control.socket).
 */
async function control(opts: ControlOptions, op: string, args: unknown, format: (result: unknown) => string): Promise<void> {
  try {
    const socket = opts.socket ?? (await socketFromConfig(opts.config, opts.config === DEFAULT_CONFIG));
    const result = await controlRequest(socket, op, args);
    process.stdout.write(opts.json === true ? `${JSON.stringify(result, null, 2)}\n` : format(result));
  } catch (err) {
    process.stderr.write(err instanceof ControlError ? formatControlError(err) : `${(err as Error).message}\n`);
    process.exitCode = 1;
  }
}

/** A command that talks to the running agent: where its socket is, and optionally --json. */
function controlCommand(parent: Command, usage: string, description: string, json = false): Command {
  const cmd = parent
    .command(usage)
    .description(description)
    .option('-s, --socket <path>', 'control socket of the running agent (default: agent.control.socket of --config)')
    .option('-c, --config <file>', 'the config file the agent runs with, to find its control socket', DEFAULT_CONFIG);
  if (json) cmd.option('--json', 'print the result as JSON (for scripts) instead of text');
  return cmd;
}

controlCommand(program, 'status', 'show the running agent: data plane, interfaces, sessions and their counters', true)
  .action((opts: ControlOptions) => control(opts, 'status', undefined, formatResult));

controlCommand(program, 'flowlogs', 'show the flow logs of the running agent and their state (window, flows, records, sink)', true)
  .action((opts: ControlOptions) => control(opts, 'flowlogs.list', undefined, formatResult));

const session = program
  .command('session')
  .description('list, start and stop mirror sessions of the running agent, add or remove their sources (changes are written back to the config file)');
controlCommand(session, 'list', 'list the sessions of the running config: id, state, priority, VNI, filter, sources, target', true)
  .action((opts: ControlOptions) => control(opts, 'sessions.list', undefined, formatSessionList));
for (const [name, op, help] of [
  ['start', 'session.start', 'enable a session (written back to the config file)'],
  ['stop', 'session.stop', 'disable a session (written back to the config file)'],
] as const) {
  controlCommand(session, `${name} <id>`, help)
    .action((id: string, opts: ControlOptions) => control(opts, op, { id }, (r) => formatEditSummary(op, { id }, r)));
}
for (const [name, op, help] of [
  ['add-source', 'session.addSource', 'add a source interface to a session (written back to the config file)'],
  ['remove-source', 'session.removeSource', 'remove a source interface from a session (written back to the config file)'],
] as const) {
  controlCommand(session, `${name} <id> <interface>`, help)
    .action((id: string, iface: string, opts: ControlOptions) =>
      control(opts, op, { id, interface: iface }, (r) => formatEditSummary(op, { id, interface: iface }, r)));
}

program.addCommand(flowsCommand(DEFAULT_CONFIG));

await program.parseAsync(process.argv);
