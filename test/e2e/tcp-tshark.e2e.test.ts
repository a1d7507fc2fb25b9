// TCP analysis against tshark (root): real connections in namespaces, with loss induced by
// an iptables `statistic` drop rule on the receiver, a receiver that stops reading (zero
// window) and a connection refused (RST). The sender-side capture file is analysed by the
// agent's TcpTracker and by tshark: retransmissions, zero windows and resets must agree
// exactly, handshake RTTs within 1%. An agent on the eBPF plane flow-logs the same interface
// meanwhile: its TCP counters, from the TC programs' analysis in the kernel
// (bpf/flowlog.bpf.h), must equal tshark's too.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { startCapture, tsharkFields, type Capture } from '../../agent/lab/lab.js';
import { createLabTopology, type Topology } from '../../agent/lab/topology.js';
import { forEachFrame } from '../../agent/capture/pcap-file.js';
import { decode } from '../../agent/packet/decode.js';
import { DECODE_OK, DIR_IN, DIR_OUT, PacketView } from '../../agent/packet/view.js';
import { STALL_PORT, runTcpScenarios } from './helpers/tcp-scenarios.js';
import { ensureBuilt } from './helpers/build.js';
import { startLabAgent, type LabAgent } from './helpers/agent.js';
import { EV_OUT_OF_ORDER, EV_RESET, EV_RETRANS, EV_RTT_CLIENT, EV_RTT_SERVER, EV_SYN_RETRANS, EV_ZERO_WINDOW, TcpTracker } from '../../agent/flow/tcp.js';

const LOSS = '0.03';
const TIMEOUT_MS = 30_000;

describe('TCP analysis agrees with tshark on real traffic (root, namespaces)', () => {
  let topo: Topology | undefined;
  let cap: Capture;
  let agent: LabAgent | undefined;
  const ours = { outOfOrder: 0, retrans: 0, synRetrans: 0, zeroWin: 0, resets: 0, rttServer: [] as number[], rttHandshake: [] as number[] };

  beforeAll(async () => {
    await ensureBuilt();
    const t = await createLabTopology({ disableOffloads: true, keepFiles: process.env.MIRRORFLOW_E2E_KEEP === '1' });
    topo = t;
    agent = await startLabAgent(t, {
      agent: { vmId: 'tcp-tshark', dataPlane: 'ebpf' },
      flowLogs: [{ id: 'fl', sources: [t.srcIf], window: 600, sink: { type: 'file', path: join(t.workDir, 'flows.jsonl') } }],
    });
    cap = await startCapture(t, 'src', t.srcIf, join(t.workDir, 'tcp.pcap'), ['tcp']);
    await runTcpScenarios(t, {
      loss: LOSS,
      iperfBytes: '4M',
      timeoutMs: TIMEOUT_MS,
      // The receiver's own zero-window ACK (iperf3's closing RST also says win 0).
      zeroWindowSeen: () => cap.proc.waitForLine(new RegExp(`\\.${STALL_PORT} > .*Flags \\[\\.\\], .*win 0,`), TIMEOUT_MS, { stream: 'stdout' }).then(() => undefined),
    });
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
    await agent?.proc.stop('SIGTERM', 15_000);
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

  it('the eBPF plane counts the same in the kernel: retransmissions (out of order when sent from here), SYN retransmissions, zero windows, resets; out of order within 4 or a quarter', async () => {
    const count = async (filter: string) => (await tsharkFields(cap.file, filter, ['frame.number'])).length;
    const sentHere = `(ip.src == ${topo!.v4.src} || ipv6.src == ${topo!.v6.src})`;
    // agent/flow/stage.ts: seen where it was sent, a segment below nextseq is a retransmission even when tshark calls it out of order.
    const expected = {
      mirrorflow_tcp_retransmissions_total: (await count('tcp.analysis.retransmission')) + (await count(`tcp.analysis.out_of_order && ${sentHere}`)),
      mirrorflow_tcp_syn_retransmissions_total: await count('tcp.analysis.retransmission && tcp.flags.syn == 1'),
      mirrorflow_tcp_zero_window_total: await count('tcp.analysis.zero_window'),
      mirrorflow_tcp_resets_total: await count('tcp.flags.reset == 1'),
    };
    expect(expected.mirrorflow_tcp_retransmissions_total).toBeGreaterThan(0);
    // The kernel's counts reach the metrics at the next drain (every second).
    const seen: Record<string, number> = {};
    for (const [name, value] of Object.entries(expected)) {
      seen[name] = await agent!.waitForMetric(name, {}, (v) => v === value, 5_000).catch(() => agent!.metric(name));
    }
    expect(seen).toEqual(expected);
    // Out of order is tshark's timing rule (within one RTT of the last advance), and the
    // kernel's clock at TC is not the capture's: a segment sent right at the edge may fall
    // either side. It never moves a count above (a segment sent from here is a
    // retransmission either way), so only the out-of-order count may differ: by a segment or
    // two on a quiet host, by more when softirqs run late under load (seen in full suite
    // runs: 17 against tshark's 14, 5 against 2). Allowed: 4, or a quarter of tshark's count.
    const ooo = await count('tcp.analysis.out_of_order');
    const slack = Math.max(4, Math.ceil(ooo / 4));
    const near = (v: number) => Math.abs(v - ooo) <= slack;
    // A drain hands its flows over in chunks: wait for it as for the counts above.
    const kernelOoo = await agent!.waitForMetric('mirrorflow_tcp_out_of_order_total', {}, near, 5_000).catch(() => agent!.metric('mirrorflow_tcp_out_of_order_total'));
    expect(Math.abs(kernelOoo - ooo), `kernel ${kernelOoo}, tshark ${ooo}`).toBeLessThanOrEqual(slack);
  });
});
