// libc through koffi, for the sockets the agent owns (agent/mirror/udp-socket.ts,
// agent/capture/packet-ring.ts, agent/capture/ring-waker.ts): the calls and constants they
// share. Constants are Linux's (identical on x86-64 and aarch64), structs the LP64 layout.
import { getSystemErrorName } from 'node:util';
import koffi from 'koffi';

export const libc = koffi.load('libc.so.6');

export const socketCalls = {
  socket: libc.func('int socket(int domain, int type, int protocol)'),
  setsockopt: libc.func('int setsockopt(int fd, int level, int name, const void *value, uint32_t len)'),
  bind: libc.func('int bind(int fd, const void *addr, uint32_t len)'),
  close: libc.func('int close(int fd)'),
};
const strerror = libc.func('const char *strerror(int errnum)');

export const SOCK_NONBLOCK = 0o4000;
export const SOCK_CLOEXEC = 0o2000000;
export const SOL_SOCKET = 1;

/** "ECONNREFUSED (Connection refused)": the name operators grep for, and libc's text. */
export function errnoText(errno: number): string {
  return `${getSystemErrorName(-errno)} (${strerror(errno) as string})`;
}

/** A C int option value. */
export function int32(value: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeInt32LE(value, 0);
  return b;
}
