// The part every sink shares: a bounded queue of whole records, one asynchronous drain
// loop, retry with capped exponential backoff, and the counters. A subclass only says how
// to deliver the front of the queue.
import type { FlowRecord } from '../flow/record.js';
import type { Logger } from '../log.js';
import type { FlowSink, SinkOptions, SinkStats } from './sink.js';

const DEFAULT_QUEUE_LIMIT = 100_000;
const DEFAULT_RETRY_MIN_MS = 100;
const DEFAULT_RETRY_MAX_MS = 5000;
const DEFAULT_CLOSE_TIMEOUT_MS = 5000;
/** After the close timeout, how long a delivery in progress may still take before close gives up on it. */
const STUCK_DELIVERY_MS = 500;
/** Records offered to deliver() at once; a sink may take fewer. */
const BATCH_RECORDS = 512;
const DROP_LOG_INTERVAL_MS = 10_000;
/** Consumed slots at the front of the array before it is compacted. */
const COMPACT_AFTER = 4096;

/**
 * Thrown by deliver() to back off without counting another error: the failure was already
 * reported with failed(). With `waitMs` the loop waits that long instead (no backoff step,
 * no retry counted): the sink is waiting for something, not failing again.
 */
export class BackOff extends Error {
  constructor(
    message: string,
    readonly waitMs?: number,
  ) {
    super(message);
  }
}

interface FlushWaiter {
  target: number;
  resolve: () => void;
}

export abstract class QueuedSink implements FlowSink {
  protected readonly logger: Logger;
  protected readonly flowLogId: string;
  protected records = 0;
  protected bytes = 0;
  protected skipped = 0;
  /**
   * Whether a delivery that resolves proves the records arrived and the destination works.
   * UDP cannot: its errors arrive after the send, so the IPFIX sink settles records itself
   * with confirm(), puts them back with requeue(), and decides when to call recovered().
   */
  protected deliveryConfirms = true;
  private errors = 0;
  private retries = 0;
  private dropped = 0;

  private items: FlowRecord[] = [];
  private head = 0;
  /** Records requeue()d while a delivery was running, put in front once it returns. */
  private putBack: FlowRecord[] = [];
  private delivering = false;
  /** Records ever accepted by write(), and records since delivered, skipped or given up on. */
  private accepted = 0;
  private settled = 0;
  private readonly waiters: FlushWaiter[] = [];

  private readonly queueLimit: number;
  private readonly retryMinMs: number;
  private readonly retryMaxMs: number;
  private readonly closeTimeoutMs: number;
  private delayMs: number;
  /** The error code of the failure in progress; undefined while deliveries succeed. */
  private failing: string | undefined;
  private failingSince = 0;
  private lastDropLog = 0;
  private dropsSinceLog = 0;

  private loop: Promise<void> | undefined;
  private wake: (() => void) | undefined;
  private closing = false;
  private closed: Promise<void> | undefined;
  private abandoned = false;

  constructor(
    private readonly kind: string,
    opts: SinkOptions,
  ) {
    this.logger = opts.logger;
    this.flowLogId = opts.flowLogId;
    this.queueLimit = opts.queueLimit ?? DEFAULT_QUEUE_LIMIT;
    this.retryMinMs = opts.retryMinMs ?? DEFAULT_RETRY_MIN_MS;
    this.retryMaxMs = opts.retryMaxMs ?? DEFAULT_RETRY_MAX_MS;
    this.closeTimeoutMs = opts.closeTimeoutMs ?? DEFAULT_CLOSE_TIMEOUT_MS;
    this.delayMs = this.retryMinMs;
  }

  /**
   * Delivers records from the front of `batch` (never empty) and resolves with how many it
   * consumed (at least one), delivered or skipped. Throws to have the same records offered
   * again after a backoff; a throw must leave nothing of the failed attempt behind.
   */
  protected abstract deliver(batch: readonly FlowRecord[]): Promise<number>;

  /** Releases the file or socket; called once, after the queue is settled. */
  protected abstract release(): Promise<void>;

  get stats(): SinkStats {
    return {
      records: this.records,
      bytes: this.bytes,
      errors: this.errors,
      retries: this.retries,
      dropped: this.dropped,
      skipped: this.skipped,
      pending: this.accepted - this.settled,
    };
  }

  write(records: readonly FlowRecord[]): void {
    let lost = 0;
    for (const r of records) {
      if (this.closing || this.items.length - this.head >= this.queueLimit) lost++;
      else this.items.push(r);
    }
    this.accepted += records.length - lost;
    if (lost > 0) this.drop(lost);
    if (this.loop === undefined && this.items.length > this.head) this.loop = this.drain();
  }

  flush(): Promise<void> {
    if (this.settled >= this.accepted) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ target: this.accepted, resolve }));
  }

  close(): Promise<void> {
    this.closed ??= this.shutdown();
    return this.closed;
  }

  private async shutdown(): Promise<void> {
    this.closing = true;
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, this.closeTimeoutMs);
    });
    await Promise.race([this.flush(), deadline]);
    clearTimeout(timer);
    if (this.settled < this.accepted) {
      // Queued records are given up on now; delivered ones still unconfirmed are the sink's
      // to settle in release() (confirm, or lose once requeue() sees the sink abandoned).
      this.abandoned = true;
      this.wake?.();
      // A delivery that never returns (a stdout nobody reads) must not hold the stop: the
      // batch it carries is counted with the rest as not delivered.
      let stuck: NodeJS.Timeout | undefined;
      await Promise.race([this.loop, new Promise<void>((resolve) => (stuck = setTimeout(resolve, STUCK_DELIVERY_MS)))]);
      clearTimeout(stuck);
      const left = this.items.length - this.head;
      this.items = [];
      this.head = 0;
      this.settle(left);
      this.dropped += left;
      if (left > 0) {
        this.logger.error({ flowLog: this.flowLogId, sink: this.kind, dropped: left }, 'flow log sink closed with records it could not deliver');
      }
    }
    await this.release();
  }

  private async drain(): Promise<void> {
    // Let the writer finish its turn first: one window close writes many batches.
    await new Promise<void>((resolve) => setImmediate(resolve));
    while (this.items.length > this.head && !this.abandoned) {
      const end = Math.min(this.items.length, this.head + BATCH_RECORDS);
      let used: number;
      this.delivering = true;
      try {
        used = await this.deliver(this.items.slice(this.head, end));
        // Given up on while it was under way: close() already counted it.
        if (this.abandoned) break;
      } catch (err) {
        this.delivering = false;
        this.applyPutBack();
        if (err instanceof BackOff && err.waitMs !== undefined) {
          await this.pause(err.waitMs);
          continue;
        }
        if (!(err instanceof BackOff)) this.failed(err);
        await this.backoff();
        if (!this.abandoned) this.retries++;
        continue;
      }
      this.delivering = false;
      this.head += used;
      if (this.head >= COMPACT_AFTER && this.head * 2 >= this.items.length) {
        this.items = this.items.slice(this.head);
        this.head = 0;
      }
      if (this.deliveryConfirms) {
        this.recovered();
        this.settle(used);
      }
      this.applyPutBack();
    }
    this.loop = undefined;
  }

  /** Delivered records now known to have arrived (deliveryConfirms false). */
  protected confirm(n: number): void {
    this.settle(n);
  }

  /**
   * Delivered records that did not arrive go back to the front of the queue, in their order,
   * ahead of everything written since; once close() has given up they are lost instead.
   */
  protected requeue(records: readonly FlowRecord[]): void {
    if (records.length === 0) return;
    if (this.abandoned) {
      this.lose(records.length, 'the sink was closing');
      return;
    }
    // While deliver() runs the loop still owns the front of the queue: put back after it returns.
    this.putBack = this.putBack.concat(records);
    if (!this.delivering) this.applyPutBack();
    if (this.loop === undefined) this.loop = this.drain();
  }

  private applyPutBack(): void {
    if (this.putBack.length === 0) return;
    this.items = this.putBack.concat(this.items.slice(this.head));
    this.head = 0;
    this.putBack = [];
  }

  /** Records given up on (out of retries, or failed while closing): counted as dropped and logged. */
  protected lose(n: number, reason: string): void {
    this.settle(n);
    this.dropped += n;
    this.logger.error({ flowLog: this.flowLogId, sink: this.kind, dropped: n, reason }, 'flow log records lost');
  }

  private settle(n: number): void {
    this.settled += n;
    for (let i = this.waiters.length - 1; i >= 0; i--) {
      const w = this.waiters[i]!;
      if (this.settled >= w.target) {
        this.waiters.splice(i, 1);
        w.resolve();
      }
    }
  }

  private drop(n: number): void {
    this.dropped += n;
    this.dropsSinceLog += n;
    const now = Date.now();
    if (now - this.lastDropLog < DROP_LOG_INTERVAL_MS) return;
    this.logger.warn(
      { flowLog: this.flowLogId, sink: this.kind, dropped: this.dropsSinceLog, queueLimit: this.queueLimit, closing: this.closing },
      'flow log sink queue full; records dropped',
    );
    this.lastDropLog = now;
    this.dropsSinceLog = 0;
  }

  /** Counts the error; logs only when the kind of failure changes, not on every retry. */
  protected failed(err: unknown): void {
    this.errors++;
    const code = errorCode(err);
    if (code === this.failing) return;
    if (this.failing === undefined) this.failingSince = this.errors - 1;
    this.failing = code;
    this.logger.warn(
      { flowLog: this.flowLogId, sink: this.kind, code, err: err instanceof Error ? err.message : String(err), pending: this.items.length - this.head },
      'flow log sink failing; records kept and retried',
    );
  }

  /** Ends a run of failures: resets the backoff and logs the recovery once. */
  protected recovered(): void {
    this.delayMs = this.retryMinMs;
    if (this.failing === undefined) return;
    this.logger.info({ flowLog: this.flowLogId, sink: this.kind, errors: this.errors - this.failingSince }, 'flow log sink recovered');
    this.failing = undefined;
  }

  private backoff(): Promise<void> {
    const ms = this.delayMs;
    this.delayMs = Math.min(this.retryMaxMs, this.delayMs * 2);
    return this.pause(ms);
  }

  /** Waits `ms`, or less when close() gives up or records are put back (wake). */
  private pause(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.wake = undefined;
        resolve();
      }, ms);
      this.wake = () => {
        clearTimeout(timer);
        this.wake = undefined;
        resolve();
      };
    });
  }
}

function errorCode(err: unknown): string {
  if (typeof err === 'object' && err !== null && 'code' in err && typeof err.code === 'string') return err.code;
  return err instanceof Error ? err.name : 'unknown';
}
