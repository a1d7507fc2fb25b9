// Flow log sinks: the JSON lines file (order of fields, rotation that keeps every line
// exactly once, a file removed or renamed under the sink, a cut line left by a crash, a
// full disk on a real tmpfs), the bounded queue, close() giving up, and stdout
// back-pressure.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Writable } from 'node:stream';
import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rename, rm, stat, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import type { FlowRecord } from '../../agent/flow/record.js';
import type { Logger } from '../../agent/log.js';
import { createSink, type FlowSink } from '../../agent/sinks/sink.js';
import { StdoutSink } from '../../agent/sinks/stdout.js';
import { recordLine } from '../../agent/sinks/jsonl-file.js';

const SPEC_FIELD_ORDER = [
  'version', 'vswitch-id', 'vm-id', 'vpc-id', 'account-id', 'eni-id', 'srcaddr', 'srcport', 'dstaddr', 'dstport',
  'protocol', 'direction', 'packets', 'bytes', 'start', 'end', 'log-status', 'action', 'tcp-flags', 'icmp-type',
  'icmp-code', 'retrans', 'zero-win', 'rtt-us', 'mirrored-packets', 'mirror-session',
];
const WAIT_MS = 10_000;

/** A distinct OK record; `n` ends up in srcport and packets so lines can be told apart. Keys deliberately out of SPEC order. */
function record(n: number): FlowRecord {
  return {
    'mirror-session': 'ts-1',
    'mirrored-packets': n,
    version: 1,
    'vswitch-id': 'vsw-lab',
    'vm-id': 'host-1',
    'vpc-id': 'vpc-lab',
    'account-id': '1234567890',
    'eni-id': 'eth0',
    srcaddr: '10.0.0.1',
    srcport: 1024 + (n % 60000),
    dstaddr: '10.0.0.2',
    dstport: 80,
    protocol: 6,
    direction: 'out',
    packets: n,
    bytes: 40 * n,
    start: 1700000400,
    end: 1700001000,
    'log-status': 'OK',
    action: 'ACCEPT',
    'tcp-flags': 27,
    'icmp-type': null,
    'icmp-code': null,
    retrans: 0,
    'zero-win': 0,
    'rtt-us': 212,
  };
}

function records(from: number, count: number): FlowRecord[] {
  return Array.from({ length: count }, (_, i) => record(from + i));
}

interface LogLine {
  level: number;
  msg: string;
  code?: string;
}

function captureLogger(): { logger: Logger; lines: LogLine[] } {
  const lines: LogLine[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString('utf8').split('\n')) if (l !== '') lines.push(JSON.parse(l) as LogLine);
      cb();
    },
  });
  return { logger: pino({ level: 'debug' }, stream), lines };
}

async function waitFor(what: string, cond: () => boolean, timeoutMs = WAIT_MS): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Every line of the files, oldest file first; throws on a line that is not a whole JSON object. */
async function readLines(files: readonly string[]): Promise<FlowRecord[]> {
  const out: FlowRecord[] = [];
  for (const f of files) {
    const text = await readFile(f, 'utf8');
    if (text !== '') expect(text.endsWith('\n'), `${f} ends with a newline`).toBe(true);
    for (const line of text.split('\n')) if (line !== '') out.push(JSON.parse(line) as FlowRecord);
  }
  return out;
}

/** path.keep … path.1, path: the rotated files oldest first, then the current one. */
async function rotationSet(path: string): Promise<string[]> {
  const dir = join(path, '..');
  const base = path.slice(dir.length + 1);
  const names = await readdir(dir);
  const rotated = names
    .filter((n) => n.startsWith(`${base}.`))
    .map((n) => Number(n.slice(base.length + 1)))
    .sort((a, b) => b - a);
  return [...rotated.map((i) => `${path}.${i}`), ...(names.includes(base) ? [path] : [])];
}

const packetsOf = (rs: readonly FlowRecord[]): (number | null)[] => rs.map((r) => r.packets);
const range = (from: number, count: number): number[] => Array.from({ length: count }, (_, i) => from + i);

let dir: string;
let sink: FlowSink | undefined;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mf-sinks-'));
});

afterEach(async () => {
  await sink?.close();
  sink = undefined;
  await rm(dir, { recursive: true, force: true });
});

describe('jsonl file sink', () => {
  it('writes one JSON object per line with the fields in SPEC §4 order, creating the directory 0750', async () => {
    const path = join(dir, 'new/sub/flow.jsonl');
    const { logger } = captureLogger();
    sink = createSink({ type: 'file', path, maxBytes: 1 << 20, keep: 2 }, { logger, flowLogId: 'fl-1' });
    const skip: FlowRecord = { ...record(7), 'log-status': 'SKIPDATA', 'skipped-packets': 9 };
    sink.write([record(1), record(2), skip]);
    await sink.flush();
    const text = await readFile(path, 'utf8');
    const lines = text.split('\n');
    expect(lines.pop()).toBe('');
    expect(lines).toHaveLength(3);
    expect(Object.keys(JSON.parse(lines[0]!) as object)).toEqual(SPEC_FIELD_ORDER);
    expect(Object.keys(JSON.parse(lines[2]!) as object)).toEqual([...SPEC_FIELD_ORDER, 'skipped-packets']);
    expect(JSON.parse(lines[1]!)).toEqual(record(2));
    expect((await stat(join(dir, 'new'))).mode & 0o777).toBe(0o750);
    expect(sink.stats).toMatchObject({ records: 3, bytes: Buffer.byteLength(text), errors: 0, dropped: 0, pending: 0 });
  });

  it('rotates by size: every line exactly once, in order, no file over maxBytes, while writes keep coming', async () => {
    const path = join(dir, 'flow.jsonl');
    const maxBytes = 4096;
    const { logger } = captureLogger();
    sink = createSink({ type: 'file', path, maxBytes, keep: 1000 }, { logger, flowLogId: 'fl-1' });
    const total = 1500;
    let written = 0;
    // Writes land while the drain loop is rotating: each write waits only for some progress.
    while (written < total) {
      sink.write(records(written, 100));
      written += 100;
      const target = written - 150;
      await waitFor('progress', () => sink!.stats.records >= target);
    }
    await sink.flush();
    const files = await rotationSet(path);
    const got = await readLines(files);
    expect(packetsOf(got)).toEqual(range(0, total));
    // Each file is at most maxBytes, and was rotated only because the next line did not fit.
    let next = 0;
    for (const f of files) {
      const size = (await stat(f)).size;
      next += (await readLines([f])).length;
      expect(size).toBeLessThanOrEqual(maxBytes);
      if (f !== path) expect(size + recordLine(got[next]!).length).toBeGreaterThan(maxBytes);
    }
    expect(sink.stats).toMatchObject({ records: total, errors: 0, dropped: 0, pending: 0 });
  });

  it('keeps only path.1 … path.keep: the newest lines, contiguous, oldest file dropped', async () => {
    const path = join(dir, 'flow.jsonl');
    const { logger } = captureLogger();
    sink = createSink({ type: 'file', path, maxBytes: 2048, keep: 2 }, { logger, flowLogId: 'fl-1' });
    sink.write(records(0, 200));
    await sink.flush();
    const files = await rotationSet(path);
    expect(files).toEqual([`${path}.2`, `${path}.1`, path]);
    const kept = packetsOf(await readLines(files));
    expect(kept.length).toBeLessThan(200);
    expect(kept).toEqual(range(200 - kept.length, kept.length));
  });

  it('opens the file again when it is removed or renamed under the sink', async () => {
    const path = join(dir, 'flow.jsonl');
    const { logger, lines } = captureLogger();
    sink = createSink({ type: 'file', path, maxBytes: 1 << 20, keep: 2 }, { logger, flowLogId: 'fl-1' });
    sink.write(records(0, 5));
    await sink.flush();
    await unlink(path);
    sink.write(records(5, 5));
    await sink.flush();
    expect(packetsOf(await readLines([path]))).toEqual(range(5, 5));
    await rename(path, `${path}.old`);
    sink.write(records(10, 5));
    await sink.flush();
    expect(packetsOf(await readLines([`${path}.old`]))).toEqual(range(5, 5));
    expect(packetsOf(await readLines([path]))).toEqual(range(10, 5));
    expect(lines.filter((l) => /opening it again/.test(l.msg))).toHaveLength(2);
  });

  it('cuts a line left half-written by a crash before appending', async () => {
    const path = join(dir, 'flow.jsonl');
    await writeFile(path, `${JSON.stringify(record(0))}\n{"version":1,"vswitch-`);
    const { logger } = captureLogger();
    sink = createSink({ type: 'file', path, maxBytes: 1 << 20, keep: 2 }, { logger, flowLogId: 'fl-1' });
    sink.write(records(1, 3));
    await sink.flush();
    expect(packetsOf(await readLines([path]))).toEqual(range(0, 4));
  });

  it('drops whole records beyond the queue limit and counts them', async () => {
    const path = join(dir, 'flow.jsonl');
    const { logger, lines } = captureLogger();
    sink = createSink({ type: 'file', path, maxBytes: 1 << 20, keep: 2 }, { logger, flowLogId: 'fl-1', queueLimit: 10 });
    sink.write(records(0, 25));
    sink.write(records(25, 5));
    expect(sink.stats).toMatchObject({ dropped: 20, pending: 10 });
    await sink.flush();
    expect(packetsOf(await readLines([path]))).toEqual(range(0, 10));
    expect(lines.filter((l) => /queue full/.test(l.msg))).toHaveLength(1);
  });

  it('keeps retrying an unwritable path without throwing, logs the failure once, and close() gives up in time', async () => {
    const blocker = join(dir, 'not-a-dir');
    await writeFile(blocker, '');
    const { logger, lines } = captureLogger();
    sink = createSink(
      { type: 'file', path: join(blocker, 'flow.jsonl'), maxBytes: 1 << 20, keep: 2 },
      { logger, flowLogId: 'fl-1', retryMinMs: 1, retryMaxMs: 5, closeTimeoutMs: 300 },
    );
    sink.write(records(0, 4));
    await waitFor('several retries', () => sink!.stats.retries >= 5);
    const closing = sink.close();
    sink.write(records(4, 1));
    await closing;
    expect(sink.stats).toMatchObject({ records: 0, dropped: 5, pending: 0 });
    expect(sink.stats.errors).toBeGreaterThanOrEqual(5);
    // mkdir of the parent fails with EEXIST: one log line for the whole run of retries.
    expect(lines.filter((l) => /failing/.test(l.msg))).toEqual([expect.objectContaining({ code: 'EEXIST' })]);
  });
});

// A real full disk: a 64 KiB tmpfs. Needs root (CI runs as root).
describe('jsonl file sink on a full disk', () => {
  let mnt: string;

  beforeEach(async () => {
    mnt = join(dir, 'mnt');
    await mkdir(mnt);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', mnt]);
  });

  afterEach(async () => {
    await sink?.close();
    sink = undefined;
    execFileSync('umount', [mnt]);
  });

  it('counts ENOSPC, holds the records, and writes each exactly once, unsplit, when space returns', async () => {
    const path = join(mnt, 'flow.jsonl');
    const filler = join(mnt, 'filler');
    // Leave room for a few lines only, then ask for far more.
    await writeFile(filler, Buffer.alloc(60 * 1024));
    const { logger, lines } = captureLogger();
    sink = createSink({ type: 'file', path, maxBytes: 1 << 20, keep: 2 }, { logger, flowLogId: 'fl-1', retryMinMs: 5, retryMaxMs: 50 });
    sink.write(records(0, 100));
    await waitFor('ENOSPC errors', () => sink!.stats.errors >= 3);
    expect(sink.stats.pending).toBeGreaterThan(0);
    expect(packetsOf(await readLines([path]))).toEqual(range(0, sink.stats.records));
    sink.write(records(100, 20));
    await unlink(filler);
    await sink.flush();
    expect(packetsOf(await readLines([path]))).toEqual(range(0, 120));
    expect(sink.stats).toMatchObject({ records: 120, dropped: 0, pending: 0 });
    const failing = lines.filter((l) => /failing/.test(l.msg));
    expect(failing.length).toBeGreaterThanOrEqual(1);
    expect(failing.length).toBeLessThanOrEqual(2);
    expect(failing.every((l) => l.code === 'ENOSPC' || l.code === 'ESHORTWRITE')).toBe(true);
    expect(lines.filter((l) => /recovered/.test(l.msg))).toHaveLength(1);
  });
});

describe('stdout sink', () => {
  it('writes JSON lines in order and waits for a slow reader instead of buffering', async () => {
    const chunks: string[] = [];
    let inFlight = 0;
    let maxInFlight = 0;
    const out = new Writable({
      highWaterMark: 1024,
      write(chunk: Buffer, _enc, cb) {
        inFlight++;
        maxInFlight = Math.max(maxInFlight, inFlight);
        chunks.push(chunk.toString('utf8'));
        setImmediate(() => {
          inFlight--;
          cb();
        });
      },
    });
    const { logger } = captureLogger();
    sink = new StdoutSink({ logger, flowLogId: 'fl-1' }, out);
    sink.write(records(0, 1500));
    await sink.flush();
    const text = chunks.join('');
    expect(text.split('\n').filter((l) => l !== '').map((l) => (JSON.parse(l) as FlowRecord).packets)).toEqual(range(0, 1500));
    expect(maxInFlight).toBe(1);
    expect(chunks.length).toBeGreaterThan(1);
    expect(sink.stats).toMatchObject({ records: 1500, bytes: Buffer.byteLength(text) });
  });
});
