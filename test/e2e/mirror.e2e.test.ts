// End to end (root): the compiled agent runs in the src namespace on its only interface,
// real TCP/UDP/ICMP crosses that veth, and the destination (reached through that same
// interface) must receive exactly the frames the rules select, as VXLAN that tshark
// decodes and a Linux vxlan device decapsulates byte for byte.
//
// The expected set is computed from a capture on src's interface with tshark display
// filters written here, independently of the agent's rule code. Byte for byte needs a
// wire-sized reference: the lab's veths run without TSO/GSO/GRO and transmit checksumming,
// so that capture holds the segments, with complete checksums, that a NIC would send. The
// same mirroring with offloads on (aggregates segmented by the agent) is offload.e2e's.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { stringify } from 'yaml';
import type { Spawned, ExitStatus } from '../../agent/exec.js';
import { driveTraffic, startCapture, startTrafficServer, tsharkFields, type Capture } from '../../agent/lab/lab.js';
import { COPY_SNAP_LENGTH } from '../../agent/lab/bulk.js';
import { createLabTopology, type Topology } from '../../agent/lab/topology.js';
import { AGENT_CLI, REPO_ROOT, ensureBuilt } from './helpers/build.js';
import { readPcap } from './helpers/pcap.js';

const VNI_FULL = 3100;
const VNI_TRUNC = 3200;
const TRUNC_LEN = 128;
const FULL_LEN = 8500;
/** veth MTU in the lab; SPEC §3 keeps at most MTU − 50 bytes of a frame under an IPv4 outer header. */
const PATH_MTU = 1500;
const VXLAN_V4_OVERHEAD = 50;
const VXLAN_PORT = 4789;
const EPHEMERAL_MIN = 49152;
const EPHEMERAL_MAX = 65535;

const TCP_PORT = 8080;
const UDP_ACCEPTED = 4000;
const UDP_DROPPED = 5001;
const UDP_TRUNC = 6000;
const UDP_COUNT = 3;
const UDP_TRUNC_SIZE = 400;
const PING_COUNT = 3;

const READY_TIMEOUT_MS = 20000;
const ARRIVAL_TIMEOUT_MS = 5000;
const KEEP_FILES = process.env.MIRRORFLOW_E2E_KEEP === '1';

function rule(priority: number, action: string, protocol: string, src: string, dst: string, sport = '-1/-1', dport = '-1/-1') {
  return { priority, action, protocol, sourceCidrBlock: src, destinationCidrBlock: dst, sourcePortRange: sport, destinationPortRange: dport };
}

function agentConfig(t: Topology, dataPlane: string): Record<string, unknown> {
  const lab6 = t.v6.labPrefix;
  const tcp = `${TCP_PORT}/${TCP_PORT}`;
  return {
    agent: { vmId: 'e2e', dataPlane, metrics: { listen: '' }, control: { socket: join(t.workDir, 'control.sock') }, log: { level: 'info' } },
    filters: [
      {
        id: 'tf-main',
        ingressRules: [
          rule(1, 'accept', 'TCP', '0.0.0.0/0', '0.0.0.0/0', tcp),
          rule(2, 'accept', 'TCP', '::/0', '::/0', tcp),
          rule(3, 'accept', 'ICMP', '0.0.0.0/0', '0.0.0.0/0'),
          rule(4, 'accept', 'ICMP', lab6, lab6),
        ],
        egressRules: [
          rule(1, 'drop', 'UDP', '0.0.0.0/0', '0.0.0.0/0', '-1/-1', `${UDP_DROPPED}/${UDP_DROPPED}`),
          rule(2, 'accept', 'TCP', '0.0.0.0/0', '0.0.0.0/0', '-1/-1', tcp),
          rule(3, 'accept', 'TCP', '::/0', '::/0', '-1/-1', tcp),
          rule(4, 'accept', 'ICMP', '0.0.0.0/0', '0.0.0.0/0'),
          rule(5, 'accept', 'ICMP', lab6, lab6),
          // Selects UDP_DROPPED (overruled by priority 1) and the agent's own VXLAN output.
          rule(6, 'accept', 'UDP', '0.0.0.0/0', `${t.v4.dst}/32`, '-1/-1', '4000/5999'),
        ],
      },
      { id: 'tf-trunc', ingressRules: [], egressRules: [rule(1, 'accept', 'UDP', '0.0.0.0/0', '0.0.0.0/0', '-1/-1', `${UDP_TRUNC}/${UDP_TRUNC}`)] },
    ],
    sessions: [
      { id: 'ts-full', priority: 1, vni: VNI_FULL, packetLength: FULL_LEN, filterId: 'tf-main', sources: [t.srcIf], target: { address: t.v4.dst, port: VXLAN_PORT } },
      { id: 'ts-trunc', priority: 2, vni: VNI_TRUNC, packetLength: TRUNC_LEN, filterId: 'tf-trunc', sources: [t.srcIf], target: { address: t.v4.dst, port: VXLAN_PORT } },
    ],
  };
}

/** Display filters (tshark) for what each session must mirror, from SPEC §2 applied to the config above. */
function selections(t: Topology): { full: string; trunc: string } {
  const out = `eth.src == ${t.srcMac}`;
  const lab6 = `ipv6.src == ${t.v6.labPrefix} && ipv6.dst == ${t.v6.labPrefix}`;
  // Never mirrored: ARP and the agent's own output (every VXLAN frame on src is the agent's).
  const never = '!arp && !vxlan';
  const egress = `${out} && !(ip && udp.dstport == ${UDP_DROPPED}) && (tcp.dstport == ${TCP_PORT} || icmp || (icmpv6 && ${lab6})
    || (ip.dst == ${t.v4.dst} && udp.dstport >= 4000 && udp.dstport <= 5999))`;
  const ingress = `!(${out}) && (tcp.srcport == ${TCP_PORT} || icmp || (icmpv6 && ${lab6}))`;
  return {
    full: `${never} && ((${egress}) || (${ingress}))`,
    trunc: `${never} && ${out} && ip && udp.dstport == ${UDP_TRUNC}`,
  };
}

/** Frames as hex strings, counted: compares multisets without caring about order. */
function countHex(frames: readonly Buffer[]): Map<string, number> {
  const m = new Map<string, number>();
  for (const f of frames) m.set(f.toString('hex'), (m.get(f.toString('hex')) ?? 0) + 1);
  return m;
}

function multisetDiff(want: readonly Buffer[], got: readonly Buffer[]): { missing: string[]; unexpected: string[] } {
  const w = countHex(want);
  const g = countHex(got);
  const describe = (hex: string, n: number) => `${n}x ${hex.length / 2} bytes ${hex.slice(0, 120)}…`;
  const missing = [...w].filter(([h, n]) => (g.get(h) ?? 0) < n).map(([h, n]) => describe(h, n - (g.get(h) ?? 0)));
  const unexpected = [...g].filter(([h, n]) => (w.get(h) ?? 0) < n).map(([h, n]) => describe(h, n - (w.get(h) ?? 0)));
  return { missing, unexpected };
}

async function frameNumbers(file: string, filter: string): Promise<number[]> {
  return (await tsharkFields(file, filter, ['frame.number'])).map(([n]) => Number(n));
}

// The same traffic, config and checks for both data planes (issue 4: "passes with
// dataPlane: ebpf unchanged").
describe.each(['pcap', 'ebpf'])('mirror path end to end, dataPlane %s (root, veth, real agent)', (dataPlane) => {
  let topo: Topology | undefined;
  let agent: Spawned | undefined;
  let agentExit: ExitStatus;
  let srcCap: Capture;
  let underlay: Capture;
  let decapFull: Capture;
  let decapTrunc: Capture;
  const expected = { full: [] as Buffer[], trunc: [] as Buffer[] };
  const received = { full: [] as Buffer[], trunc: [] as Buffer[] };

  beforeAll(async () => {
    await ensureBuilt();
    const t = await createLabTopology({ vnis: [VNI_FULL, VNI_TRUNC], disableOffloads: true, keepFiles: KEEP_FILES });
    topo = t;
    const [vxFull, vxTrunc] = t.vxlan;
    if (vxFull === undefined || vxTrunc === undefined) throw new Error('topology lacks vxlan devices');
    const configFile = join(t.workDir, 'e2e.yaml');
    await writeFile(configFile, stringify(agentConfig(t, dataPlane)));

    await startTrafficServer(t, 'dst', TCP_PORT, [UDP_ACCEPTED, UDP_DROPPED, UDP_TRUNC]);
    srcCap = await startCapture(t, 'src', t.srcIf, join(t.workDir, 'src.pcap'));
    underlay = await startCapture(t, 'dst', t.dstIf, join(t.workDir, 'underlay.pcap'), ['udp', 'port', String(VXLAN_PORT)], { snapLength: COPY_SNAP_LENGTH });
    decapFull = await startCapture(t, 'dst', vxFull.name, join(t.workDir, 'decap-full.pcap'));
    decapTrunc = await startCapture(t, 'dst', vxTrunc.name, join(t.workDir, 'decap-trunc.pcap'));

    agent = t.spawn('src', process.execPath, [AGENT_CLI, 'run', '--config', configFile], { cwd: REPO_ROOT });
    await agent.waitForLine(new RegExp(`"dataPlane":"${dataPlane}".*"msg":"agent ready"`), READY_TIMEOUT_MS, { stream: 'stdout' });
    // The lab resolved src's neighbours; forget them so the traffic below brings ARP through
    // the mirrored interface (which the agent must not mirror).
    await t.exec('src', 'ip', ['neigh', 'flush', 'dev', t.srcIf]);

    await driveTraffic(t, 'src', {
      tcp: [
        { host: t.v4.dst, port: TCP_PORT, bytes: 30000 },
        { host: t.v6.dst, port: TCP_PORT, bytes: 30000 },
      ],
      udp: [
        { host: t.v4.dst, port: UDP_ACCEPTED, count: UDP_COUNT, size: 200 },
        { host: t.v4.dst, port: UDP_DROPPED, count: UDP_COUNT, size: 200 },
        { host: t.v4.dst, port: UDP_TRUNC, count: UDP_COUNT, size: UDP_TRUNC_SIZE },
      ],
      icmp: [
        { host: t.v4.dst, count: PING_COUNT },
        { host: t.v6.dst, count: PING_COUNT },
      ],
    });
    // Stop the agent before the src capture so the capture covers everything the agent saw.
    agentExit = await agent.stop('SIGTERM', 15000);
    await srcCap.stop();

    const sel = selections(t);
    const srcFrames = await readPcap(srcCap.file);
    const pick = (numbers: number[], keep: number) =>
      numbers.map((n) => {
        const f = srcFrames[n - 1];
        if (f === undefined) throw new Error(`frame ${n} missing from ${srcCap.file}`);
        return f.data.subarray(0, Math.min(f.wireLen, keep, PATH_MTU - VXLAN_V4_OVERHEAD));
      });
    expected.full = pick(await frameNumbers(srcCap.file, sel.full), FULL_LEN);
    expected.trunc = pick(await frameNumbers(srcCap.file, sel.trunc), TRUNC_LEN);

    // Wait for the copies to arrive; a shortfall is reported by the assertions below.
    await Promise.all([
      underlay.waitFor(expected.full.length + expected.trunc.length, ARRIVAL_TIMEOUT_MS),
      decapFull.waitFor(expected.full.length, ARRIVAL_TIMEOUT_MS),
      decapTrunc.waitFor(expected.trunc.length, ARRIVAL_TIMEOUT_MS),
    ]).catch(() => undefined);
    for (const c of [underlay, decapFull, decapTrunc]) await c.stop();
    received.full = (await readPcap(decapFull.file)).map((f) => f.data);
    received.trunc = (await readPcap(decapTrunc.file)).map((f) => f.data);
  }, 120000);

  afterAll(async () => {
    if (KEEP_FILES && topo) process.stderr.write(`e2e files kept in ${topo.workDir}\n`);
    await topo?.destroy();
  }, 30000);

  it('drove the traffic the checks rely on through src, including the agent output on the same interface', async () => {
    const file = srcCap.file;
    expect(await frameNumbers(file, `udp.dstport == ${UDP_DROPPED} && !vxlan`)).toHaveLength(UDP_COUNT);
    expect((await frameNumbers(file, 'arp')).length).toBeGreaterThan(0);
    expect((await frameNumbers(file, `vxlan && ip.dst == ${topo!.v4.dst}`)).length).toBeGreaterThan(0);
    expect((await frameNumbers(file, `!vxlan && tcp.dstport == ${TCP_PORT} && ipv6`)).length).toBeGreaterThan(0);
    expect((await frameNumbers(file, '!vxlan && icmpv6.type == 129')).length).toBe(PING_COUNT);
    expect(expected.trunc).toHaveLength(UDP_COUNT);
  });

  it('the agent stopped cleanly on SIGTERM', () => {
    expect(agentExit, agent?.output()).toEqual({ code: 0, signal: null });
  });

  it('sends VXLAN that tshark decodes: port 4789, session VNIs, source port 49152..65535, stable per flow', async () => {
    const t = topo!;
    const rows = await tsharkFields(underlay.file, '', ['vxlan.vni', 'ip.src', 'ip.dst', 'udp.srcport', 'udp.dstport', 'ipv6.src', 'ipv6.dst', 'tcp.srcport', 'tcp.dstport']);
    expect(rows.length).toBe(expected.full.length + expected.trunc.length);
    const perVni = new Map<string, number>();
    const flowPorts = new Map<string, Set<string>>();
    for (const [vni = '', ipSrc = '', ipDst = '', sport = '', dport = '', v6src = '', v6dst = '', tsp = '', tdp = ''] of rows) {
      const [outerSport = '', innerSport] = sport.split(',');
      expect(ipSrc.split(',')[0]).toBe(t.v4.src);
      expect(ipDst.split(',')[0]).toBe(t.v4.dst);
      expect(dport.split(',')[0]).toBe(String(VXLAN_PORT));
      expect(Number(outerSport)).toBeGreaterThanOrEqual(EPHEMERAL_MIN);
      expect(Number(outerSport)).toBeLessThanOrEqual(EPHEMERAL_MAX);
      expect([String(VNI_FULL), String(VNI_TRUNC)]).toContain(vni);
      perVni.set(vni, (perVni.get(vni) ?? 0) + 1);
      if (tsp !== '' || innerSport !== undefined) {
        const key = [ipSrc, ipDst, v6src, v6dst, tsp, tdp, innerSport, dport].join('|');
        flowPorts.set(key, (flowPorts.get(key) ?? new Set()).add(outerSport));
      }
    }
    expect(perVni.get(String(VNI_FULL)) ?? 0).toBe(expected.full.length);
    expect(perVni.get(String(VNI_TRUNC)) ?? 0).toBe(expected.trunc.length);
    expect(flowPorts.size).toBeGreaterThan(0);
    for (const [flow, ports] of flowPorts) expect([...ports], flow).toHaveLength(1);
  });

  it('mirrors exactly the selected frames, which the vxlan device decapsulates byte for byte (up to path MTU − 50)', () => {
    expect(expected.full.length).toBeGreaterThan(0);
    expect(expected.full.some((f) => f.length === PATH_MTU - VXLAN_V4_OVERHEAD), 'some frame long enough to be cut at the path MTU').toBe(true);
    expect(multisetDiff(expected.full, received.full)).toEqual({ missing: [], unexpected: [] });
  });

  it('truncates to the session packetLength (128)', () => {
    expect(received.trunc.map((f) => f.length)).toEqual(expected.trunc.map(() => TRUNC_LEN));
    expect(multisetDiff(expected.trunc, received.trunc)).toEqual({ missing: [], unexpected: [] });
  });

  it('never mirrors what a rule drops, ARP, or its own VXLAN output (no VXLAN in VXLAN)', async () => {
    for (const file of [decapFull.file, decapTrunc.file]) {
      expect(await frameNumbers(file, `udp.dstport == ${UDP_DROPPED}`), file).toEqual([]);
      expect(await frameNumbers(file, 'arp'), file).toEqual([]);
      expect(await frameNumbers(file, `udp.port == ${VXLAN_PORT} || vxlan`), file).toEqual([]);
    }
  });
});
