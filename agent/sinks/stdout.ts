// JSON lines on the process's standard output. The next batch is written only after the
// previous one was handed to the OS, so a slow reader holds records in the bounded queue
// instead of in an unbounded stream buffer.
import type { Writable } from 'node:stream';
import type { FlowRecord } from '../flow/record.js';
import type { SinkOptions } from './sink.js';
import { QueuedSink } from './queue.js';
import { recordLine } from './jsonl-file.js';

export class StdoutSink extends QueuedSink {
  /** An unhandled 'error' event (EPIPE when the reader went away) would end the process. */
  private readonly onError = (): void => undefined;

  constructor(
    opts: SinkOptions,
    private readonly out: Writable = process.stdout,
  ) {
    super('stdout', opts);
    this.out.on('error', this.onError);
  }

  protected async deliver(batch: readonly FlowRecord[]): Promise<number> {
    let text = '';
    for (const r of batch) text += recordLine(r);
    await new Promise<void>((resolve, reject) => {
      this.out.write(text, (err) => (err ? reject(err) : resolve()));
    });
    this.records += batch.length;
    this.bytes += Buffer.byteLength(text);
    return batch.length;
  }

  protected release(): Promise<void> {
    this.out.off('error', this.onError);
    return Promise.resolve();
  }
}
