// TCP analysis against tshark (root): real connections in namespaces, with loss induced by
// an iptables `statistic` drop rule on the receiver, a receiver that stops reading (zero
// window) and a connection refused (RST). The sender-side capture file is analysed by the
// agent's TcpTracker and by tshark: retransmissions, zero windows and resets must agree
// exactly, handshake RTTs within 1%.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { startCapture, tsharkFields, type Capture } from '../../agent/lab/lab.js';
import { createLabTopology, type Topology } from '../../agent/lab/topology.js';
import { forEachFrame } from '../../agent/capture/pcap-file.js';
import { decode } from '../../agent/packet/decode.js';
import { DECODE_OK, DIR_IN, DIR_OUT, PacketView } from '../../agent/packet/view.js';
import { EV_OUT_OF_ORDER, EV_RESET, EV_RETRANS, EV_RTT_CLIENT, EV_RTT_SERVER, EV_SYN_RETRANS, EV_ZERO_WINDOW, TcpTracker } from '../../agent/flow/tcp.js';

const IPERF_PORT = 5201;
const STALL_PORT = 7000;
const CLOSED_PORT = 7999;
const LOSS = '0.03';
const STALL_BYTES = 4 * 1024 * 1024;
const TIMEOUT_MS = 30_000;

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

describe('TCP analysis agrees with tshark on real traffic (root, namespaces)', () => {
  let topo: Topology | undefined;
  let cap: Capture;
  const ours = { outOfOrder: 0, retrans: 0, synRetrans: 0, zeroWin: 0, resets: 0, rttServer: [] as number[], rttHandshake: [] as number[] };

  beforeAll(async () => {
    const t = await createLabTopology({ disableOffloads: true, keepFiles: process.env.MIRRORFLOW_E2E_KEEP === '1' });
    topo = t;
    await t.exec('dst', 'iptables', ['-A', 'INPUT', '-p', 'tcp', '--dport', String(IPERF_PORT), '-m', 'statistic', '--mode', 'random', '--probability', LOSS, '-j', 'DROP']);
    cap = await startCapture(t, 'src', t.srcIf, join(t.workDir, 'tcp.pcap'), ['tcp']);

    // Loss: iperf3 over the lossy path.
    const iperfServer = t.spawn('dst', 'iperf3', ['-s', '-1', '--forceflush', '-p', String(IPERF_PORT)]);
    await iperfServer.waitForLine(/Server listening/, TIMEOUT_MS);
    await t.exec('src', 'iperf3', ['-c', t.v4.dst, '-p', String(IPERF_PORT), '-n', '4M'], { timeoutMs: 60_000 });

    // Zero window: the receiver stops reading until the capture shows a zero window.
    const server = t.spawn('dst', process.execPath, ['-e', STALL_SERVER]);
    await server.waitForLine(/listening/, TIMEOUT_MS);
    const client = t.spawn('src', process.execPath, ['-e', STALL_CLIENT(t.v4.dst)]);
    // The receiver's own zero-window ACK (iperf3's closing RST also says win 0).
    await cap.proc.waitForLine(new RegExp(`\\.${STALL_PORT} > .*Flags \\[\\.\\], .*win 0,`), TIMEOUT_MS, { stream: 'stdout' });
    process.kill(server.pid!, 'SIGUSR2');
    await client.waitForLine(/closed/, TIMEOUT_MS);

    // Reset: a connection to a closed port.
    await t.exec('src', process.execPath, ['-e', REFUSED_CLIENT(t.v4.dst)]);
    await cap.stop();

    const tracker = new TcpTracker(1024);
    const view = new PacketView();
    const mac = Buffer.from(t.srcMac.replaceAll(':', ''), 'hex');
    await forEachFrame(cap.file, (buf, caplen, wireLen, tsUs) => {
      view.tsUs = tsUs;
      view.direction = mac.equals(buf.subarray(6, 12)) ? DIR_OUT : DIR_IN;
      if (decode(view, buf, caplen, wireLen) !== DECODE_OK) return;
      const ev = tracker.observe(0, view);
      if (ev & EV_RETRANS) ours.retrans++;
      if (ev & EV_SYN_RETRANS) ours.synRetrans++;
      if (ev & EV_ZERO_WINDOW) ours.zeroWin++;
      if (ev & EV_RESET) ours.resets++;
      if (ev & EV_OUT_OF_ORDER) ours.outOfOrder++;
      if (ev & EV_RTT_SERVER) ours.rttServer.push(tracker.lastRttServerUs);
      if (ev & EV_RTT_CLIENT) ours.rttHandshake.push(tracker.lastHandshakeRttUs);
    });
  }, 120_000);

  afterAll(async () => {
    await topo?.destroy();
  }, 30_000);

  it('counts the same retransmissions as tcp.analysis.retransmission (loss was induced)', async () => {
    const theirs = await tsharkFields(cap.file, 'tcp.analysis.retransmission', ['frame.number']);
    expect(theirs.length).toBeGreaterThan(0);
    expect(ours.retrans).toBe(theirs.length);
    const syn = await tsharkFields(cap.file, 'tcp.analysis.retransmission && tcp.flags.syn == 1', ['frame.number']);
    expect(ours.synRetrans).toBe(syn.length);
    const ooo = await tsharkFields(cap.file, 'tcp.analysis.out_of_order', ['frame.number']);
    expect(ours.outOfOrder).toBe(ooo.length);
  });

  it('counts the same zero-window segments as tcp.analysis.zero_window', async () => {
    const theirs = await tsharkFields(cap.file, 'tcp.analysis.zero_window', ['frame.number']);
    expect(theirs.length).toBeGreaterThan(0);
    expect(ours.zeroWin).toBe(theirs.length);
  });

  it('counts the same resets', async () => {
    const theirs = await tsharkFields(cap.file, 'tcp.flags.reset == 1', ['frame.number']);
    expect(theirs.length).toBeGreaterThan(0);
    expect(ours.resets).toBe(theirs.length);
  });

  it('measures handshake RTTs within 1% of tshark (SYN → SYN-ACK, and initial_rtt)', async () => {
    // Per connection: its first SYN-ACK, against the latest SYN before it (tshark's ts_mru_syn).
    const synAcks = await tsharkFields(cap.file, 'tcp.flags.syn == 1 && tcp.flags.ack == 1', ['tcp.stream', 'frame.time_epoch']);
    const syns = await tsharkFields(cap.file, 'tcp.flags.syn == 1 && tcp.flags.ack == 0', ['tcp.stream', 'frame.time_epoch']);
    const firstSynAck = new Map<string, number>();
    for (const [stream = '', t = ''] of synAcks) if (!firstSynAck.has(stream)) firstSynAck.set(stream, Number(t));
    const server = [...firstSynAck].map(([stream, synAck]) => {
      const before = syns.filter(([s2, t]) => s2 === stream && Number(t) <= synAck).map(([, t]) => Number(t));
      return (synAck - Math.max(...before)) * 1e6;
    });
    expect(server.length).toBeGreaterThanOrEqual(3);
    expect(ours.rttServer).toHaveLength(server.length);
    ours.rttServer.forEach((us, i) => expect(Math.abs(us - server[i]!)).toBeLessThanOrEqual(Math.max(server[i]! * 0.01, 1)));

    const initial = await tsharkFields(cap.file, 'tcp.analysis.initial_rtt && tcp.flags.syn == 0 && tcp.flags.reset == 0 && tcp.flags.ack == 1 && tcp.len == 0', ['tcp.stream', 'tcp.analysis.initial_rtt']);
    const perStream = new Map<string, number>();
    for (const [stream = '', rtt = ''] of initial) if (!perStream.has(stream)) perStream.set(stream, Number(rtt) * 1e6);
    const theirs = [...perStream.values()];
    expect(ours.rttHandshake).toHaveLength(theirs.length);
    ours.rttHandshake.forEach((us, i) => expect(Math.abs(us - theirs[i]!)).toBeLessThanOrEqual(Math.max(theirs[i]! * 0.01, 1)));
  });
});
