#!/usr/bin/env node
import os from 'node:os';
import { Command } from 'commander';
import { Agent } from './agent.js';
import { loadConfig } from './config/load.js';
import { ConfigError, describeError } from './errors.js';
import { createLogger } from './log.js';
import { runLab } from './lab/lab.js';
import { replay } from './replay.js';
import { DEFAULTS } from './config/schema.js';
import { controlRequest, formatControlError, formatResult, formatSessionList } from './control/client.js';
import { ControlError } from './control/protocol.js';
import { armStopDeadline, writeStderrLine } from './stop-deadline.js';

const DEFAULT_CONFIG = '/etc/mirrorflow/mirrorflow.yaml';
/** SIGTERM must end in bounded time even if a sink or socket hangs (MIRRORFLOW_STOP_DEADLINE_MS overrides, for tests). */
const STOP_DEADLINE_MS = Number(process.env.MIRRORFLOW_STOP_DEADLINE_MS ?? 10_000);
/** Scheduling priority of the daemon (nice): below the workloads it observes. */
const AGENT_NICE = 10;

const program = new Command()
  .name('mirrorflow')
  .description('Host traffic mirroring (VXLAN) and VPC-style flow logs')
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

program
  .command('validate')
  .description('check a configuration file; exit 0 when valid, 1 with every error listed')
  .option('-c, --config <file>', 'configuration file (YAML or JSON)', DEFAULT_CONFIG)
  .action(async (opts: { config: string }) => {
    try {
      await loadConfig(opts.config);
      process.stdout.write(`${opts.config}: valid\n`);
    } catch (err) {
      if (err instanceof ConfigError) {
        for (const issue of err.issues) process.stderr.write(`${issue.path}: ${issue.message}\n`);
      } else {
        process.stderr.write(`${describeError(err)}\n`);
      }
      process.exitCode = 1;
    }
  });

program
  .command('replay')
  .description('run the pipeline over a capture file: mirrored copies as VXLAN frames into --out')
  .option('-c, --config <file>', 'configuration file (YAML or JSON)', DEFAULT_CONFIG)
  .requiredOption('--pcap <file>', 'capture file to read (pcap or pcapng, Ethernet)')
  .option('--interface <name>', 'the configured source interface the file was captured on')
  .option('--out <file>', 'write the VXLAN copies (whole outer frames) to this pcap file')
  .option('--local-mac <mac>', "the interface's MAC: frames from it are outbound (for files without directions)")
  .option('--outer-source <address>', 'outer source address of the written copies (default 192.0.2.1 / 2001:db8::1)')
  .option('--mtu <bytes>', 'path MTU to the targets', (v) => Number(v), 1500)
  .action(async (opts: { config: string; pcap: string; interface?: string; out?: string; localMac?: string; outerSource?: string; mtu: number }) => {
    try {
      const summary = await replay({
        config: opts.config, pcap: opts.pcap, interfaceName: opts.interface, out: opts.out,
        localMac: opts.localMac, outerSource: opts.outerSource, pathMtu: opts.mtu,
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
      if (err instanceof ConfigError) {
        for (const issue of err.issues) process.stderr.write(`${issue.path}: ${issue.message}\n`);
      } else {
        process.stderr.write(`replay: ${describeError(err)}\n`);
      }
      process.exitCode = 1;
    }
  });

program
  .command('lab')
  .description('build throwaway namespaces, run the agent on sample traffic, show what the destination got, clean up')
  .option('--keep-files', 'keep the captures and config (the directory is printed)')
  .action(async (opts: { keepFiles?: boolean }) => {
    const result = await runLab({ keepFiles: opts.keepFiles === true });
    process.exitCode = result.ok ? 0 : 1;
  });

/** Runs one control-socket request and prints its result; a refusal exits 1 with the reason. */
async function control(socket: string, op: string, args: unknown, format: (result: unknown) => string): Promise<void> {
  try {
    process.stdout.write(format(await controlRequest(socket, op, args)));
  } catch (err) {
    if (!(err instanceof ControlError)) throw err;
    process.stderr.write(formatControlError(err));
    process.exitCode = 1;
  }
}

const SOCKET_HELP = 'control socket of the running agent (agent.control.socket)';

program
  .command('status')
  .description('show the running agent: data plane, interfaces, sessions and their counters')
  .option('-s, --socket <path>', SOCKET_HELP, DEFAULTS.controlSocket)
  .action((opts: { socket: string }) => control(opts.socket, 'status', undefined, formatResult));

program
  .command('flowlogs')
  .description('show the flow logs of the running agent and their state (window, flows, records, sink)')
  .option('-s, --socket <path>', SOCKET_HELP, DEFAULTS.controlSocket)
  .action((opts: { socket: string }) => control(opts.socket, 'flowlogs.list', undefined, formatResult));

const session = program.command('session').description('list, start and stop mirror sessions of the running agent');
session
  .command('list')
  .option('-s, --socket <path>', SOCKET_HELP, DEFAULTS.controlSocket)
  .action((opts: { socket: string }) => control(opts.socket, 'sessions.list', undefined, formatSessionList));
for (const [name, op, help] of [
  ['start', 'session.start', 'enable a session (written back to the config file)'],
  ['stop', 'session.stop', 'disable a session (written back to the config file)'],
] as const) {
  session
    .command(`${name} <id>`)
    .description(help)
    .option('-s, --socket <path>', SOCKET_HELP, DEFAULTS.controlSocket)
    .action((id: string, opts: { socket: string }) => control(opts.socket, op, { id }, formatResult));
}
for (const [name, op] of [['add-source', 'session.addSource'], ['remove-source', 'session.removeSource']] as const) {
  session
    .command(`${name} <id> <interface>`)
    .description(`${name === 'add-source' ? 'add a source interface to' : 'remove a source interface from'} a session`)
    .option('-s, --socket <path>', SOCKET_HELP, DEFAULTS.controlSocket)
    .action((id: string, iface: string, opts: { socket: string }) => control(opts.socket, op, { id, interface: iface }, formatResult));
}

await program.parseAsync(process.argv);
