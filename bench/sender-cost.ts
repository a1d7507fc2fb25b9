// CPU per copy of the pcap plane's sender alone (agent/mirror/sender.ts), for before/after
// checks of the send path: COPIES 64-byte UDP frames of FLOWS flows through VxlanSender to
// an IPv4 target behind a veth whose far end drops them (no route there), in batches as
// the capture callback hands them over. Prints the process's CPU seconds (user + system,
// the kernel's send path included) per million copies and the rate reached.
//
//   unshare -n node dist/bench/sender-cost.js [DIST]    (DIST: another build's dist/, e.g. the base commit's)
//   unshare -n node dist/bench/sender-cost.js --af-packet
//
// --af-packet is an anchor for a TX path past the IP stack (issue 19's AF_PACKET lever): the
// same copies as whole Ethernet/IPv4/UDP/VXLAN frames, the IPv4 checksum computed here, sent
// with sendmmsg on an AF_PACKET socket with PACKET_QDISC_BYPASS, to the same neighbour MAC
// (so the far end drops them just as early). No routing, neighbour or error handling.
//
// Run it under `unshare -n`: it sets up its veth pair in that private namespace, which
// goes away with the process.
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pino from 'pino';
import koffi from 'koffi';
import { run } from '../agent/exec.js';
import { libc, socketCalls } from '../agent/libc.js';
import { MessageVector } from '../agent/mirror/udp-socket.js';
import { NativeMemory } from '../agent/native-memory.js';
import { buildPacket } from '../test/helpers/build-packet.js';
import { decode } from '../agent/packet/decode.js';
import { PacketView } from '../agent/packet/view.js';

/** Copies per capture callback (the ring's block): a flush after each, as the pipeline does. */
const BATCH = 256;
/** SENDER_COPIES (default 2M), whole batches. */
const COPIES = Math.ceil(Number(process.env.SENDER_COPIES ?? 2_000_000) / BATCH) * BATCH;
const FLOWS = 1000;
const TARGET = '198.18.200.2';

const TARGET_MAC = '02:00:00:00:00:02';
const INNER_PAYLOAD = 18;

/** What a run sends: `copy` queues copy i, `flush` hands the queue to the kernel. */
interface Sender {
  copy(i: number): void;
  flush(): void;
  close(): Promise<void>;
}

async function agentSender(dist: string, views: PacketView[]): Promise<Sender> {
  const { VxlanSender } = (await import(join(dist, 'agent/mirror/sender.js'))) as typeof import('../agent/mirror/sender.js');
  const sender = await VxlanSender.open({ address: TARGET, port: 4789, family: 4, pathMtu: 1500, logger: pino({ level: 'silent' }) });
  return {
    copy: (i) => void sender.send(views[i % FLOWS]!, 4242, 8500),
    flush: () => sender.flush(),
    close: () => sender.close(),
  };
}

const AF_PACKET = 17;
const SOCK_RAW = 3;
const SOL_PACKET = 263;
const PACKET_QDISC_BYPASS = 20;
const SLOT = 128;

async function afPacketSender(views: PacketView[]): Promise<Sender> {
  const sendmmsg = libc.func('int sendmmsg(int fd, uint64_t msgvec, unsigned int vlen, int flags)');
  const fd = socketCalls.socket(AF_PACKET, SOCK_RAW, 0) as number;
  const { stdout } = await run('ip', ['-j', 'link', 'show', 'mfsc0']);
  const link = (JSON.parse(stdout) as Array<{ ifindex: number; address: string }>)[0]!;
  // sockaddr_ll: family, protocol (IPv4), ifindex; protocol 0 on the socket: it receives nothing.
  const sll = Buffer.alloc(20);
  sll.writeUInt16LE(AF_PACKET, 0);
  sll.writeUInt16BE(0x0800, 2);
  sll.writeInt32LE(link.ifindex, 4);
  const on = Buffer.alloc(4);
  on.writeInt32LE(1, 0);
  if (fd < 0 || socketCalls.bind(fd, sll, sll.length) !== 0 || socketCalls.setsockopt(fd, SOL_PACKET, PACKET_QDISC_BYPASS, on, 4) !== 0) {
    throw new Error(`AF_PACKET socket: errno ${koffi.errno()}`);
  }
  const arena = new NativeMemory(BATCH * SLOT);
  const vector = new MessageVector(BATCH);
  const out = arena.view;
  const mac = (m: string) => Buffer.from(m.replaceAll(':', ''), 'hex');
  const header = Buffer.concat([mac(TARGET_MAC), mac(link.address), Buffer.from([0x08, 0x00])]);
  let queued = 0;
  return {
    copy: (i) => {
      const view = views[i % FLOWS]!;
      const at = queued * SLOT;
      const inner = view.caplen;
      const ip = at + 14;
      header.copy(out, at);
      out.writeUInt32BE(0x45000000 | (20 + 16 + inner), ip);
      out.writeUInt32BE(0x00004000, ip + 4);
      out.writeUInt32BE(0x40110000, ip + 8);
      out.writeUInt32BE(0xc612c801, ip + 12);
      out.writeUInt32BE(0xc612c802, ip + 16);
      let sum = 0;
      for (let w = 0; w < 20; w += 2) sum += out.readUInt16BE(ip + w);
      while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
      out.writeUInt16BE(~sum & 0xffff, ip + 10);
      out.writeUInt16BE(49152 + (i % FLOWS), ip + 20);
      out.writeUInt16BE(4789, ip + 22);
      out.writeUInt16BE(16 + inner, ip + 24);
      out.writeUInt16BE(0, ip + 26);
      out.writeUInt32BE(0x08000000, ip + 28);
      out.writeUInt32BE(4242 << 8, ip + 32);
      view.buf.copy(out, ip + 36, 0, inner);
      vector.set(queued++, arena.address + at, 14 + 20 + 16 + inner);
    },
    flush: () => {
      if (queued > 0 && (sendmmsg(fd, vector.entry(0), queued, 0) as number) < 0) throw new Error(`sendmmsg: errno ${koffi.errno()}`);
      queued = 0;
    },
    close: async () => {
      socketCalls.close(fd);
      arena.release();
      vector.release();
    },
  };
}

async function main(): Promise<void> {
  const anchor = process.argv[2] === '--af-packet';
  const dist = anchor ? 'af-packet anchor' : process.argv[2] ?? fileURLToPath(new URL('../', import.meta.url));
  for (const args of [
    ['link', 'set', 'lo', 'up'],
    ['link', 'add', 'mfsc0', 'type', 'veth', 'peer', 'name', 'mfsc1'],
    ['addr', 'add', '198.18.200.1/24', 'dev', 'mfsc0'],
    ['link', 'set', 'mfsc0', 'up'],
    ['link', 'set', 'mfsc1', 'up'],
    ['neigh', 'add', TARGET, 'lladdr', TARGET_MAC, 'dev', 'mfsc0'],
  ]) await run('ip', args);

  const views = Array.from({ length: FLOWS }, (_, f) => {
    const frame = buildPacket({ src: '192.0.2.1', dst: '192.0.2.2', proto: 'udp', srcPort: 10_000 + f, dstPort: 53, payload: Buffer.alloc(INNER_PAYLOAD) });
    const view = new PacketView();
    decode(view, frame, frame.length, frame.length);
    return view;
  });
  const sender = anchor ? await afPacketSender(views) : await agentSender(dist, views);
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  for (let i = 0; i < COPIES; i += BATCH) {
    for (let k = 0; k < BATCH; k++) sender.copy(i + k);
    sender.flush();
  }
  const cpu = process.cpuUsage(cpu0);
  const seconds = (performance.now() - t0) / 1000;
  // ip, not /sys: sysfs still shows the namespace it was mounted in.
  const { stdout } = await run('ip', ['-s', '-j', 'link', 'show', 'mfsc1']);
  await sender.close();
  const cpuSeconds = (cpu.user + cpu.system) / 1e6;
  const arrived = (JSON.parse(stdout) as Array<{ stats64: { rx: { packets: number } } }>)[0]!.stats64.rx.packets;
  process.stdout.write(`${JSON.stringify({
    sender: dist, copies: COPIES, arrived,
    cpuSecondsPerMillion: Number((cpuSeconds / COPIES * 1e6).toFixed(2)),
    userSecondsPerMillion: Number((cpu.user / 1e6 / COPIES * 1e6).toFixed(2)),
    systemSecondsPerMillion: Number((cpu.system / 1e6 / COPIES * 1e6).toFixed(2)),
    copiesPerSecond: Math.round(COPIES / seconds),
  })}\n`);
}

await main();
