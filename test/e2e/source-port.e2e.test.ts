// The outer source port on the wire (SPEC §3; root, veth lab, two real agents at once): the
// pcap and the eBPF plane mirror the same TCP connections and UDP flows, both ways, over
// IPv4 and IPv6, each with its own VNI, while tcpdump records the traffic on the mirrored
// interface; `mirrorflow replay` of that recording writes the copies it would send. tshark
// on the destination's capture and on the replay's output: every inner 5-tuple has exactly
// one outer source port, the same for both directions, in both planes and in the replay.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { stringify } from 'yaml';
import type { Spawned } from '../../agent/exec.js';
import { startCapture } from '../../agent/lab/lab.js';
import { COPY_SNAP_LENGTH } from '../../agent/lab/bulk.js';
import { drivePoolTraffic, markTraffic, placeFlows, poolCopies, POOL_TCP_PORT, POOL_UDP_PORT, startPoolServers, type PoolCopy } from '../../agent/lab/pool-lab.js';
import { createLabTopology, type Topology } from '../../agent/lab/topology.js';
import { AGENT_CLI, REPO_ROOT, ensureBuilt } from './helpers/build.js';

const VNI = { pcap: 4243, ebpf: 4244 } as const;
type Plane = keyof typeof VNI;
const PLANES = Object.keys(VNI) as Plane[];
/** Per address family and initiating end. */
const TCP_CONNECTIONS = 20;
const UDP_FLOWS = 20;
const TIMEOUT_MS = 180_000;

/** TCP (any port: the copies are UDP) and the pool lab's UDP flows, either direction, both families. */
function rules(): unknown[] {
  const out: unknown[] = [];
  for (const any of ['0.0.0.0/0', '::/0']) {
    const base = { action: 'accept', sourceCidrBlock: any, destinationCidrBlock: any };
    out.push(
      { ...base, protocol: 'TCP' },
      { ...base, protocol: 'UDP', destinationPortRange: `${POOL_UDP_PORT}/${POOL_UDP_PORT}` },
      { ...base, protocol: 'UDP', sourcePortRange: `${POOL_UDP_PORT}/${POOL_UDP_PORT}` },
    );
  }
  return out.map((r, i) => ({ priority: i + 1, ...(r as object) }));
}

describe('one symmetric outer source port per flow in both planes and replay (root, veth lab, two agents at once)', () => {
  let topo: Topology;
  const agents: Spawned[] = [];
  const configOf = {} as Record<Plane, string>;
  let wire: PoolCopy[] = [];
  let replayed: PoolCopy[] = [];

  beforeAll(async () => {
    await ensureBuilt();
    topo = await createLabTopology({ vnis: [VNI.pcap, VNI.ebpf], keepFiles: process.env.MIRRORFLOW_E2E_KEEP === '1' });
    const t = topo;
    await startPoolServers(t);
    for (const plane of PLANES) {
      configOf[plane] = join(t.workDir, `${plane}.yaml`);
      await mkdir(join(t.workDir, plane), { recursive: true });
      await writeFile(configOf[plane], stringify({
        agent: { vmId: `port-${plane}`, dataPlane: plane, metrics: { listen: '' }, control: { socket: join(t.workDir, plane, 'control.sock') } },
        filters: [{ id: 'tf', ingressRules: rules(), egressRules: rules() }],
        sessions: [{ id: `ts-${plane}`, priority: 1, vni: VNI[plane], filterId: 'tf', sources: [t.srcIf], target: { address: t.v4.dst } }],
      }), { mode: 0o600 });
      const agent = t.spawn('src', process.execPath, [AGENT_CLI, 'run', '--config', configOf[plane]], { cwd: REPO_ROOT });
      agents.push(agent);
      await agent.waitForLine(new RegExp(`"dataPlane":"${plane}".*"msg":"agent ready"`), TIMEOUT_MS, { stream: 'stdout' });
    }

    const copiesFile = join(t.workDir, 'copies.pcap');
    const trafficFile = join(t.workDir, 'traffic.pcap');
    const copies = await startCapture(t, 'dst', t.dstIf, copiesFile, ['udp', 'dst', 'port', '4789'], { snapLength: COPY_SNAP_LENGTH });
    const traffic = await startCapture(t, 'src', t.srcIf, trafficFile, ['tcp', 'port', String(POOL_TCP_PORT), 'or', 'udp', 'port', String(POOL_UDP_PORT)]);
    await drivePoolTraffic(t, 'src', TCP_CONNECTIONS, UDP_FLOWS);
    await drivePoolTraffic(t, 'dst', TCP_CONNECTIONS, UDP_FLOWS);
    // Every copy both agents made of the marker flow: all their copies before it are on the wire.
    await markTraffic(t, copies, { agents: PLANES.length });
    await copies.stop();
    await traffic.stop();
    for (const agent of agents) expect(await agent.stop('SIGTERM', 15_000)).toEqual({ code: 0, signal: null });
    wire = await poolCopies(copiesFile);

    const out = join(t.workDir, 'replayed.pcap');
    await t.exec('src', process.execPath, [AGENT_CLI, 'replay', '--config', configOf.pcap, '--pcap', trafficFile, '--interface', t.srcIf, '--out', out], { timeoutMs: 60_000 });
    replayed = await poolCopies(out);
  }, TIMEOUT_MS);

  afterAll(async () => {
    await topo?.destroy();
  }, 30_000);

  const flows = 2 * 2 * (TCP_CONNECTIONS + UDP_FLOWS);

  it.each(PLANES)('%s plane: each flow both ways on one outer port', (plane) => {
    const byFlow = placeFlows(wire.filter((c) => c.vni === VNI[plane]));
    expect(byFlow.size).toBe(flows);
    for (const [flow, f] of byFlow) {
      expect([...f.directions], `directions of ${flow}`).toHaveLength(2);
      expect([...f.outerPorts], `outer ports of ${flow}`).toHaveLength(1);
    }
    // The port carries the flow's entropy: not a handful of ports for all.
    expect(new Set([...byFlow.values()].map((f) => [...f.outerPorts][0])).size).toBeGreaterThan(flows * 0.9);
  });

  it('the two planes and the replay put the same port on the wire for every flow', () => {
    const portOf = (copies: readonly PoolCopy[]) => new Map([...placeFlows(copies)].map(([flow, f]) => [flow, [...f.outerPorts].join(',')]));
    const pcap = portOf(wire.filter((c) => c.vni === VNI.pcap));
    const ebpf = portOf(wire.filter((c) => c.vni === VNI.ebpf));
    const replay = portOf(replayed);
    expect(pcap.size).toBe(flows);
    expect(Object.fromEntries(ebpf)).toEqual(Object.fromEntries(pcap));
    expect(Object.fromEntries(replay)).toEqual(Object.fromEntries(pcap));
  });
});
