// The eBPF data plane's footprint and reloads (root, veth lab, the compiled agent):
// it attaches to every source interface and creates its VXLAN device; a reload flips the
// rule maps with no window in which a packet is lost or mirrored twice; SIGTERM leaves
// every interface as it found it — including a clsact qdisc and filter someone else had
// put there; kill -9 leaves programs attached, and the next start removes them before it
// attaches its own.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFile, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { parse, stringify } from 'yaml';
import { run, type Spawned } from '../../agent/exec.js';
import { startCapture, type Capture } from '../../agent/lab/lab.js';
import { createLabTopology, type Topology } from '../../agent/lab/topology.js';
import { ensureBuilt } from './helpers/build.js';
import { AGENT_TIMEOUT_MS, interfaceFootprint, startLabAgent, type LabAgent } from './helpers/agent.js';
import { MARKER_LEN, gapsAndRepeats, sequencedSender, sequencesIn } from './helpers/sequenced.js';
import { recreateSourceInterface, restoreSourceRoute } from './helpers/source-interface.js';

const VNI_A = 5100;
const VNI_B = 5200;
const UDP_PORT = 4000;
const RELOADS = 6;
const OUR_DEVICE = 'mf-vxlan-4789';
const TIMEOUT_MS = AGENT_TIMEOUT_MS;

/** A TC program of "someone else" (it only passes packets), loaded with iproute2 on lo. */
const FOREIGN_PROGRAM = `
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
SEC("tc") int foreign_pass(struct __sk_buff *skb) { return TC_ACT_UNSPEC; }
char LICENSE[] SEC("license") = "GPL";
`;

describe('eBPF data plane: attach, atomic reloads, clean exit, crash recovery (root, veth, real agent)', () => {
  let topo: Topology;
  let agent: LabAgent;
  let sender: Spawned;
  let decapA: Capture;
  let decapB: Capture;
  const before = { src: '', lo: '' };
  const footprint = async () => ({ src: await interfaceFootprint(topo, 'src', topo.srcIf), lo: await interfaceFootprint(topo, 'src', 'lo') });
  const filters = async (dev: string, hook: string) => (await topo.exec('src', 'tc', ['filter', 'show', 'dev', dev, hook])).stdout;
  const vxlanDevices = async () => (JSON.parse((await topo.exec('src', 'ip', ['-j', 'link', 'show', 'type', 'vxlan'])).stdout || '[]') as { ifname: string }[]).map((l) => l.ifname);
  const sent = async (more: number) => {
    const now = sender.countLines(/^sent /, 'stdout');
    await sender.waitForLine(/^sent /, TIMEOUT_MS, { stream: 'stdout', count: now + more });
  };

  beforeAll(async () => {
    await ensureBuilt();
    topo = await createLabTopology({ vnis: [VNI_A, VNI_B], keepFiles: process.env.MIRRORFLOW_E2E_KEEP === '1' });
    // Someone else's clsact and filter on lo, which the agent also mirrors: both must survive it.
    const src = join(topo.workDir, 'foreign.bpf.c');
    const obj = join(topo.workDir, 'foreign.bpf.o');
    await writeFile(src, FOREIGN_PROGRAM);
    await run('clang', ['-O2', '-target', 'bpf', `-I/usr/include/${process.arch === 'arm64' ? 'aarch64' : 'x86_64'}-linux-gnu`, '-c', src, '-o', obj]);
    await topo.exec('src', 'tc', ['qdisc', 'add', 'dev', 'lo', 'clsact']);
    await topo.exec('src', 'tc', ['filter', 'add', 'dev', 'lo', 'ingress', 'prio', '9', 'handle', '7', 'bpf', 'da', 'obj', obj, 'sec', 'tc']);
    Object.assign(before, await footprint());

    for (const vni of [VNI_A, VNI_B]) {
      const dev = topo.vxlan.find((d) => d.vni === vni)!.name;
      const cap = await startCapture(topo, 'dst', dev, join(topo.workDir, `decap-${vni}.pcap`), ['udp', 'port', String(UDP_PORT)]);
      if (vni === VNI_A) decapA = cap;
      else decapB = cap;
    }
    agent = await startLabAgent(topo, {
      agent: { vmId: 'ebpf', dataPlane: 'ebpf' },
      filters: [{ id: 'tf-udp', ingressRules: [], egressRules: [{ priority: 1, action: 'accept', protocol: 'UDP', sourceCidrBlock: '0.0.0.0/0', destinationCidrBlock: `${topo.v4.dst}/32`, destinationPortRange: `${UDP_PORT}/${UDP_PORT}` }] }],
      sessions: [{ id: 'ts-e', priority: 1, vni: VNI_A, filterId: 'tf-udp', sources: [topo.srcIf, 'lo'], target: { address: topo.v4.dst } }],
    });
    sender = topo.spawn('src', process.execPath, ['-e', sequencedSender(topo.v4.dst, UDP_PORT)]);
    await decapA.waitFor(50, TIMEOUT_MS);
  }, 60_000);

  afterAll(async () => {
    await topo?.destroy();
  }, 30_000);

  it('attaches mf_ingress/mf_egress to each source, keeps the foreign filter, and creates one external vxlan device', async () => {
    for (const dev of [topo.srcIf, 'lo']) {
      expect(await filters(dev, 'ingress')).toMatch(/mf_ingress.*direct-action/);
      expect(await filters(dev, 'egress')).toMatch(/mf_egress.*direct-action/);
    }
    expect(await filters('lo', 'ingress')).toMatch(/foreign_pass/);
    expect(await vxlanDevices()).toEqual([OUR_DEVICE]);
    const [link] = JSON.parse((await topo.exec('src', 'ip', ['-d', '-j', 'link', 'show', 'dev', OUR_DEVICE])).stdout) as { linkinfo: { info_data: Record<string, unknown> } }[];
    expect(link!.linkinfo.info_data).toMatchObject({ external: true, port: 4789 });
    expect((await agent.cli(['status'])).out).toMatch(/dataPlane: ebpf/);
  });

  it('counts in the kernel: capture counters equal lo\'s own tx/rx counters; mirrored copies and skipped reasons add up', async () => {
    // lo in src carries only what this test sends (status travels over the unix socket).
    const lo = async () => {
      const read = async (f: string) => Number((await topo.exec('src', 'cat', [`/sys/class/net/lo/statistics/${f}`])).stdout);
      return { tx: await read('tx_packets'), rx: await read('rx_packets') };
    };
    const counted = async () => {
      const status = parse((await agent.cli(['status'])).out) as { interfaces: { name: string; capturedIn: number; capturedOut: number }[] };
      const l = status.interfaces.find((i) => i.name === 'lo')!;
      return { tx: l.capturedOut, rx: l.capturedIn };
    };
    const [c0, k0] = [await counted(), await lo()];
    const mirrored0 = await agent.metric('mirrorflow_mirror_packets_total', { session: 'ts-e' });
    // 300 datagrams to a closed port: each also brings an ICMP port unreachable back over lo.
    await topo.exec('src', process.execPath, ['-e', `const s = require('node:dgram').createSocket('udp4'); let n = 300; const next = () => n-- ? s.send(Buffer.alloc(32), 9, '127.0.0.1', next) : s.close(); next();`]);
    const [k1, c1] = [await lo(), await counted()];
    expect(k1.tx - k0.tx).toBeGreaterThanOrEqual(300);
    expect({ tx: c1.tx - c0.tx, rx: c1.rx - c0.rx }).toEqual({ tx: k1.tx - k0.tx, rx: k1.rx - k0.rx });
    // The sequenced stream on the veth kept being mirrored, and its copies, which leave through
    // that same interface, were recognised as the agent's own output.
    expect(await agent.metric('mirrorflow_mirror_packets_total', { session: 'ts-e' })).toBeGreaterThan(mirrored0);
    expect(await agent.metric('mirrorflow_mirror_skipped_packets_total', { interface: topo.srcIf, reason: 'own' })).toBeGreaterThan(100);
  });

  it(`flips the rules atomically: ${RELOADS} reloads between two VNIs under traffic lose and duplicate nothing`, async () => {
    const fromA = decapA.count();
    const fromB = decapB.count();
    const doc = parse(await readFile(agent.configFile, 'utf8')) as { sessions: { vni: number }[] };
    for (let i = 1; i <= RELOADS; i++) {
      doc.sessions[0]!.vni = i % 2 === 1 ? VNI_B : VNI_A;
      await writeFile(agent.configFile, stringify(doc), { mode: 0o600 });
      const waiting = agent.waitForLog(/"msg":"config reloaded"/);
      process.kill(agent.proc.pid!, 'SIGHUP');
      await waiting;
      await sent(2);
    }
    await sender.stop('SIGUSR2');
    const last = Number(/last (\d+)/.exec(sender.output())?.[1]);
    // The session ends on VNI_A: the marker arrives there after everything before it.
    await decapA.proc.waitForLine(new RegExp(`length ${MARKER_LEN}\\b`), TIMEOUT_MS, { stream: 'stdout' });
    await decapA.stop();
    await decapB.stop();
    const a = (await sequencesIn(decapA.file)).slice(fromA);
    const b = (await sequencesIn(decapB.file)).slice(fromB);
    expect(b.length).toBeGreaterThan(100);
    const first = Math.min(a[0]!, b[0]!);
    expect(last - first).toBeGreaterThan(1000);
    expect(gapsAndRepeats([...a, ...b], first, last)).toEqual({ missing: [], dup: [] });
  }, 90_000);

  it('copies the vxlan driver cannot send (outer packets dropped by a firewall) show in a metric and a log line; they resume', async () => {
    const device = { device: OUR_DEVICE };
    const errorsBefore = await agent.metric('mirrorflow_vxlan_device_errors_total', device);
    const decap = await startCapture(topo, 'dst', topo.vxlan[0]!.name, join(topo.workDir, 'decap-errors.pcap'), ['udp', 'port', String(UDP_PORT)]);
    const block = ['OUTPUT', '-p', 'udp', '--dport', '4789', '-j', 'DROP'];
    await topo.exec('src', 'iptables', ['-A', ...block]);
    const logged = agent.waitForLog(/VXLAN device could not send mirrored copies/);
    sender = topo.spawn('src', process.execPath, ['-e', sequencedSender(topo.v4.dst, UDP_PORT)]);
    await agent.waitForMetric('mirrorflow_vxlan_device_errors_total', device, (v) => v >= errorsBefore + 100);
    expect(await logged).toContain(OUR_DEVICE);
    await topo.exec('src', 'iptables', ['-D', ...block]);
    await decap.waitFor(100, TIMEOUT_MS);
    await sender.stop('SIGKILL');
    await decap.stop();
  });

  it('source interface down/up, then deleted and re-created: logged, programs attached to the new interface, mirroring resumes', async () => {
    const changed = /"msg":"source interface changed/;
    const decap = await startCapture(topo, 'dst', topo.vxlan[0]!.name, join(topo.workDir, 'decap-iface.pcap'), ['udp', 'port', String(UDP_PORT)]);
    sender = topo.spawn('src', process.execPath, ['-e', `${sequencedSender(topo.v4.dst, UDP_PORT)}\ns.on('error', () => {});`]);
    await decap.waitFor(50, TIMEOUT_MS);

    const changes0 = await agent.metric('mirrorflow_interface_changes_total', { interface: topo.srcIf });
    let logged = agent.waitForLog(changed);
    await topo.exec('src', 'ip', ['link', 'set', topo.srcIf, 'down']);
    await topo.exec('src', 'ip', ['link', 'set', topo.srcIf, 'up']);
    await restoreSourceRoute(topo);
    expect(await logged).toContain(topo.srcIf);
    await decap.waitFor(decap.count() + 100, TIMEOUT_MS);

    const oldIfindex = Number((await topo.exec('src', 'cat', [`/sys/class/net/${topo.srcIf}/ifindex`])).stdout);
    logged = agent.waitForLog(changed);
    await topo.exec('src', 'ip', ['link', 'del', topo.srcIf]);
    expect(await logged).toContain(topo.srcIf);
    logged = agent.waitForLog(changed);
    await recreateSourceInterface(topo);
    expect(await logged).toContain(topo.srcIf);
    expect(Number((await topo.exec('src', 'cat', [`/sys/class/net/${topo.srcIf}/ifindex`])).stdout)).not.toBe(oldIfindex);
    await decap.waitFor(decap.count() + 100, TIMEOUT_MS);
    expect(await filters(topo.srcIf, 'egress')).toMatch(/mf_egress/);
    // Down/up, deletion and re-creation: at least one rebuild each, counted.
    expect(await agent.metric('mirrorflow_interface_changes_total', { interface: topo.srcIf })).toBeGreaterThanOrEqual(changes0 + 3);
    expect(JSON.parse(await readFile(join(dirname(agent.socket), 'ebpf-attached.json'), 'utf8')).attachments)
      .toContainEqual(expect.objectContaining({ name: topo.srcIf, ifindex: Number((await topo.exec('src', 'cat', [`/sys/class/net/${topo.srcIf}/ifindex`])).stdout) }));
    await sender.stop('SIGKILL');
    await decap.stop();
  }, 60_000);

  it('a reload to dataPlane pcap detaches everything and mirrors from user space, one back attaches again; counters never go back', async () => {
    const decap = await startCapture(topo, 'dst', topo.vxlan[0]!.name, join(topo.workDir, 'decap-planes.pcap'), ['udp', 'port', String(UDP_PORT)]);
    sender = topo.spawn('src', process.execPath, ['-e', sequencedSender(topo.v4.dst, UDP_PORT)]);
    await decap.waitFor(50, TIMEOUT_MS);
    const doc = parse(await readFile(agent.configFile, 'utf8')) as { agent: { dataPlane: string } };
    const reloadTo = async (plane: string, msg: RegExp) => {
      doc.agent.dataPlane = plane;
      await writeFile(agent.configFile, stringify(doc), { mode: 0o600 });
      const logged = agent.waitForLog(msg);
      process.kill(agent.proc.pid!, 'SIGHUP');
      await logged;
      expect((await agent.cli(['status'])).out).toMatch(new RegExp(`dataPlane: ${plane}`));
    };
    const mirrored = () => agent.metric('mirrorflow_mirror_packets_total', { session: 'ts-e' });
    const inKernel = await mirrored();

    await reloadTo('pcap', /"msg":"eBPF data plane detached"/);
    // Only the foreign filter is left, and no device of ours.
    expect(await footprint()).toEqual(before);
    expect(await vxlanDevices()).toEqual([]);
    const afterSwitch = await mirrored();
    expect(afterSwitch).toBeGreaterThanOrEqual(inKernel);
    await decap.waitFor(decap.count() + 100, TIMEOUT_MS);
    await agent.waitForMetric('mirrorflow_mirror_packets_total', { session: 'ts-e' }, (v) => v >= afterSwitch + 100);

    const inUserSpace = await mirrored();
    await reloadTo('ebpf', /"msg":"config reloaded"/);
    expect(await filters(topo.srcIf, 'egress')).toMatch(/mf_egress/);
    expect(await vxlanDevices()).toEqual([OUR_DEVICE]);
    expect(await mirrored()).toBeGreaterThanOrEqual(inUserSpace);
    await decap.waitFor(decap.count() + 100, TIMEOUT_MS);
    await agent.waitForMetric('mirrorflow_mirror_packets_total', { session: 'ts-e' }, (v) => v >= inUserSpace + 100);
    await sender.stop('SIGKILL');
    await decap.stop();
  }, 60_000);

  it('SIGTERM: nothing of ours is left (filters, qdisc, device, state file); the foreign qdisc and filter remain', async () => {
    expect(await agent.proc.stop('SIGTERM', 15_000)).toEqual({ code: 0, signal: null });
    expect(await footprint()).toEqual(before);
    expect(await vxlanDevices()).toEqual([]);
    await expect(stat(join(dirname(agent.socket), 'ebpf-attached.json'))).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('kill -9 leaves the programs attached; the next start removes them first, mirrors again, and its SIGTERM leaves nothing', async () => {
    await agent.restart();
    await agent.proc.stop('SIGKILL', 5_000);
    expect(await filters(topo.srcIf, 'ingress')).toMatch(/mf_ingress/);
    expect(await vxlanDevices()).toEqual([OUR_DEVICE]);
    expect(JSON.parse(await readFile(join(dirname(agent.socket), 'ebpf-attached.json'), 'utf8'))).toMatchObject({ attachments: [{ name: topo.srcIf }, { name: 'lo' }] });

    decapA = await startCapture(topo, 'dst', topo.vxlan[0]!.name, join(topo.workDir, 'decap-restart.pcap'), ['udp', 'port', String(UDP_PORT)]);
    await agent.restart();
    expect(agent.logCount(/removed TC filters left by a previous run/)).toBe(2);
    expect(agent.logCount(/removed a VXLAN device left by a previous run/)).toBe(1);
    // One filter of ours per hook, not a stale one beside the new one.
    expect((await filters(topo.srcIf, 'ingress')).match(/handle 0x4d46/g)).toHaveLength(1);
    sender = topo.spawn('src', process.execPath, ['-e', sequencedSender(topo.v4.dst, UDP_PORT)]);
    await decapA.waitFor(50, TIMEOUT_MS);

    // Crashed again, and the state file is gone too (a wiped /run): our filters are found by
    // handle, priority and program name.
    await agent.proc.stop('SIGKILL', 5_000);
    await rm(join(dirname(agent.socket), 'ebpf-attached.json'));
    const arrived = decapA.count();
    await agent.restart();
    expect(agent.logCount(/no state recorded/)).toBe(4);
    expect((await filters(topo.srcIf, 'egress')).match(/handle 0x4d46/g)).toHaveLength(1);
    await decapA.waitFor(arrived + 50, TIMEOUT_MS);
    await sender.stop('SIGKILL');
    expect(await agent.proc.stop('SIGTERM', 15_000)).toEqual({ code: 0, signal: null });
    // Only the foreign qdisc on lo stays; the one the first run created on the veth was
    // recorded in the state file that is gone, so it stays too: an empty clsact.
    const after = await footprint();
    expect(after.lo).toEqual(before.lo);
    expect(await filters(topo.srcIf, 'ingress')).toBe('');
    expect(await filters(topo.srcIf, 'egress')).toBe('');
    expect(await vxlanDevices()).toEqual([]);
  }, 60_000);
});
