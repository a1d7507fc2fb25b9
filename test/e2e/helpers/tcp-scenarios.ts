// Real TCP trouble between src and dst for the tests that compare TCP analyses: loss
// (iptables `statistic` drops on dst under a lossy iperf3 transfer), a zero window (a
// receiver that stops reading), and a reset (a connection to a closed port).
import type { Topology } from '../../../agent/lab/topology.js';

export const IPERF_PORT = 5201;
export const STALL_PORT = 7000;
export const CLOSED_PORT = 7999;
const STALL_BYTES = 4 * 1024 * 1024;

/** A server that accepts, reads nothing until SIGUSR2, then drains everything. */
const STALL_SERVER = `
const net = require('node:net');
const socks = [];
let reading = false;
net.createServer((s) => {
  if (!reading) s.pause();
  socks.push(s);
  s.on('data', () => {});
  s.on('end', () => s.end());
}).listen(${STALL_PORT}, () => console.log('listening'));
// A connection accepted after the signal (the kernel may queue it a while) reads at once.
process.on('SIGUSR2', () => { reading = true; for (const s of socks) s.resume(); console.log('reading'); });`;

/** Writes STALL_BYTES, then closes; prints when done. */
const STALL_CLIENT = (host: string) => `
const s = require('node:net').connect(${STALL_PORT}, '${host}', () => {
  s.end(Buffer.alloc(${STALL_BYTES}), () => console.log('sent'));
});
s.on('error', (e) => console.log('error', e.code));
s.on('close', () => console.log('closed'));`;

const REFUSED_CLIENT = (host: string) => `
require('node:net').connect(${CLOSED_PORT}, '${host}').on('error', (e) => console.log(e.code));`;

export interface TcpScenarioOptions {
  /** Drop probability of the iptables rule on dst, e.g. '0.03'. */
  loss: string;
  /** iperf3 -n amount, e.g. '4M'. */
  iperfBytes: string;
  /** Resolves once the stalled receiver's zero window was seen (the stall then ends). */
  zeroWindowSeen: () => Promise<void>;
  timeoutMs: number;
}

/** Runs the three scenarios one after the other, from src to dst. */
export async function runTcpScenarios(t: Topology, opts: TcpScenarioOptions): Promise<void> {
  await t.exec('dst', 'iptables', ['-A', 'INPUT', '-p', 'tcp', '--dport', String(IPERF_PORT), '-m', 'statistic', '--mode', 'random', '--probability', opts.loss, '-j', 'DROP']);
  const iperfServer = t.spawn('dst', 'iperf3', ['-s', '-1', '--forceflush', '-p', String(IPERF_PORT)]);
  await iperfServer.waitForLine(/Server listening/, opts.timeoutMs);
  await t.exec('src', 'iperf3', ['-c', t.v4.dst, '-p', String(IPERF_PORT), '-n', opts.iperfBytes], { timeoutMs: 60_000 });

  const server = t.spawn('dst', process.execPath, ['-e', STALL_SERVER]);
  await server.waitForLine(/listening/, opts.timeoutMs);
  const client = t.spawn('src', process.execPath, ['-e', STALL_CLIENT(t.v4.dst)]);
  await opts.zeroWindowSeen();
  process.kill(server.pid!, 'SIGUSR2');
  await client.waitForLine(/closed/, opts.timeoutMs);

  await t.exec('src', process.execPath, ['-e', REFUSED_CLIENT(t.v4.dst)]);
}
