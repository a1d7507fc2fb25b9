// Where flow log records go (SPEC §4, docs/sinks.md): the sink contract and the factory
// that turns a flow log's validated `sink` setting into one. Every sink queues whole
// records and delivers them asynchronously, so the flow table never waits on a disk or
// a collector.
import type { Sink } from '../config/types.js';
import type { FlowRecord } from '../flow/record.js';
import type { Logger } from '../log.js';
import { IpfixSink } from './ipfix.js';
import { JsonlFileSink } from './jsonl-file.js';
import { StdoutSink } from './stdout.js';

export interface SinkStats {
  /** Records written (file, stdout) or sent (IPFIX). */
  records: number;
  /** Bytes written or sent (IPFIX: whole messages, headers and templates included). */
  bytes: number;
  /** Failed attempts (write errors, socket errors); each is retried. */
  errors: number;
  /** Attempts made again after an error. */
  retries: number;
  /** Records lost: the queue was full, close() gave up on them, or (IPFIX) the collector refused them on every attempt. */
  dropped: number;
  /** Records a sink cannot represent and leaves out on purpose (IPFIX: addresses that do not parse). */
  skipped: number;
  /** Records accepted and not yet delivered (IPFIX: queued, or sent and not yet confirmed). */
  pending: number;
}

export interface FlowSink {
  /**
   * Queues whole records for delivery; never throws and never waits. The sink keeps the
   * record objects until they are delivered: do not change them afterwards.
   */
  write(records: readonly FlowRecord[]): void;
  /** Resolves once every record written before this call is delivered (or dropped). */
  flush(): Promise<void>;
  /** Delivers what is queued (retrying for at most `closeTimeoutMs`), then releases the file or socket. */
  close(): Promise<void>;
  readonly stats: SinkStats;
}

export interface SinkOptions {
  logger: Logger;
  /** The flow log's id, for log lines (and the IPFIX observation domain). */
  flowLogId: string;
  /** Records held before new ones are dropped. Default 100 000. */
  queueLimit?: number;
  /** Retry backoff after an error: starts at retryMinMs, doubles up to retryMaxMs. Defaults 100 ms, 5 s. */
  retryMinMs?: number;
  retryMaxMs?: number;
  /** How long close() keeps retrying before it counts what is left as dropped. Default 5 s. */
  closeTimeoutMs?: number;
  /** IPFIX: how long after a message an ICMP error still counts against it; then its records are delivered. Default 500 ms. */
  errorWaitMs?: number;
  /** IPFIX: largest message in bytes (IP and UDP headers not included). Default 1400. */
  maxMessageBytes?: number;
}

export function createSink(sink: Sink, opts: SinkOptions): FlowSink {
  switch (sink.type) {
    case 'file':
      return new JsonlFileSink(sink, opts);
    case 'stdout':
      return new StdoutSink(opts);
    case 'ipfix':
      return new IpfixSink(sink, opts);
  }
}
