// Sensor pools end to end (SPEC §3; root, veth lab, the real agent, both data planes): a
// pool of three sensors (addresses on the destination namespace's underlay interface), TCP
// connections and UDP flows both ways over IPv4 and IPv6 through the mirrored interface.
// tshark reads the underlay capture: every connection on exactly one sensor with one outer
// source port, the sensors' shares within ±25% of even. Then a sensor's address goes away:
// ICMP health checks take it out within interval + 1 s (the log line), the same UDP flows
// (fixed ports) sent again reach the other two, only the flows that were on it move, and
// nothing is sent to it; its address back, the same flows return to where they were.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { createLabTopology, type Topology } from '../../agent/lab/topology.js';
import { startCapture } from '../../agent/lab/lab.js';
import { COPY_SNAP_LENGTH } from '../../agent/lab/bulk.js';
import { drivePoolTraffic, markTraffic, placeFlows, poolCopies, poolSession, startPoolServers, type FlowPlacement } from '../../agent/lab/pool-lab.js';
import { run } from '../../agent/exec.js';
import { ensureBuilt } from './helpers/build.js';
import { startLabAgent, type LabAgent } from './helpers/agent.js';
import { sumMetric } from '../../agent/lab/report.js';

const PLANES = ['ebpf', 'pcap'] as const;
/** Per address family and direction: TCP connections and UDP flows. */
const TCP_PER_FAMILY = 60;
const UDP_PER_FAMILY = 60;
const INTERVAL_S = 1;
const TIMEOUT_MS = 180_000;
const SESSION = { session: 'ts-pool' };

/** Each flow's one sensor; fails the test when a flow reached two sensors or used two outer ports. */
function sensorOf(flows: Map<string, FlowPlacement>): Map<string, string> {
  const out = new Map<string, string>();
  for (const [flow, p] of flows) {
    expect([...p.sensors], `sensors of ${flow}`).toHaveLength(1);
    expect([...p.outerPorts], `outer ports of ${flow}`).toHaveLength(1);
    out.set(flow, [...p.sensors][0]!);
  }
  return out;
}

describe.each(PLANES)('sensor pool of three, %s plane (root, veth lab, real agent)', (plane) => {
  let topo: Topology;
  let agent: LabAgent;
  let phase = 0;

  /** Traffic both ways under one capture of dst's underlay; each flow's sensor. */
  const round = async (tcp: number): Promise<Map<string, string>> => {
    const file = join(topo.workDir, `pool-${plane}-${phase++}.pcap`);
    const copies = () => agent.metric('mirrorflow_mirror_packets_total');
    const before = await copies();
    const capture = await startCapture(topo, 'dst', topo.dstIf, file, ['udp', 'dst', 'port', '4789'], { snapLength: COPY_SNAP_LENGTH });
    await drivePoolTraffic(topo, 'src', tcp, UDP_PER_FAMILY);
    await drivePoolTraffic(topo, 'dst', tcp, UDP_PER_FAMILY);
    // Every copy counted is in the capture (SPEC §5 delivery of every counted copy is
    // offload.e2e's to check; here it is where each copy went).
    await markTraffic(topo, capture, { copiesCounted: async () => (await copies()) - before });
    await capture.stop();
    return sensorOf(placeFlows(await poolCopies(file)));
  };

  beforeAll(async () => {
    await ensureBuilt();
    topo = await createLabTopology({ vnis: [4242], sensors: 3 });
    await startPoolServers(topo);
    agent = await startLabAgent(topo, { agent: { vmId: `pool-${plane}`, dataPlane: plane }, ...poolSession(topo, INTERVAL_S) });
  }, TIMEOUT_MS);

  afterAll(async () => {
    await topo?.destroy();
  });

  it('every connection on one sensor with one outer port, spread within ±25%; a lost sensor moves only its flows, and they come back', async () => {
    const sensors = topo.sensors.v4;
    const first = await round(TCP_PER_FAMILY);
    const flows = 2 * 2 * (TCP_PER_FAMILY + UDP_PER_FAMILY);
    expect(first.size).toBe(flows);
    const spread = sensors.map((s) => [...first.values()].filter((x) => x === s).length);
    for (const n of spread) {
      expect(n, `flows per sensor ${spread.join(' ')}`).toBeGreaterThan((flows / 3) * 0.75);
      expect(n, `flows per sensor ${spread.join(' ')}`).toBeLessThan((flows / 3) * 1.25);
    }
    for (const s of sensors) expect(await agent.metric('mirrorflow_mirror_target_healthy', { target: `${s}:4789` })).toBe(1);

    // Sensor 1 goes away: out within interval + 1 s of losing its address.
    const gone = sensors[1]!;
    const failed = agent.logCount(/pool member failed its health check/);
    const lostAt = Date.now();
    await run('ip', ['-n', topo.ns.dst, 'addr', 'del', `${gone}/32`, 'dev', topo.dstIf]);
    const line = await agent.waitForLog(/pool member failed its health check/, failed + 1, 10_000);
    const failoverMs = Date.now() - lostAt;
    console.log(`${plane}: flows per sensor ${spread.join(' ')} of ${flows}; sensor out ${failoverMs} ms after losing its address`);
    expect(line).toContain(`"target":"${gone}:4789"`);
    expect(failoverMs).toBeLessThan((INTERVAL_S + 1) * 1000);
    expect(await agent.metric('mirrorflow_mirror_target_healthy', { target: `${gone}:4789` })).toBe(0);

    const udp = [...first].filter(([flow]) => flow.startsWith('udp'));
    const without = await round(TCP_PER_FAMILY / 4);
    // Nothing to the lost sensor, new TCP connections included.
    expect([...without.values()].filter((s) => s === gone)).toEqual([]);
    for (const [flow, before] of udp) {
      expect(without.get(flow), flow).toBeDefined();
      if (before !== gone) expect(without.get(flow), flow).toBe(before);
    }
    expect(udp.filter(([, s]) => s === gone).length).toBeGreaterThan(0);

    // Back: its flows return to it.
    const passed = agent.logCount(/pool member passed its health check again/);
    await run('ip', ['-n', topo.ns.dst, 'addr', 'add', `${gone}/32`, 'dev', topo.dstIf]);
    await agent.waitForLog(/pool member passed its health check again/, passed + 1, 10_000);
    const back = await round(0);
    for (const [flow, before] of udp) expect(back.get(flow), flow).toBe(before);

    // The per-target counters add up to the session's, in one scrape (health probes cross
    // the mirrored interface too, so the counters keep moving).
    const { stdout } = await topo.exec('src', 'curl', ['-sS', '--max-time', '5', `http://${agent.metricsListen}/metrics`]);
    const perTarget = sensors.map((s) => sumMetric(stdout, 'mirrorflow_mirror_target_packets_total', { ...SESSION, target: `${s}:4789` }));
    expect(perTarget.every((n) => n > 0)).toBe(true);
    expect(perTarget.reduce((a, b) => a + b, 0)).toBe(sumMetric(stdout, 'mirrorflow_mirror_packets_total', SESSION));
  }, TIMEOUT_MS);
});
