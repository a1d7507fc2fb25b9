// Wakes the main thread when a capture ring has a block ready, and never otherwise.
// Node cannot watch a file descriptor it did not open (koffi gives no libuv handle), and
// polling the rings on a timer costs an idle agent 2-4 % of a core at 5 ms
// (docs/capture.md). So one worker thread blocks in epoll_wait(2) on every ring's socket
// and posts the ring's slot when the kernel retires a block (a TPACKET_V3 socket is
// readable while a retired block is not handed back). EPOLLONESHOT disarms a socket once
// it fired; the ring re-arms it with epoll_ctl from the main thread after reading up to
// the block the kernel still fills, so the worker wakes once per batch, not per frame.
// The worker touches no ring memory: close() on the main thread stays synchronous.
// At process exit Node waits for its workers to return to JavaScript, which a thread
// blocked in epoll_wait never does: an eventfd in the set, written on 'exit', lets it go.
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import koffi from 'koffi';
import { errnoText, libc } from '../libc.js';
import { ErrorCode, MirrorflowError } from '../errors.js';

const sys = {
  epollCreate: libc.func('int epoll_create1(int flags)'),
  epollCtl: libc.func('int epoll_ctl(int epfd, int op, int fd, void *event)'),
  eventfd: libc.func('int eventfd(unsigned int initval, int flags)'),
  write: libc.func('int64_t write(int fd, const void *buf, uint64_t count)'),
};

const EPOLL_CLOEXEC = 0o2000000;
const EPOLL_CTL_ADD = 1;
const EPOLL_CTL_DEL = 2;
const EPOLL_CTL_MOD = 3;
const EPOLLIN = 0x001;
const EPOLLERR = 0x008;
const EPOLLONESHOT = 1 << 30;
/** struct epoll_event is packed on x86-64 only (u32 events, u64 data at 4); elsewhere data sits at 8. */
const EPOLL_EVENT_LEN = process.arch === 'x64' ? 12 : 16;
const EPOLL_DATA = process.arch === 'x64' ? 4 : 8;
const EVENTS_PER_WAIT = 64;
const EFD_NONBLOCK = 0o4000;
const EFD_CLOEXEC = 0o2000000;
/** epoll data of the eventfd that tells the worker to return. */
const STOP = 0xffffffff;

/** What the waker calls: the ring reads what is ready, then re-arms itself. */
export interface Wakeable {
  wake(): void;
  /** The wake-up thread failed: from now on the ring must be polled. */
  wakerFailed(reason: string): void;
}

// Runs in the worker (CommonJS, evaluated): koffi's path and the epoll fd come in workerData.
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const koffi = require(workerData.koffi);
const wait = koffi.load('libc.so.6').func('int epoll_wait(int epfd, void *events, int max, int timeout)');
const events = Buffer.alloc(${EVENTS_PER_WAIT * EPOLL_EVENT_LEN});
for (let stop = false; !stop;) {
  const n = wait(workerData.epfd, events, ${EVENTS_PER_WAIT}, -1);
  for (let k = 0; k < n; k++) {
    const slot = events.readUInt32LE(k * ${EPOLL_EVENT_LEN} + ${EPOLL_DATA});
    if (slot === ${STOP}) stop = true;
    else parentPort.postMessage(slot);
  }
}
`;

class RingWaker {
  private epfd = -1;
  private worker: Worker | undefined;
  private failure: string | undefined;
  /** Rings by slot (the epoll data); freed slots are reused. */
  private readonly rings: (Wakeable | undefined)[] = [];
  private watched = 0;
  private readonly event = Buffer.alloc(EPOLL_EVENT_LEN);

  /** Starts waking `ring` when `fd` is readable; returns its slot, or -1 when the waker failed (poll instead). */
  watch(fd: number, ring: Wakeable): number {
    if (this.failure !== undefined) return -1;
    this.start();
    let slot = this.rings.indexOf(undefined);
    if (slot < 0) slot = this.rings.length;
    this.control(EPOLL_CTL_ADD, fd, slot);
    this.rings[slot] = ring;
    if (this.watched++ === 0) this.worker!.ref();
    return slot;
  }

  /** Lets `fd` wake its ring once more. */
  rearm(fd: number, slot: number): void {
    this.control(EPOLL_CTL_MOD, fd, slot);
  }

  /** Stops watching; call before closing the fd. */
  unwatch(fd: number, slot: number): void {
    if (this.rings[slot] === undefined) return;
    sys.epollCtl(this.epfd, EPOLL_CTL_DEL, fd, null);
    this.rings[slot] = undefined;
    // An idle waker does not keep the process alive; a watched ring does, like any socket.
    if (--this.watched === 0) this.worker?.unref();
  }

  private start(): void {
    if (this.worker !== undefined) return;
    this.epfd = sys.epollCreate(EPOLL_CLOEXEC) as number;
    if (this.epfd < 0) throw new MirrorflowError(ErrorCode.CAPTURE_OPEN, `capture wake-up: epoll_create1: ${errnoText(koffi.errno())}`);
    const stopFd = sys.eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC) as number;
    if (stopFd < 0) throw new MirrorflowError(ErrorCode.CAPTURE_OPEN, `capture wake-up: eventfd: ${errnoText(koffi.errno())}`);
    this.event.writeUInt32LE(EPOLLIN, 0);
    this.event.writeUInt32LE(STOP, EPOLL_DATA);
    this.event.writeUInt32LE(0, EPOLL_DATA + 4);
    if (sys.epollCtl(this.epfd, EPOLL_CTL_ADD, stopFd, this.event) !== 0) throw new MirrorflowError(ErrorCode.CAPTURE_OPEN, `capture wake-up: epoll_ctl ADD eventfd: ${errnoText(koffi.errno())}`);
    const one = Buffer.alloc(8);
    one.writeBigUInt64LE(1n, 0);
    process.once('exit', () => {
      this.failure = 'process exiting';
      sys.write(stopFd, one, 8);
    });
    const koffiPath = createRequire(import.meta.url).resolve('koffi');
    this.worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { koffi: koffiPath, epfd: this.epfd } });
    this.worker.unref();
    this.worker.on('message', (slot: number) => this.rings[slot]?.wake());
    const fail = (why: string) => {
      if (this.failure !== undefined) return;
      this.failure = why;
      for (const ring of this.rings) ring?.wakerFailed(why);
      this.rings.length = 0;
    };
    this.worker.on('error', (err) => fail(err.message));
    this.worker.on('exit', (code) => fail(`exited with code ${code}`));
  }

  private control(op: number, fd: number, slot: number): void {
    this.event.writeUInt32LE(EPOLLIN | EPOLLERR | EPOLLONESHOT, 0);
    this.event.writeUInt32LE(slot, EPOLL_DATA);
    this.event.writeUInt32LE(0, EPOLL_DATA + 4);
    if (sys.epollCtl(this.epfd, op, fd, this.event) !== 0) {
      throw new MirrorflowError(ErrorCode.CAPTURE_OPEN, `capture wake-up: epoll_ctl ${op === EPOLL_CTL_ADD ? 'ADD' : 'MOD'} fd ${fd}: ${errnoText(koffi.errno())}`);
    }
  }
}

/** One waker thread for every ring of the process. */
export const ringWaker = new RingWaker();
