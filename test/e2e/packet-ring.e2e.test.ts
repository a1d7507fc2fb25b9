// The AF_PACKET ring (agent/capture/packet-ring.ts) on the lab's veth pairs with the
// offloads the kernel gives them by default (TSO/GSO on): what it reports is checked
// against the kernel's own counters (nstat TcpOutSegs, the veth's tx/rx packets, a UDP
// receiver's datagram count), never against our decoder.
// The rings are opened by this process inside the lab's namespaces (helpers/netns.ts).
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { run } from '../../agent/exec.js';
import { createLabTopology, type NsRole, type Topology } from '../../agent/lab/topology.js';
import { HEADER_SNAP_LENGTH, MIRROR_SNAP_LENGTH, PacketRing, type PacketRingOptions } from '../../agent/capture/packet-ring.js';
import { GSO_NONE, GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4 } from '../../agent/packet/offload.js';
import { DIR_IN, DIR_OUT, type Direction } from '../../agent/packet/view.js';
import { inNetns } from './helpers/netns.js';
import { sendUdpGso, startUdpReceiver } from './helpers/udp-gso.js';

const TIMEOUT_MS = 120_000;
const UDP_PORT = 7100;
const IPERF_PORT = 5211;
const VLAN_ID = 42;
const ETHERTYPE_VLAN = 0x8100;

/** One frame as delivered, with the header fields the checks need (parsed here, not by decode.ts). */
interface Seen {
  direction: Direction;
  caplen: number;
  wireLen: number;
  gsoType: number;
  gsoSize: number;
  needsCsum: boolean;
  csumStart: number;
  csumOffset: number;
  vlanId: number;
  ipVersion: number;
  protocol: number;
  l4: number;
  /** Transport header bytes (TCP data offset, 8 for UDP). */
  l4HeaderLen: number;
  payload: number;
  /** The checksum field at csumStart + csumOffset equals the folded pseudo-header sum. */
  pseudoSumAtCsum: boolean;
}

function fold(sum: number): number {
  while (sum > 0xffff) sum = (sum & 0xffff) + Math.floor(sum / 0x10000);
  return sum;
}

function parse(buf: Buffer, caplen: number, wireLen: number, direction: Direction, o: { gsoType: number; gsoSize: number; needsCsum: boolean; csumStart: number; csumOffset: number }): Seen {
  let l3 = 14;
  let type = buf.readUInt16BE(12);
  let vlanId = -1;
  if (type === ETHERTYPE_VLAN) {
    vlanId = buf.readUInt16BE(14) & 0xfff;
    type = buf.readUInt16BE(16);
    l3 = 18;
  }
  const seen: Seen = {
    direction, caplen, wireLen, gsoType: o.gsoType, gsoSize: o.gsoSize, needsCsum: o.needsCsum, csumStart: o.csumStart,
    csumOffset: o.csumOffset, vlanId, ipVersion: 0, protocol: 0, l4: 0, l4HeaderLen: 0, payload: 0, pseudoSumAtCsum: false,
  };
  let l4Len: number;
  let pseudo = 0;
  if (type === 0x0800) {
    seen.ipVersion = 4;
    seen.protocol = buf[l3 + 9]!;
    seen.l4 = l3 + (buf[l3]! & 0xf) * 4;
    l4Len = buf.readUInt16BE(l3 + 2) - (seen.l4 - l3);
    for (let i = 12; i < 20; i += 2) pseudo += buf.readUInt16BE(l3 + i);
  } else if (type === 0x86dd) {
    seen.ipVersion = 6;
    seen.protocol = buf[l3 + 6]!;
    seen.l4 = l3 + 40;
    l4Len = buf.readUInt16BE(l3 + 4);
    for (let i = 8; i < 40; i += 2) pseudo += buf.readUInt16BE(l3 + i);
  } else {
    return seen;
  }
  seen.l4HeaderLen = seen.protocol === 6 ? (buf[seen.l4 + 12]! >> 4) * 4 : 8;
  seen.payload = l4Len - seen.l4HeaderLen;
  if (o.needsCsum && o.csumStart + o.csumOffset + 2 <= caplen) {
    seen.pseudoSumAtCsum = buf.readUInt16BE(o.csumStart + o.csumOffset) === fold(pseudo + seen.protocol + l4Len);
  }
  return seen;
}

/** Wire segments a frame stands for. */
const segments = (f: Seen): number => (f.gsoType === GSO_NONE ? 1 : Math.ceil(f.payload / f.gsoSize));
const sum = (frames: Seen[]): number => frames.reduce((n, f) => n + segments(f), 0);

interface Capture {
  ring: PacketRing;
  frames: Seen[];
}

let topo: Topology;
/** A second veth pair src<->peer, IPv6 off and static neighbours: nothing crosses it unless a test sends. */
const quiet = { src: '', peer: '', srcAddr: '', peerAddr: '' };

function capture(role: NsRole, interfaceName: string, opts: Partial<PacketRingOptions> = {}): Capture {
  const frames: Seen[] = [];
  const ring = inNetns(topo.ns[role], () => new PacketRing({
    interfaceName, filterIn: '', filterOut: '', snapLength: MIRROR_SNAP_LENGTH, bufferBytes: 32 << 20, bufferTimeoutMs: 10,
    onFrame: (buf, caplen, wireLen, _ts, direction, offload) => frames.push(parse(buf, caplen, wireLen, direction, offload)),
    onWarning: (msg) => { throw new Error(`unexpected capture warning: ${msg}`); },
    ...opts,
  }));
  return { ring, frames };
}

async function nstat(role: NsRole, counter: string): Promise<number> {
  const { stdout } = await topo.exec(role, 'nstat', ['-asz', counter]);
  const m = new RegExp(`^${counter}\\s+(\\d+)`, 'm').exec(stdout);
  if (!m) throw new Error(`nstat in ${role}: no ${counter} in ${JSON.stringify(stdout)}`);
  return Number(m[1]);
}

async function linkPackets(role: NsRole, dev: string): Promise<{ rx: number; tx: number }> {
  const { stdout } = await topo.exec(role, 'ip', ['-s', '-j', 'link', 'show', 'dev', dev]);
  const s = (JSON.parse(stdout) as { stats64: { rx: { packets: number }; tx: { packets: number } } }[])[0]!.stats64;
  return { rx: s.rx.packets, tx: s.tx.packets };
}

/** Reads `read` until two reads 100 ms apart agree: the last frames of a transfer are through. */
async function settled<T>(read: () => Promise<T>): Promise<T> {
  let last = JSON.stringify(await read());
  for (let i = 0; i < 50; i++) {
    await new Promise((r) => setTimeout(r, 100));
    const now = await read();
    if (JSON.stringify(now) === last) return now;
    last = JSON.stringify(now);
  }
  throw new Error('counters did not settle in 5 s');
}

/** Resolves once `done()` holds, checked on every event-loop turn; rejects after 5 s naming `what`. */
async function until(done: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 5000;
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 1));
  }
}

const PY_RECEIVER = `
import socket, sys
host, port, idle, echo = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4] == 'echo'
s = socket.socket(socket.AF_INET6 if ':' in host else socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
s.bind((host, port))
print('ready', flush=True)
n = 0
try:
    s.settimeout(30)
    while True:
        d, a = s.recvfrom(65535)
        n += 1
        s.settimeout(idle)
        if echo:
            s.sendto(d, a)
except socket.timeout:
    pass
print('count', n, flush=True)
`;

/** Sends count datagrams of size bytes; with echo, waits for each reply. */
const PY_SENDER = `
import socket, sys
host, port, count, size, echo = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == 'echo'
s = socket.socket(socket.AF_INET6 if ':' in host else socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(5)
for i in range(count):
    s.sendto(b'x' * size, (host, port))
    if echo:
        s.recvfrom(65535)
`;

async function udpExchange(opts: { from: NsRole; to: NsRole; toAddr: string; count: number; size: number; echo?: boolean }): Promise<number> {
  const receiver = topo.spawn(opts.to, 'python3', ['-c', PY_RECEIVER, opts.toAddr, String(UDP_PORT), '0.5', opts.echo ? 'echo' : 'count']);
  await receiver.waitForLine(/^ready/, 10_000, { stream: 'stdout' });
  await topo.exec(opts.from, 'python3', ['-c', PY_SENDER, opts.toAddr, String(UDP_PORT), String(opts.count), String(opts.size), opts.echo ? 'echo' : 'no'], { timeoutMs: 60_000 });
  const line = await receiver.waitForLine(/^count /, 40_000, { stream: 'stdout' });
  return Number(line.split(' ')[1]);
}

async function iperf(serverRole: NsRole, serverAddr: string, clientRole: NsRole, bytes: string): Promise<void> {
  const server = topo.spawn(serverRole, 'iperf3', ['-s', '-1', '--forceflush', '-B', serverAddr, '-p', String(IPERF_PORT)]);
  await server.waitForLine(/Server listening/, 10_000);
  await topo.exec(clientRole, 'iperf3', ['-c', serverAddr, '-p', String(IPERF_PORT), '-n', bytes], { timeoutMs: 60_000 });
  await server.exited;
}

async function mtu(role: NsRole, dev: string): Promise<number> {
  const { stdout } = await topo.exec(role, 'ip', ['-j', 'link', 'show', 'dev', dev]);
  return (JSON.parse(stdout) as { mtu: number }[])[0]!.mtu;
}

async function mac(role: NsRole, dev: string): Promise<string> {
  const { stdout } = await topo.exec(role, 'ip', ['-j', 'link', 'show', 'dev', dev]);
  return (JSON.parse(stdout) as { address: string }[])[0]!.address;
}

async function addQuietLink(): Promise<void> {
  await topo.exec('src', 'ip', ['link', 'add', quiet.src, 'type', 'veth', 'peer', 'name', quiet.peer, 'netns', topo.ns.peer]);
  const ends: [NsRole, string, string][] = [['src', quiet.src, quiet.srcAddr], ['peer', quiet.peer, quiet.peerAddr]];
  for (const [role, name, addr] of ends) {
    await topo.exec(role, 'sysctl', ['-qw', `net.ipv6.conf.${name}.disable_ipv6=1`]);
    await topo.exec(role, 'ip', ['addr', 'add', `${addr}/30`, 'dev', name]);
  }
  await topo.exec('src', 'ip', ['neigh', 'replace', quiet.peerAddr, 'lladdr', await mac('peer', quiet.peer), 'dev', quiet.src, 'nud', 'permanent']);
  await topo.exec('peer', 'ip', ['neigh', 'replace', quiet.srcAddr, 'lladdr', await mac('src', quiet.src), 'dev', quiet.peer, 'nud', 'permanent']);
  for (const [role, name] of ends) await topo.exec(role, 'ip', ['link', 'set', name, 'up']);
}

/** Compiles test/fixtures/vlan-tag.bpf.c: the tagging (egress) and untagging (ingress) programs. */
async function vlanPrograms(): Promise<{ push: string; pop: string }> {
  const source = fileURLToPath(new URL('../fixtures/vlan-tag.bpf.c', import.meta.url));
  const include = `-I/usr/include/${process.arch === 'arm64' ? 'aarch64' : 'x86_64'}-linux-gnu`;
  const push = join(topo.workDir, 'vlan-push.bpf.o');
  const pop = join(topo.workDir, 'vlan-pop.bpf.o');
  await run('clang', ['-O2', '-target', 'bpf', include, '-DPUSH', `-DVLAN_ID=${VLAN_ID}`, '-c', source, '-o', push]);
  await run('clang', ['-O2', '-target', 'bpf', include, '-c', source, '-o', pop]);
  return { push, pop };
}

beforeAll(async () => {
  topo = await createLabTopology();
  const ip = (s: string) => s.split('.').reduce((n, b) => n * 256 + Number(b), 0);
  const v4 = (n: number) => [n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff].join('.');
  // The lab's block of 16 addresses uses +1..+6; the quiet link takes +9/+10.
  const base = ip(topo.v4.src) - 1;
  Object.assign(quiet, { src: `mfqs-${topo.suffix}`, peer: `mfqp-${topo.suffix}`, srcAddr: v4(base + 9), peerAddr: v4(base + 10) });
  await addQuietLink();
}, TIMEOUT_MS);

afterAll(async () => {
  await topo?.destroy();
});

describe('PacketRing on veth with default offloads (root, namespaces)', () => {
  for (const family of [4, 6] as const) {
    test(`TCP/IPv${family} bulk: aggregates with their segment size, and their segments add up to TcpOutSegs`, async () => {
      const sender = capture('src', topo.srcIf, { filterIn: 'less 1', filterOut: 'tcp' });
      const receiver = capture('peer', topo.peerSrcIf, { filterIn: 'tcp', filterOut: 'tcp' });
      try {
        const srcSegs0 = await nstat('src', 'TcpOutSegs');
        const peerSegs0 = await nstat('peer', 'TcpOutSegs');
        await iperf('peer', family === 4 ? topo.v4.peerSrc : topo.v6.peerSrc, 'src', '2M');
        const [srcSegs, peerSegs] = await settled(() => Promise.all([nstat('src', 'TcpOutSegs'), nstat('peer', 'TcpOutSegs')]));
        await Promise.all([sender.ring.drain(), receiver.ring.drain()]);
        const linkMtu = await mtu('src', topo.srcIf);

        const out = sender.frames;
        expect(out.every((f) => f.direction === DIR_OUT && f.ipVersion === family && f.protocol === 6)).toBe(true);
        const aggregates = out.filter((f) => f.gsoType !== GSO_NONE);
        console.log(`IPv${family}: sender ${out.length} frames (${aggregates.length} aggregates, largest ${Math.max(...out.map((f) => f.wireLen))} B) for ${sum(out)} segments; TcpOutSegs +${srcSegs - srcSegs0}`);
        expect(aggregates.length).toBeGreaterThan(10);
        for (const f of aggregates) {
          expect(f.gsoType).toBe(family === 4 ? GSO_TCPV4 : GSO_TCPV6);
          // The MSS: the link MTU less this connection's IP and TCP headers (timestamps included).
          expect(f.gsoSize).toBe(linkMtu - (f.l4 - 14) - f.l4HeaderLen);
          expect(f.caplen).toBe(f.wireLen);
          expect(f.wireLen).toBeGreaterThan(linkMtu + 14);
        }
        // Transmitted TCP is CHECKSUM_PARTIAL: the field holds the pseudo-header sum, at csumStart + csumOffset.
        expect(out.every((f) => f.needsCsum && f.csumStart === f.l4 && f.csumOffset === 16 && f.pseudoSumAtCsum)).toBe(true);
        expect(sum(out)).toBe(srcSegs - srcSegs0);

        const inb = receiver.frames.filter((f) => f.direction === DIR_IN);
        expect(inb.filter((f) => f.gsoType === (family === 4 ? GSO_TCPV4 : GSO_TCPV6)).length).toBe(aggregates.length);
        expect(sum(inb)).toBe(srcSegs - srcSegs0);
        expect(sum(receiver.frames.filter((f) => f.direction === DIR_OUT))).toBe(peerSegs - peerSegs0);
      } finally {
        sender.ring.close();
        receiver.ring.close();
      }
    }, TIMEOUT_MS);
  }

  test('UDP GSO (UDP_SEGMENT 1400): GSO_UDP_L4 aggregates whose segments are the datagrams the receiver got', async () => {
    const sender = capture('src', topo.srcIf, { filterIn: 'less 1', filterOut: 'udp' });
    const receiver = capture('peer', topo.peerSrcIf, { filterIn: 'udp', filterOut: 'less 1' });
    try {
      const count = 50;
      const udp = await startUdpReceiver(topo, 'peer', UDP_PORT);
      // 11 segments per send, the last one short.
      const sent = await sendUdpGso(topo, 'src', { host: topo.v4.peerSrc, port: UDP_PORT, tag: 1, sends: count, segmentsPerSend: 11, segmentSize: 1400, lastSize: 700 });
      const got = Number((await udp.waitForLine(/^received /, 20_000, { stream: 'stdout' })).split(' ')[1]);
      await Promise.all([sender.ring.drain(), receiver.ring.drain()]);
      expect(sent).toBe(count * 11);
      expect(got).toBe(sent);
      const out = sender.frames;
      console.log(`UDP GSO: ${out.length} frames, ${sum(out)} segments, receiver got ${got} datagrams`);
      expect(out.length).toBe(count);
      expect(out.every((f) => f.gsoType === GSO_UDP_L4 && f.gsoSize === 1400 && f.payload === 14_700 && f.needsCsum && f.csumOffset === 6 && f.pseudoSumAtCsum)).toBe(true);
      expect(sum(out)).toBe(got);
      expect(receiver.frames.every((f) => f.direction === DIR_IN && f.gsoType === GSO_UDP_L4)).toBe(true);
      expect(sum(receiver.frames)).toBe(got);
    } finally {
      sender.ring.close();
      receiver.ring.close();
    }
  }, TIMEOUT_MS);

  test('direction from the packet type: outbound and inbound counts equal the veth tx and rx packets', async () => {
    const all = capture('src', quiet.src, { snapLength: HEADER_SNAP_LENGTH });
    const outOnly = capture('src', quiet.src, { snapLength: HEADER_SNAP_LENGTH, filterIn: 'less 1', filterOut: 'udp' });
    const inOnly = capture('src', quiet.src, { snapLength: HEADER_SNAP_LENGTH, filterIn: 'udp', filterOut: 'less 1' });
    // prefilter.ts ends both directions with `vlan`, which shifts libpcap's later offsets: each direction must keep its own.
    const withVlan = capture('src', quiet.src, { snapLength: HEADER_SNAP_LENGTH, filterIn: 'udp or vlan', filterOut: 'udp or vlan' });
    try {
      const before = await linkPackets('src', quiet.src);
      const count = 300;
      expect(await udpExchange({ from: 'src', to: 'peer', toAddr: quiet.peerAddr, count, size: 64, echo: true })).toBe(count);
      const after = await settled(() => linkPackets('src', quiet.src));
      // Delivered by the wake-up thread alone (no drain or read call yet).
      await until(() => all.frames.length === 2 * count, 'all frames delivered without a read call');
      await Promise.all([all, outOnly, inOnly, withVlan].map((c) => c.ring.drain()));
      const n = (c: Capture, d: Direction) => c.frames.filter((f) => f.direction === d).length;
      console.log(`direction: tx +${after.tx - before.tx} rx +${after.rx - before.rx}; captured out ${n(all, DIR_OUT)} in ${n(all, DIR_IN)}`);
      expect(n(all, DIR_OUT)).toBe(after.tx - before.tx);
      expect(n(all, DIR_IN)).toBe(after.rx - before.rx);
      expect(n(all, DIR_OUT)).toBe(count);
      expect([n(outOnly, DIR_OUT), n(outOnly, DIR_IN)]).toEqual([count, 0]);
      expect([n(inOnly, DIR_OUT), n(inOnly, DIR_IN)]).toEqual([0, count]);
      expect([n(withVlan, DIR_OUT), n(withVlan, DIR_IN)]).toEqual([count, count]);
      expect(all.frames.every((f) => f.gsoType === GSO_NONE && f.caplen === f.wireLen && f.vlanId === -1)).toBe(true);
    } finally {
      for (const c of [all, outOnly, inOnly, withVlan]) c.ring.close();
    }
  }, TIMEOUT_MS);

  test('a VLAN tag the kernel holds outside the data is put back, csumStart follows it, and the filter lets tagged frames through', async () => {
    const { push, pop } = await vlanPrograms();
    await topo.exec('src', 'tc', ['qdisc', 'add', 'dev', quiet.src, 'clsact']);
    await topo.exec('peer', 'tc', ['qdisc', 'add', 'dev', quiet.peer, 'clsact']);
    // Both directions' expressions reject everything: only the filter's VLAN rule lets the tagged frames in.
    const c = capture('src', quiet.src, { filterIn: 'less 1', filterOut: 'less 1' });
    try {
      await topo.exec('src', 'tc', ['filter', 'add', 'dev', quiet.src, 'egress', 'bpf', 'da', 'obj', push, 'sec', 'tc']);
      await topo.exec('peer', 'tc', ['filter', 'add', 'dev', quiet.peer, 'ingress', 'bpf', 'da', 'obj', pop, 'sec', 'tc']);
      const count = 20;
      expect(await udpExchange({ from: 'src', to: 'peer', toAddr: quiet.peerAddr, count, size: 64, echo: true })).toBe(count);
      await iperf('peer', quiet.peerAddr, 'src', '1M');
      await c.ring.drain();
      const udp = c.frames.filter((f) => f.protocol === 17);
      const tcp = c.frames.filter((f) => f.protocol === 6);
      console.log(`VLAN: ${udp.length} UDP and ${tcp.length} TCP frames (${tcp.filter((f) => f.gsoType !== GSO_NONE).length} aggregates), all outbound and tagged`);
      expect(udp.length).toBe(count);
      expect(c.frames.every((f) => f.direction === DIR_OUT && f.vlanId === VLAN_ID && f.ipVersion === 4 && f.caplen === f.wireLen)).toBe(true);
      expect(tcp.some((f) => f.gsoType === GSO_TCPV4)).toBe(true);
      // 18 bytes of Ethernet + tag, then the IPv4 header: the checksum start moved with the tag.
      expect(tcp.every((f) => f.needsCsum && f.csumStart === f.l4 && f.l4 === 18 + 20 && f.pseudoSumAtCsum)).toBe(true);
    } finally {
      c.ring.close();
      await topo.exec('src', 'tc', ['qdisc', 'del', 'dev', quiet.src, 'clsact']);
      await topo.exec('peer', 'tc', ['qdisc', 'del', 'dev', quiet.peer, 'clsact']);
    }
  }, TIMEOUT_MS);

  test('a ring not read overflows: the kernel counts the drops, and read + dropped = what the link carried', async () => {
    // 8 blocks of 128 KiB: ~6,000 frames of this size.
    const c = capture('src', quiet.src, { snapLength: HEADER_SNAP_LENGTH, bufferBytes: 1 << 20, paused: true });
    try {
      expect(c.ring.blockCount).toBe(8);
      const before = await linkPackets('src', quiet.src);
      const got = await udpExchange({ from: 'peer', to: 'src', toAddr: quiet.srcAddr, count: 40_000, size: 100 });
      const after = await settled(() => linkPackets('src', quiet.src));
      const carried = after.rx - before.rx + (after.tx - before.tx);
      const paused = { ...c.ring.stats() };
      c.ring.resume();
      await c.ring.drain();
      const final = c.ring.stats();
      console.log(`overflow: link carried ${carried} (receiver got ${got}); kernel: ${JSON.stringify(final)}; delivered ${c.frames.length}`);
      expect(paused.dropped).toBeGreaterThan(carried / 2);
      expect(paused.received).toBe(carried);
      expect(final.received).toBe(carried);
      expect(c.frames.length + final.dropped).toBe(carried);
      expect(final.queueFreezes).toBeGreaterThan(0);
    } finally {
      c.ring.close();
    }
  }, TIMEOUT_MS);

  test('200 opens and closes on a live veth: fds, packet sockets and RSS come back', async () => {
    const traffic = topo.spawn('peer', 'python3', ['-c', `
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
end = time.time() + 120
while time.time() < end:
    s.sendto(b'x' * 200, ('${quiet.srcAddr}', ${UDP_PORT}))
    time.sleep(0.0005)
`]);
    try {
      const packetSockets = async () => (await topo.exec('src', 'cat', ['/proc/net/packet'])).stdout.trim().split('\n').length - 1;
      const cycle = async () => {
        const c = capture('src', quiet.src);
        await new Promise((r) => setTimeout(r, 1));
        c.ring.read(5);
        c.ring.close();
      };
      for (let i = 0; i < 10; i++) await cycle();
      const fds0 = readdirSync('/proc/self/fd').length;
      const sockets0 = await packetSockets();
      const rss0 = process.memoryUsage().rss;
      // RSS counts only the ring pages touched; a ring left mapped shows in the address space (32 MiB each).
      const vmSize = () => Number(/VmSize:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'))![1]) / 1024;
      const vm0 = vmSize();
      let delivered = 0;
      for (let i = 0; i < 200; i++) {
        const c = capture('src', quiet.src);
        expect(await packetSockets()).toBe(sockets0 + 1);
        await new Promise((r) => setTimeout(r, 15));
        c.ring.read(5);
        delivered += c.frames.length;
        c.ring.close();
      }
      const grew = (process.memoryUsage().rss - rss0) / 2 ** 20;
      const vmGrew = vmSize() - vm0;
      console.log(`200 reopens: fds ${fds0} -> ${readdirSync('/proc/self/fd').length}, packet sockets ${sockets0} -> ${await packetSockets()}, RSS +${grew.toFixed(1)} MiB, VmSize +${vmGrew.toFixed(0)} MiB, ${delivered} frames read`);
      expect(delivered).toBeGreaterThan(0);
      expect(readdirSync('/proc/self/fd').length).toBe(fds0);
      expect(await packetSockets()).toBe(sockets0);
      expect(grew).toBeLessThan(10);
      expect(vmGrew).toBeLessThan(64);
    } finally {
      await traffic.stop('SIGTERM');
    }
  }, TIMEOUT_MS);
});
