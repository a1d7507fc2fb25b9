// UDP traffic over many veth pairs at once, for tests that count frames per interface
// against the kernel's own counters: one `node` process inside a namespace sends datagrams
// to every target address (each reached over its own veth), paced, until it has sent
// `count` to each or gets SIGTERM. Nothing listens on the port: the peer answers ICMP port
// unreachable, which the kernel counts like any frame.
import { runInNetns, spawnProcess, type Spawned } from '../../../agent/exec.js';

export const UDP_PAIRS_PORT = 9;

// CommonJS for `node -e`: targets, count (0: until SIGTERM), payload bytes, datagrams per target per tick.
const SOURCE = `
const dgram = require('node:dgram');
const [targets, count, bytes, perTick] = [process.argv[1].split(','), Number(process.argv[2]), Number(process.argv[3]), Number(process.argv[4])];
const payload = Buffer.alloc(bytes);
const socket = dgram.createSocket('udp4');
let sent = 0;
let stop = false;
process.on('SIGTERM', () => { stop = true; });
socket.on('error', () => undefined);
const tick = () => {
  if (stop || (count > 0 && sent >= count)) return socket.close();
  for (let k = 0; k < perTick; k++) for (const t of targets) socket.send(payload, ${UDP_PAIRS_PORT}, t);
  sent += perTick;
  setTimeout(tick, 10);
};
socket.bind(0, tick);
`;

/** Sends `count` datagrams of `bytes` to each target from namespace `ns` (perTick per 10 ms); resolves when done. */
export async function sendUdp(ns: string, targets: readonly string[], count: number, bytes: number, perTick = 5): Promise<void> {
  await runInNetns(ns, process.execPath, ['-e', SOURCE, targets.join(','), String(count), String(bytes), String(perTick)], { timeoutMs: 60_000 });
}

/** Sends to each target until stop() (SIGTERM); for traffic while interfaces come and go. */
export function startUdp(ns: string, targets: readonly string[], bytes: number, perTick = 1): Spawned {
  return spawnProcess(process.execPath, ['-e', SOURCE, targets.join(','), '0', String(bytes), String(perTick)], { netns: ns });
}


