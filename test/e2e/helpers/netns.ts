// Opens sockets inside a lab namespace from the test process itself. A socket belongs to the
// network namespace its creating thread was in at socket(), whatever thread uses it later,
// so the main thread steps into the namespace (setns affects only the calling thread),
// runs `open` synchronously and steps back. Nothing else runs on the thread meanwhile.
import { closeSync, openSync } from 'node:fs';
import koffi from 'koffi';

const libc = koffi.load('libc.so.6');
const setns = libc.func('int setns(int fd, int nstype)');
const CLONE_NEWNET = 0x40000000;

/** Runs `open` with the calling thread in network namespace `ns` (`ip netns add` name). */
export function inNetns<T>(ns: string, open: () => T): T {
  const home = openSync('/proc/thread-self/ns/net', 'r');
  try {
    const target = openSync(`/run/netns/${ns}`, 'r');
    try {
      if (setns(target, CLONE_NEWNET) !== 0) throw new Error(`setns into ${ns}: errno ${koffi.errno()}`);
    } finally {
      closeSync(target);
    }
    try {
      return open();
    } finally {
      if (setns(home, CLONE_NEWNET) !== 0) throw new Error(`setns back from ${ns}: errno ${koffi.errno()}`);
    }
  } finally {
    closeSync(home);
  }
}
