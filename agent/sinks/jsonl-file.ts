// JSON lines file sink with size-based rotation (docs/sinks.md). Records only ever reach
// the file as whole lines: each batch is one append-mode write(2) of complete lines, a
// short or failed write is cut back off before the batch is retried, and a line left cut
// by a crash mid-write is removed when the file is opened again.
import { mkdir, open, rename, stat, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { FlowRecord } from '../flow/record.js';
import type { SinkOptions } from './sink.js';
import { QueuedSink } from './queue.js';

export interface FileSinkSettings {
  path: string;
  maxBytes: number;
  keep: number;
}

/** SPEC §4 field order; JSON.stringify writes keys in this order whatever order the record was built in. */
export const RECORD_FIELDS: readonly string[] = [
  'version',
  'vswitch-id',
  'vm-id',
  'vpc-id',
  'account-id',
  'eni-id',
  'srcaddr',
  'srcport',
  'dstaddr',
  'dstport',
  'protocol',
  'direction',
  'packets',
  'bytes',
  'start',
  'end',
  'log-status',
  'action',
  'tcp-flags',
  'icmp-type',
  'icmp-code',
  'retrans',
  'zero-win',
  'rtt-us',
  'mirrored-packets',
  'mirror-session',
  'skipped-packets',
];

const DIR_MODE = 0o750;
const FILE_MODE = 0o640;
const NEWLINE = 0x0a;
/** Bytes read at a time when looking back for the last newline of a file cut by a crash. */
const TAIL_CHUNK = 64 * 1024;

/** One record as its JSON line, newline included. */
export function recordLine(record: FlowRecord): string {
  return `${JSON.stringify(record, RECORD_FIELDS as string[])}\n`;
}

export class JsonlFileSink extends QueuedSink {
  private fh: FileHandle | undefined;
  /** Bytes in the open file; the file is ours alone, so this tracks it without fstat per batch. */
  private size = 0;
  private dev = 0;
  private ino = 0;

  constructor(
    private readonly settings: FileSinkSettings,
    opts: SinkOptions,
  ) {
    super('file', opts);
  }

  protected async deliver(batch: readonly FlowRecord[]): Promise<number> {
    await this.ensureCurrent();
    let lines = takeLines(batch, this.settings.maxBytes - this.size);
    if (lines.count === 0 && this.size > 0) {
      await this.rotate();
      lines = takeLines(batch, this.settings.maxBytes);
    }
    // A single line longer than maxBytes goes alone into a fresh file rather than nowhere.
    if (lines.count === 0) lines = takeLines(batch.slice(0, 1), Number.POSITIVE_INFINITY);
    await this.append(Buffer.from(lines.text, 'utf8'));
    this.records += lines.count;
    return lines.count;
  }

  protected async release(): Promise<void> {
    const fh = this.fh;
    this.fh = undefined;
    if (fh === undefined) return;
    await fh.sync().catch(() => undefined);
    await fh.close();
  }

  /** Opens the file, or opens it again when it was removed or renamed under us (logrotate, rm). */
  private async ensureCurrent(): Promise<void> {
    if (this.fh !== undefined) {
      const st = await stat(this.settings.path).catch(() => undefined);
      if (st !== undefined && st.ino === this.ino && st.dev === this.dev) return;
      this.logger.info({ flowLog: this.flowLogId, path: this.settings.path }, 'flow log file was moved or removed; opening it again');
      await this.release();
    }
    await mkdir(dirname(this.settings.path), { recursive: true, mode: DIR_MODE });
    // a+: appends like 'a', and can read the tail back to find a cut line.
    const fh = await open(this.settings.path, 'a+', FILE_MODE);
    try {
      const st = await fh.stat();
      this.size = await this.cutPartialLine(fh, st.size);
      this.dev = st.dev;
      this.ino = st.ino;
    } catch (err) {
      await fh.close();
      throw err;
    }
    this.fh = fh;
  }

  /** Truncates a file that does not end in a newline back to its last whole line; returns the new size. */
  private async cutPartialLine(fh: FileHandle, size: number): Promise<number> {
    if (size === 0) return 0;
    const buf = Buffer.allocUnsafe(Math.min(TAIL_CHUNK, size));
    let end = size;
    while (end > 0) {
      const start = Math.max(0, end - buf.length);
      const { bytesRead } = await fh.read(buf, 0, end - start, start);
      const nl = buf.subarray(0, bytesRead).lastIndexOf(NEWLINE);
      if (nl >= 0) {
        end = start + nl + 1;
        break;
      }
      end = start;
    }
    if (end === size) return size;
    await fh.truncate(end);
    this.logger.warn({ flowLog: this.flowLogId, path: this.settings.path, removedBytes: size - end }, 'flow log file ended in a cut line (crash mid-write?); removed it');
    return end;
  }

  /** One write of whole lines; anything less is cut off again so the file never ends mid-line. */
  private async append(buf: Buffer): Promise<void> {
    const fh = this.fh!;
    const before = this.size;
    let written = 0;
    try {
      ({ bytesWritten: written } = await fh.write(buf, 0, buf.length));
    } catch (err) {
      await fh.truncate(before).catch(() => undefined);
      throw err;
    }
    if (written < buf.length) {
      await fh.truncate(before).catch(() => undefined);
      throw Object.assign(new Error(`short write: ${written} of ${buf.length} bytes (disk full?)`), { code: 'ESHORTWRITE' });
    }
    this.size = before + written;
    this.bytes += written;
  }

  /**
   * path → path.1 → … → path.keep (keep ≥ 1 by the schema). Only files up to the first
   * missing index move, so a large `keep` costs nothing until the files exist; when all
   * exist, path.keep (the oldest) is overwritten by the rename before it.
   */
  private async rotate(): Promise<void> {
    await this.release();
    const { path, keep } = this.settings;
    let top = 1;
    while (top < keep && (await exists(`${path}.${top}`))) top++;
    for (let i = top - 1; i >= 1; i--) await rename(`${path}.${i}`, `${path}.${i + 1}`);
    await rename(path, `${path}.1`).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw err;
    });
    await this.ensureCurrent();
  }
}

/** The longest prefix of whole lines that fits in `room` bytes. */
function takeLines(batch: readonly FlowRecord[], room: number): { text: string; count: number } {
  let text = '';
  let used = 0;
  let count = 0;
  for (const r of batch) {
    const line = recordLine(r);
    const len = Buffer.byteLength(line);
    if (used + len > room) break;
    text += line;
    used += len;
    count++;
  }
  return { text, count };
}

function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}
