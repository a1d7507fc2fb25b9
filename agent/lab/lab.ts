// `mirrorflow lab`: build the namespaces, run the agent in src with the sample config,
// drive TCP/UDP/ICMP traffic to dst, and show what dst received and decapsulated.
// The capture and traffic helpers here are shared with the e2e tests.

import { createRequire } from 'node:module';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { agentMetricLines, readyDataPlane } from './report.js';
import { stringify } from 'yaml';
import { run, type Spawned } from '../exec.js';
import { bulkTransfer } from './bulk.js';
import { LAB_PORTS, LAB_VNI, labConfig } from './sample-config.js';
import { createLabTopology, type NsRole, type Topology } from './topology.js';

const VXLAN_PORT = 4789;
const EPHEMERAL_MIN = 49152;
const READY_TIMEOUT_MS = 15000;
const LISTEN_TIMEOUT_MS = 5000;
const TRAFFIC_TIMEOUT_MS = 30000;
const DRAIN_TIMEOUT_MS = 3000;
/** tcpdump prints one line per packet starting with its timestamp; decoded inner headers follow on other lines. */
const PACKET_LINE = /^\d\d:\d\d:\d\d\.\d+ /;
const AGENT_READY = /"msg":"agent ready"/;

// ---- captures ------------------------------------------------------------------------

export interface Capture {
  file: string;
  proc: Spawned;
  /** Packets written so far. */
  count(): number;
  /** Resolves once at least n packets were captured. */
  waitFor(n: number, timeoutMs: number): Promise<void>;
  /** Stops tcpdump (which flushes the file) and returns its exit statistics lines. */
  stop(): Promise<string[]>;
}

/**
 * Starts tcpdump on `dev` in a namespace, writing every packet to `file` as it arrives
 * (-U, immediate mode) and printing one line per packet so arrivals can be awaited.
 * Resolves once tcpdump is listening.
 */
const CAPTURE_BUFFER_KIB = 65536;

export async function startCapture(
  topo: Topology, role: NsRole, dev: string, file: string, filter: readonly string[] = [], opts: { snapLength?: number } = {},
): Promise<Capture> {
  // -B: 64 MiB of ring. With the default 2 MiB and the default 256 KiB snap length the ring
  // holds a handful of slots, and a burst of GSO frames overruns it. In immediate mode
  // libpcap's ring has one snap-length slot per packet: 256 slots at the default snap
  // length, so a capture of copies (COPY_SNAP_LENGTH) gets ~7000.
  const snap = opts.snapLength === undefined ? [] : ['-s', String(opts.snapLength)];
  const proc = topo.spawn(role, 'tcpdump', ['-i', dev, '-n', '-l', '-U', '--immediate-mode', '-B', String(CAPTURE_BUFFER_KIB), ...snap, '--print', '-Z', 'root', '-w', file, ...filter]);
  await proc.waitForLine(/listening on/, LISTEN_TIMEOUT_MS, { stream: 'stderr' });
  return {
    file,
    proc,
    count: () => proc.countLines(PACKET_LINE, 'stdout'),
    waitFor: async (n, timeoutMs) => {
      if (n > 0) await proc.waitForLine(PACKET_LINE, timeoutMs, { stream: 'stdout', count: n });
    },
    stop: async () => {
      const st = await proc.stop('SIGTERM');
      if (st.code !== 0) throw new Error(`tcpdump on ${dev} exited ${st.code ?? st.signal}:\n${proc.output()}`);
      const stats = proc.lines.stderr.filter((l) => /packets? (captured|received|dropped)/.test(l));
      // A reference capture that lost frames would make every later comparison wrong.
      const dropped = stats.map((l) => /^(\d+) packets? dropped by kernel/.exec(l)?.[1]).find((n) => n !== undefined);
      if (dropped !== undefined && Number(dropped) > 0) throw new Error(`tcpdump on ${dev} lost ${dropped} packets (kernel drops)`);
      return stats;
    },
  };
}

/** Runs tshark on a capture file: one row per packet matching `displayFilter`, all occurrences of each field comma-joined. */
export async function tsharkFields(file: string, displayFilter: string, fields: readonly string[]): Promise<string[][]> {
  const args = ['-r', file, '-n', '-T', 'fields', '-E', 'separator=/t', '-E', 'occurrence=a', '-E', 'aggregator=,'];
  if (displayFilter !== '') args.push('-Y', displayFilter);
  for (const f of fields) args.push('-e', f);
  const { stdout } = await run('tshark', args);
  return stdout.split('\n').filter((l) => l !== '').map((l) => l.split('\t'));
}

// ---- traffic ---------------------------------------------------------------------------

/** TCP echo on one port and UDP sinks on others, dual-stack; prints a line once all listen. */
const SERVER_SCRIPT = `
const net = require('node:net'), dgram = require('node:dgram');
const { tcpPort, udpPorts } = JSON.parse(process.argv[1]);
let pending = 1 + udpPorts.length;
const ready = () => { if (--pending === 0) console.log('traffic server ready'); };
net.createServer((s) => { s.on('error', () => {}); s.pipe(s); }).listen({ port: tcpPort, host: '::' }, ready);
for (const p of udpPorts) dgram.createSocket('udp6').bind(p, '::', ready);
`;

/**
 * Bounded client traffic: TCP connections that send and read back their bytes, UDP
 * datagrams, and ICMP echo (raw sockets via raw-socket; each request waits for its reply).
 * Prints a JSON summary; exits non-zero when something got no answer.
 */
const CLIENT_SCRIPT = `
const net = require('node:net'), dgram = require('node:dgram');
const plan = JSON.parse(process.argv[1]);
const raw = require(plan.rawSocketPath);
function tcp({ host, port, bytes }) {
  return new Promise((resolve, reject) => {
    let got = 0;
    const s = net.connect({ host, port }, () => s.end(Buffer.alloc(bytes, 0x61)));
    s.on('data', (d) => { got += d.length; });
    s.on('error', reject);
    s.on('close', () => got === bytes ? resolve(got) : reject(new Error('tcp ' + host + ': echoed ' + got + ' of ' + bytes)));
  });
}
async function udp({ host, port, count, size }) {
  const s = dgram.createSocket(host.includes(':') ? 'udp6' : 'udp4');
  for (let i = 0; i < count; i++) await new Promise((res, rej) => s.send(Buffer.alloc(size, 0x62), port, host, (e) => e ? rej(e) : res()));
  s.close();
  return count;
}
async function ping({ host, count }) {
  const v6 = host.includes(':');
  const s = raw.createSocket({ addressFamily: v6 ? raw.AddressFamily.IPv6 : raw.AddressFamily.IPv4, protocol: v6 ? raw.Protocol.ICMPv6 : raw.Protocol.ICMP });
  const id = process.pid & 0xffff;
  for (let seq = 1; seq <= count; seq++) {
    const req = Buffer.alloc(64, 0x63);
    req.writeUInt16BE(0, 2); req[0] = v6 ? 128 : 8; req[1] = 0; req.writeUInt16BE(id, 4); req.writeUInt16BE(seq, 6);
    if (!v6) raw.writeChecksum(req, 2, raw.createChecksum(req));
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no echo reply from ' + host + ' seq ' + seq)), 3000);
      const onMessage = (buf) => {
        const off = v6 ? 0 : (buf[0] & 0x0f) * 4;
        if (buf[off] === (v6 ? 129 : 0) && buf.readUInt16BE(off + 4) === id && buf.readUInt16BE(off + 6) === seq) {
          clearTimeout(timer); s.removeListener('message', onMessage); resolve();
        }
      };
      s.on('message', onMessage);
      s.send(req, 0, req.length, host, (e) => { if (e) { clearTimeout(timer); reject(e); } });
    });
  }
  s.close();
  return count;
}
(async () => {
  const out = { tcp: [], udp: [], icmp: [] };
  for (const t of plan.tcp) out.tcp.push(await tcp(t));
  for (const u of plan.udp) out.udp.push(await udp(u));
  for (const p of plan.icmp) out.icmp.push(await ping(p));
  console.log(JSON.stringify(out));
})().catch((e) => { console.error(e && e.message || e); process.exit(1); });
`;

export interface TrafficPlan {
  tcp: { host: string; port: number; bytes: number }[];
  udp: { host: string; port: number; count: number; size: number }[];
  icmp: { host: string; count: number }[];
}

/** Starts the echo/sink server in `role`; resolves once it listens. */
export async function startTrafficServer(topo: Topology, role: NsRole, tcpPort: number, udpPorts: readonly number[]): Promise<Spawned> {
  const proc = topo.spawn(role, process.execPath, ['-e', SERVER_SCRIPT, JSON.stringify({ tcpPort, udpPorts })]);
  await proc.waitForLine(/traffic server ready/, LISTEN_TIMEOUT_MS, { stream: 'stdout' });
  return proc;
}

/** Runs the plan from `role` and resolves when every exchange completed (replies received). */
export async function driveTraffic(topo: Topology, role: NsRole, plan: TrafficPlan): Promise<void> {
  const rawSocketPath = createRequire(import.meta.url).resolve('raw-socket');
  await topo.exec(role, process.execPath, ['-e', CLIENT_SCRIPT, JSON.stringify({ ...plan, rawSocketPath })], { timeoutMs: TRAFFIC_TIMEOUT_MS });
}

// ---- what the destination decoded ---------------------------------------------------

export interface DecodedPacket {
  outerSrc: string;
  outerDst: string;
  srcPort: number;
  dstPort: number;
  vni: number;
  /** Protocols of the encapsulated frame, e.g. "eth:ethertype:ip:tcp". */
  inner: string;
  /** The inner UDP destination port, or 0. */
  innerUdpDstPort: number;
  info: string;
}

/** Decodes every VXLAN packet of an underlay capture with tshark. */
export async function decodeVxlan(file: string): Promise<DecodedPacket[]> {
  const rows = await tsharkFields(file, 'vxlan', ['ip.src', 'ip.dst', 'udp.srcport', 'udp.dstport', 'vxlan.vni', 'frame.protocols', '_ws.col.Info']);
  return rows.map(([src = '', dst = '', sport = '', dport = '', vni = '', protos = '', info = '']) => {
    const dports = dport.split(',');
    const inner = protos.slice(protos.indexOf(':vxlan:') + ':vxlan:'.length);
    return {
      outerSrc: src.split(',')[0] ?? '',
      outerDst: dst.split(',')[0] ?? '',
      srcPort: Number(sport.split(',')[0]),
      dstPort: Number(dports[0]),
      vni: Number(vni.split(',')[0]),
      inner,
      innerUdpDstPort: /(^|:)udp(:|$)/.test(inner) ? Number(dports[1] ?? 0) : 0,
      info,
    };
  });
}

export interface LabCounts {
  underlay: number;
  decapsulated: number;
  tcp: number;
  icmp: number;
  udpAccepted: number;
  udpDropped: number;
  arp: number;
  vxlanInVxlan: number;
  other: number;
}

function classify(packets: readonly DecodedPacket[]): LabCounts {
  const c: LabCounts = { underlay: packets.length, decapsulated: 0, tcp: 0, icmp: 0, udpAccepted: 0, udpDropped: 0, arp: 0, vxlanInVxlan: 0, other: 0 };
  for (const p of packets) {
    if (/(^|:)vxlan(:|$)/.test(p.inner)) c.vxlanInVxlan++;
    else if (/(^|:)arp(:|$)/.test(p.inner)) c.arp++;
    else if (/(^|:)tcp(:|$)/.test(p.inner)) c.tcp++;
    else if (/(^|:)icmp(v6)?(:|$)/.test(p.inner)) c.icmp++;
    else if (p.innerUdpDstPort === LAB_PORTS.udpAccepted) c.udpAccepted++;
    else if (p.innerUdpDstPort === LAB_PORTS.udpDropped) c.udpDropped++;
    else c.other++;
  }
  return c;
}

// ---- the command ---------------------------------------------------------------------

export interface LabOptions {
  /** argv that starts the agent; "run --config FILE" is appended. Default: this build's cli.js. */
  agentCommand?: readonly string[];
  vni?: number;
  /** Keep the captures and config (their directory is printed). */
  keepFiles?: boolean;
  /** Where the report goes (default: stdout). */
  print?: (line: string) => void;
}

export interface LabResult {
  ok: boolean;
  problems: string[];
  counts: LabCounts;
  workDir: string;
}

const UDP_COUNT = 5;
const BULK_BYTES = 20 * 1024 * 1024;
/**
 * Paced below the default mirror budget (50k copies/s per CPU) and what the pcap plane
 * copies, so the lab shows every segment arriving on any host; unpaced, a veth runs at
 * several Gbit/s and the budget would rightly shed copies.
 */
const BULK_PACE = '500M';
const PING_COUNT = 3;

function defaultAgentCommand(): string[] {
  return [process.execPath, fileURLToPath(new URL('../cli.js', import.meta.url))];
}

async function fetchMetrics(topo: Topology, listen: string): Promise<string | undefined> {
  const script = `fetch(process.argv[1]).then((r) => r.text()).then((t) => process.stdout.write(t), () => process.exit(1))`;
  return topo.exec('src', process.execPath, ['-e', script, `http://${listen}/metrics`], { timeoutMs: 5000 }).then((r) => r.stdout, () => undefined);
}

/**
 * Runs the whole lab and removes everything it made, also on SIGINT/SIGTERM and errors.
 * Resolves with ok=false when the destination received something wrong.
 */
export async function runLab(opts: LabOptions = {}): Promise<LabResult> {
  const print = opts.print ?? ((line: string) => process.stdout.write(`${line}\n`));
  const vni = opts.vni ?? LAB_VNI;
  const topo = await createLabTopology({ vnis: [vni], keepFiles: opts.keepFiles });
  const onSignal = (sig: NodeJS.Signals) => {
    print(`lab: ${sig}, removing namespaces ${Object.values(topo.ns).join(' ')}`);
    void topo.destroy().finally(() => process.exit(sig === 'SIGINT' ? 130 : 143));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    return await labSteps(topo, vni, opts.agentCommand ?? defaultAgentCommand(), print);
  } finally {
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
    await topo.destroy();
    print(opts.keepFiles ? `lab: namespaces removed; files kept in ${topo.workDir}` : 'lab: namespaces and files removed');
  }
}

async function labSteps(topo: Topology, vni: number, agentCommand: readonly string[], print: (line: string) => void): Promise<LabResult> {
  const [agentCmd, ...agentArgs] = agentCommand;
  if (agentCmd === undefined) throw new Error('lab: empty agent command');
  const vx = topo.vxlan[0];
  if (vx === undefined) throw new Error('lab: topology has no vxlan device');
  const metricsListen = '127.0.0.1:9477';
  const configFile = join(topo.workDir, 'mirrorflow.yaml');
  const flowLogPath = join(topo.workDir, 'flowlog.jsonl');
  await writeFile(configFile, stringify(labConfig(topo, { vni, metricsListen, controlSocket: join(topo.workDir, 'control.sock'), flowLogPath })));

  print(`lab: namespaces ${topo.ns.src} (${topo.srcIf} ${topo.v4.src} ${topo.v6.src}) -> ${topo.ns.peer} (router) -> ${topo.ns.dst} (${topo.dstIf} ${topo.v4.dst}, vxlan ${vx.name} vni ${vni})`);
  print(`lab: config ${configFile}`);

  await startTrafficServer(topo, 'dst', LAB_PORTS.tcp, [LAB_PORTS.udpAccepted, LAB_PORTS.udpDropped]);
  const underlay = await startCapture(topo, 'dst', topo.dstIf, join(topo.workDir, 'underlay.pcap'), ['udp', 'port', String(VXLAN_PORT)]);
  const decap = await startCapture(topo, 'dst', vx.name, join(topo.workDir, 'decap.pcap'));

  const agent = topo.spawn('src', agentCmd, [...agentArgs, 'run', '--config', configFile]);
  const ready = await agent.waitForLine(AGENT_READY, READY_TIMEOUT_MS, { stream: 'stdout' });
  const plane = readyDataPlane(ready);
  print(`lab: agent ready (pid ${agent.pid}) in ${topo.ns.src}, data plane ${plane} (${plane === 'ebpf' ? 'TC programs clone in the kernel' : 'libpcap capture and UDP sockets in user space'})`);

  const plan: TrafficPlan = {
    tcp: [
      { host: topo.v4.dst, port: LAB_PORTS.tcp, bytes: 20000 },
      { host: topo.v6.dst, port: LAB_PORTS.tcp, bytes: 20000 },
    ],
    udp: [
      { host: topo.v4.dst, port: LAB_PORTS.udpAccepted, count: UDP_COUNT, size: 100 },
      { host: topo.v4.dst, port: LAB_PORTS.udpDropped, count: UDP_COUNT, size: 100 },
    ],
    icmp: [
      { host: topo.v4.dst, count: PING_COUNT },
      { host: topo.v6.dst, count: PING_COUNT },
    ],
  };
  await driveTraffic(topo, 'src', plan);
  print(`lab: traffic done: 2 TCP connections (v4, v6) to port ${LAB_PORTS.tcp}, ${UDP_COUNT} UDP to ${LAB_PORTS.udpAccepted} (accept) and ${LAB_PORTS.udpDropped} (drop), ${PING_COUNT} pings v4 and v6`);

  // Every VXLAN packet that reached dst should come out of the vxlan device.
  await decap.waitFor(underlay.count(), DRAIN_TIMEOUT_MS).catch(() => undefined);
  const underlayStats = await underlay.stop();
  await decap.stop();

  // The main use case on a host with default offloads: a bulk transfer arrives whole.
  const bulk = await bulkTransfer(topo, vni, LAB_PORTS.bulk, BULK_BYTES, BULK_PACE);
  const metrics = await fetchMetrics(topo, metricsListen);
  const agentExit = await agent.stop('SIGTERM', 10000);

  // A Set: one line per kind of problem, not per packet.
  const problems = new Set<string>();
  if (agentExit.code !== 0) problems.add(`agent exited ${agentExit.code ?? agentExit.signal} on SIGTERM (want 0)`);

  const packets = await decodeVxlan(underlay.file);
  const counts = classify(packets);
  counts.decapsulated = (await tsharkFields(decap.file, '', ['frame.number'])).length;

  print('\nlab: what dst received on its underlay (outer src:port -> dst:port, VNI | inner):');
  for (const p of packets) print(`  ${p.outerSrc}:${p.srcPort} -> ${p.outerDst}:${p.dstPort} vni ${p.vni} | ${p.inner.replace(/^eth:ethertype:/, '')} ${p.info}`);
  print(`  (tcpdump: ${underlayStats.join(', ')})`);

  for (const p of packets) {
    if (p.vni !== vni) problems.add(`packet with VNI ${p.vni} (want ${vni})`);
    if (p.dstPort !== VXLAN_PORT || p.srcPort < EPHEMERAL_MIN) problems.add(`outer UDP ports ${p.srcPort} -> ${p.dstPort}`);
    if (p.outerSrc !== topo.v4.src || p.outerDst !== topo.v4.dst) problems.add(`outer addresses ${p.outerSrc} -> ${p.outerDst}`);
  }
  if (counts.tcp === 0) problems.add('no mirrored TCP');
  if (counts.icmp < 4 * PING_COUNT) problems.add(`mirrored ICMP ${counts.icmp} < ${4 * PING_COUNT} (echo requests and replies, v4 and v6)`);
  if (counts.udpAccepted !== UDP_COUNT) problems.add(`mirrored UDP to ${LAB_PORTS.udpAccepted}: ${counts.udpAccepted}, want ${UDP_COUNT}`);
  if (counts.udpDropped !== 0) problems.add(`UDP to ${LAB_PORTS.udpDropped} was mirrored ${counts.udpDropped} times despite the drop rule`);
  if (counts.arp !== 0) problems.add(`${counts.arp} ARP frames mirrored`);
  if (counts.vxlanInVxlan !== 0) problems.add(`${counts.vxlanInVxlan} VXLAN-in-VXLAN packets: the agent mirrored its own output`);
  if (counts.other !== 0) problems.add(`${counts.other} unexpected packets mirrored`);
  if (counts.decapsulated !== counts.underlay) problems.add(`vxlan device decapsulated ${counts.decapsulated} of ${counts.underlay}`);

  print('\nlab: counts per class');
  print(`  mirrored TCP ${counts.tcp}, ICMP ${counts.icmp}, UDP accepted ${counts.udpAccepted}`);
  print(`  UDP dropped by rule ${counts.udpDropped} (want 0), ARP ${counts.arp} (want 0), VXLAN-in-VXLAN ${counts.vxlanInVxlan} (want 0), other ${counts.other}`);
  print(`  underlay VXLAN ${counts.underlay}, decapsulated by ${vx.name} ${counts.decapsulated}`);

  print(`\nlab: agent metrics (data plane ${plane})`);
  if (metrics === undefined) {
    print(`  (no answer from http://${metricsListen}/metrics)`);
  } else {
    const { shown, hidden } = agentMetricLines(metrics);
    print(`${shown.map((l) => `  ${l}`).join('\n')}\n  (${hidden} process, Node.js and histogram bucket series not shown)`);
  }

  const flowLog = await readFile(flowLogPath, 'utf8').catch(() => undefined);
  print('\nlab: flow log records');
  print(flowLog === undefined ? `  (no ${flowLogPath})` : flowLog.trimEnd().split('\n').map((l) => `  ${l}`).join('\n'));

  print(`\nlab: bulk TCP, iperf3 -n ${BULK_BYTES} -b ${BULK_PACE} to ${topo.v4.dst} (the veths keep the kernel's TSO/GSO: the agent sees aggregates of up to 64 KB)`);
  print(`  receiver got ${bulk.received} bytes; dst got ${bulk.dataCopies} copies of its data segments, largest inner frame ${bulk.largestFrame} B (dst's capture dropped ${bulk.captureDrops})`);
  print(`  ${bulk.cut} copies cut to path MTU − 50 (tshark marks the copy after a cut one "Previous segment not captured": a cut copy carries less payload than its headers say)`);
  print(bulk.covered >= bulk.received
    ? `  the copies' sequence ranges cover all ${bulk.received} bytes the receiver got, without a hole: the transfer arrived whole`
    : `  the copies cover ${bulk.covered < 0 ? 'the stream with holes' : `${bulk.covered} bytes`} of the ${bulk.received} received`);
  if (bulk.covered < bulk.received) problems.add('the bulk transfer did not arrive whole at the destination');

  const list = [...problems];
  print(list.length === 0 ? '\nlab: OK' : `\nlab: FAILED\n${list.map((p) => `  - ${p}`).join('\n')}\n\nagent output:\n${agent.output()}`);
  return { ok: list.length === 0, problems: list, counts, workDir: topo.workDir };
}
