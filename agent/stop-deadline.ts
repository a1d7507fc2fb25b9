// SIGTERM must end the process in bounded time, whatever hangs: a sink whose reader is stuck,
// a thread blocked in a system call. Two guards:
// - at the deadline the main thread logs what is still unwritten to stderr and ends the
//   process with _exit(1): no exit handlers (a logger flushing into a stuck stdout would block
//   them) and no joining of worker threads blocked in I/O (libuv's shutdown would wait);
// - a watchdog thread, for a main thread that is itself blocked and never reaches its timer:
//   a grace period later it writes the last count it was given and kills the process.
import { writeSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import koffi from 'koffi';

const libc = koffi.load('libc.so.6');
const sysExit = libc.func('void _exit(int status)');

/** After the deadline, how long the watchdog waits for the main thread to exit by itself. */
const WATCHDOG_GRACE_MS = 2_000;

/** Ends the process at once with `code`, running nothing (see the file comment). */
export function exitNow(code: number): never {
  sysExit(code);
  throw new Error('_exit returned');
}

/** One JSON line on stderr, pino's shape; never throws (stderr may be gone as well). */
export function writeStderrLine(msg: string, fields: Record<string, unknown>): void {
  try {
    writeSync(2, `${JSON.stringify({ level: 50, time: Date.now(), pid: process.pid, name: 'mirrorflow', ...fields, msg })}\n`);
  } catch {
    // nothing left to tell it to
  }
}

const WATCHDOG = `
const { workerData } = require('node:worker_threads');
const { writeSync } = require('node:fs');
const pending = new Float64Array(workerData.shared);
setTimeout(() => {
  const line = { level: 60, time: Date.now(), pid: process.pid, name: 'mirrorflow', recordsUnwritten: pending[0],
    msg: 'stop deadline passed and the agent is blocked (a write that does not return); killing it' };
  try { writeSync(2, JSON.stringify(line) + '\\n'); } catch {}
  process.kill(process.pid, 'SIGKILL');
}, workerData.ms);
`;

export interface StopDeadline {
  /** Records still unwritten, as last counted: what the watchdog reports if it has to act. */
  setPending(records: number): void;
}

/**
 * Arms both guards for a stop that must be over in `ms`. `unwritten()` is asked at the
 * deadline for what a forced exit loses; it should be cheap and must not block.
 */
export function armStopDeadline(ms: number, unwritten: () => number): StopDeadline {
  const shared = new SharedArrayBuffer(Float64Array.BYTES_PER_ELEMENT);
  const pending = new Float64Array(shared);
  const watchdog = new Worker(WATCHDOG, { eval: true, workerData: { shared, ms: ms + WATCHDOG_GRACE_MS } });
  watchdog.unref();
  const timer = setTimeout(() => {
    let lost = pending[0]!;
    try {
      lost = unwritten();
    } catch {
      // keep the last count
    }
    writeStderrLine('stop deadline passed; exiting with what could not be written lost', { deadlineMs: ms, recordsLost: lost });
    exitNow(1);
  }, ms);
  timer.unref();
  return { setPending: (records) => (pending[0] = records) };
}
