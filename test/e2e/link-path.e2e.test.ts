// The pcap plane's link path (agent/mirror/link-path.ts; root, veth lab, real agent): while
// the kernel knows the MAC of the next hop to an IPv4 target, copies leave as whole Ethernet
// frames on a packet socket, past the IP layer. Checked with the kernel's own parts: the
// destination's vxlan device takes every copy (its IP layer drops a bad header checksum),
// tshark checks each header, and netfilter's OUTPUT hook in src sees none of them. Without
// the MAC the copies go through the IP layer, which resolves it, and the link path returns;
// a STALE entry gets traffic through the IP layer, so the kernel re-confirms it.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { startCapture, tsharkFields } from '../../agent/lab/lab.js';
import { COPY_SNAP_LENGTH } from '../../agent/lab/bulk.js';
import { createLabTopology, type Topology } from '../../agent/lab/topology.js';
import { ensureBuilt } from './helpers/build.js';
import { startLabAgent, type LabAgent } from './helpers/agent.js';
import { prepareFlood, type Flood } from './helpers/trafgen.js';

const VNI = 4290;
const UDP_PORT = 9;
const SESSION = 'ts-link';
const FRAMES = 2000;
const PPS = 20_000;
const TIMEOUT_MS = 120_000;
const ON_LINK = /"msg":"mirror copies sent on the egress device, past the IP layer"/;
const THROUGH_IP = /"msg":"mirror copies sent through the IP layer"/;

describe('pcap plane: copies past the IP layer while the kernel knows the next hop (root, veth lab)', () => {
  let topo: Topology;
  let agent: LabAgent;
  let flood: Flood;
  /** Packets of copies (UDP to 4789) netfilter's OUTPUT hook saw in src: the IP layer's sends pass it, a packet socket's do not. */
  const ipLayerCopies = async () => {
    const { stdout } = await topo.exec('src', 'iptables', ['-w', '-t', 'raw', '-L', 'OUTPUT', '-v', '-x', '-n']);
    return Number(/^\s*(\d+)\s+\d+\s.*udp dpt:4789/m.exec(stdout)?.[1]);
  };
  const decapsulated = async () => Number((await topo.exec('dst', 'cat', [`/sys/class/net/${topo.vxlan[0]!.name}/statistics/rx_packets`])).stdout.trim());
  const gatewayState = async () => {
    const [entry] = JSON.parse((await topo.exec('src', 'ip', ['-j', 'neigh', 'show', 'to', topo.v4.peerSrc, 'dev', topo.srcIf])).stdout) as Array<{ lladdr?: string; state?: string[] }>;
    return entry;
  };
  /** Offers FRAMES frames and waits until the agent counted a copy of each. */
  const mirrored = async () => {
    const before = await agent.metric('mirrorflow_mirror_packets_total', { session: SESSION });
    await flood.offer(FRAMES, PPS);
    return agent.waitForMetric('mirrorflow_mirror_packets_total', { session: SESSION }, (n) => n >= before + FRAMES, 10_000);
  };

  beforeAll(async () => {
    await ensureBuilt();
    topo = await createLabTopology({ vnis: [VNI], disableOffloads: true, keepFiles: process.env.MIRRORFLOW_E2E_KEEP === '1' });
    flood = await prepareFlood(topo, UDP_PORT);
    await topo.exec('src', 'iptables', ['-w', '-t', 'raw', '-A', 'OUTPUT', '-p', 'udp', '--dport', '4789']);
    agent = await startLabAgent(topo, {
      agent: { vmId: 'link-path', dataPlane: 'pcap', mirrorBudget: { pps: 0, bps: 0 } },
      filters: [{ id: 'tf', ingressRules: [], egressRules: [{ priority: 1, action: 'accept', protocol: 'UDP', sourceCidrBlock: '0.0.0.0/0', destinationCidrBlock: `${topo.v4.peerSrc}/32`, destinationPortRange: `${UDP_PORT}/${UDP_PORT}` }] }],
      sessions: [{ id: SESSION, priority: 1, vni: VNI, filterId: 'tf', sources: [topo.srcIf], target: { address: topo.v4.dst } }],
    });
  }, TIMEOUT_MS);

  afterAll(async () => {
    await topo?.destroy();
  }, 30_000);

  it('sends every copy on the egress device: netfilter sees none, the vxlan device decapsulates all, tshark finds every header right', async () => {
    await agent.waitForLog(ON_LINK, 1, 10_000);
    const file = join(topo.workDir, 'copies.pcap');
    const capture = await startCapture(topo, 'dst', topo.dstIf, file, ['udp', 'dst', 'port', '4789'], { snapLength: COPY_SNAP_LENGTH });
    const ipOut = await ipLayerCopies();
    const rx = await decapsulated();
    const sent = await agent.metric('mirrorflow_mirror_packets_total', { session: SESSION });
    expect(await mirrored()).toBe(sent + FRAMES);
    await capture.waitFor(FRAMES, 10_000);
    await capture.stop();
    expect((await ipLayerCopies()) - ipOut).toBe(0);
    expect((await decapsulated()) - rx).toBe(FRAMES);
    const rows = await tsharkFields(file, 'vxlan', ['ip.checksum.status', 'ip.src', 'ip.ttl', 'ip.flags.df', 'ip.id', 'udp.dstport', 'ip.len', 'frame.len']);
    expect(rows).toHaveLength(FRAMES);
    for (const [status, src, ttl, df, , port, ipLen, frameLen] of rows) {
      // The outer header only (the first of each field): tshark's checksum status 2 is "good".
      expect(status!.split(',')[0]).toBe('2');
      expect(src!.split(',')[0]).toBe(topo.v4.src);
      // TTL 64, less the lab's one router (peer).
      expect(ttl!.split(',')[0]).toBe('63');
      expect(df!.split(',')[0]).toMatch(/^(1|True)$/);
      expect(port).toBe(`4789,${UDP_PORT}`);
      expect(Number(ipLen!.split(',')[0])).toBe(Number(frameLen) - 14);
    }
    // Ids advance per copy: a reassembling middlebox never sees two copies as one datagram.
    expect(new Set(rows.map((r) => r[4]!.split(',')[0])).size).toBe(FRAMES);
  }, TIMEOUT_MS);

  it('without the next hop\'s MAC the copies go through the IP layer, which resolves it, and the link path comes back', async () => {
    const logged = agent.logCount(ON_LINK);
    await topo.exec('src', 'ip', ['neigh', 'flush', 'dev', topo.srcIf]);
    await agent.waitForLog(THROUGH_IP, undefined, 10_000);
    const rx = await decapsulated();
    const ipOut = await ipLayerCopies();
    await mirrored();
    await agent.waitForLog(ON_LINK, logged + 1, 10_000);
    expect((await ipLayerCopies()) - ipOut).toBeGreaterThan(0);
    const deadline = Date.now() + 10_000;
    while ((await decapsulated()) - rx < FRAMES && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    expect((await decapsulated()) - rx).toBe(FRAMES);
    expect(await agent.metric('mirrorflow_mirror_send_errors_total', { session: SESSION })).toBe(0);
  }, TIMEOUT_MS);

  it('a STALE next hop gets copies through the IP layer, so the kernel re-confirms it (it would stay STALE otherwise)', async () => {
    const entry = await gatewayState();
    await topo.exec('src', 'ip', ['neigh', 'change', topo.v4.peerSrc, 'lladdr', entry!.lladdr!, 'dev', topo.srcIf, 'nud', 'stale']);
    expect((await gatewayState())?.state).toEqual(['STALE']);
    // Two seconds of copies: the agent reads the STALE state at its next refresh (1 s) and
    // sends one copy that way; the kernel moves the entry to DELAY and on.
    const deadline = Date.now() + 20_000;
    while ((await gatewayState())?.state?.[0] === 'STALE' && Date.now() < deadline) await mirrored();
    expect((await gatewayState())?.state?.[0]).not.toBe('STALE');
  }, TIMEOUT_MS);
});
