import { pino, type DestinationStream, type Logger } from 'pino';
import { MirrorflowError } from './errors.js';

export type { Logger };

/**
 * syslog priorities (sd-daemon(3) "<N>" prefixes) for pino's levels: journald reads the
 * prefix of each line a service writes (SyslogLevelPrefix=yes, its default), strips it
 * and files the line under that PRIORITY, so `journalctl -p err` finds errors.
 */
const SYSLOG_PRIORITY: Record<number, number> = { 10: 7, 20: 7, 30: 6, 40: 4, 50: 3, 60: 2 };

export interface LoggerStreams {
  /** Lines below error level. Default: stdout. */
  stdout?: DestinationStream;
  /** Error and fatal lines. Default: stderr. */
  stderr?: DestinationStream;
  /** Prefix lines with their syslog priority; default: when systemd connected us to the journal (JOURNAL_STREAM). */
  journal?: boolean;
}

/** Adds the "<N>" priority prefix to each JSON line (pino lines start with {"level":N). */
function withPriority(stream: DestinationStream): DestinationStream {
  return {
    write(line: string) {
      const level = Number(/^\{"level":(\d+)/.exec(line)?.[1] ?? 30);
      stream.write(`<${SYSLOG_PRIORITY[level] ?? 6}>${line}`);
    },
  };
}

/**
 * A user's mistake (an invalid config, an unreadable file: every MirrorflowError) is logged
 * as what it says, without a JS stack trace; anything else keeps pino's full error record.
 */
function serializeError(err: unknown): unknown {
  if (err instanceof MirrorflowError) {
    const issues = (err as { issues?: unknown }).issues;
    return { type: err.name, code: err.code, message: err.message, ...(issues === undefined ? {} : { issues }) };
  }
  return pino.stdSerializers.err(err as Error);
}

/**
 * The agent's structured logger: JSON lines, errors (level >= 50) on stderr and the rest on
 * stdout, so the journal (with priorities, see SYSLOG_PRIORITY) and `kubectl logs` both
 * tell them apart.
 */
export function createLogger(level: string = 'info', streams: LoggerStreams = {}): Logger {
  const journal = streams.journal ?? process.env.JOURNAL_STREAM !== undefined;
  const wrap = (s: DestinationStream) => (journal ? withPriority(s) : s);
  // Asynchronous, as pino's own default for stdout (flushed at exit): a reader that stops
  // reading must not block the agent's main thread in a write.
  const out = wrap(streams.stdout ?? pino.destination({ dest: 1, sync: false }));
  const err = wrap(streams.stderr ?? pino.destination({ dest: 2, sync: false }));
  return pino(
    { name: 'mirrorflow', level, base: { pid: process.pid }, serializers: { err: serializeError } },
    // dedupe: each line goes to the one stream with the highest level it reaches.
    pino.multistream([{ level: 'trace', stream: out }, { level: 'error', stream: err }], { dedupe: true }),
  );
}
