// The live VXLAN sender on real kernel sockets (loopback of the test's own namespace): what
// it counts as sent arrives, in order per flow, across batches larger than one sendmmsg
// arena; the source port is the flow's symmetric port (flowSourcePort, the same for both
// directions); the kernel's UDP stack accepts the datagrams (over IPv6 only with the right
// checksum, which the raw socket has the kernel fill in); a closed target port shows up as
// ECONNREFUSED send errors (read from the IP_RECVERR queue), for both families.
import dgram from 'node:dgram';
import { readFile } from 'node:fs/promises';
import { Writable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import pino from 'pino';
import { buildPacket } from '../helpers/build-packet.js';
import { decode } from '../../agent/packet/decode.js';
import { PacketView } from '../../agent/packet/view.js';
import { VxlanSender } from '../../agent/mirror/sender.js';
import { BudgetBucket, SessionBudget } from '../../agent/mirror/budget.js';
import { flowSourcePort, SOURCE_PORT_MAX, SOURCE_PORT_MIN } from '../../agent/mirror/flow-hash.js';

const logger = pino({ level: 'silent' }, new Writable({ write: (_c, _e, cb) => cb() }));
const VNI = 0x123456;
/** More copies than one batch holds (1024), sent without yielding. */
const COPIES = 3000;
const FLOWS = 40;
const FRAME_PAYLOAD = 200;

const families = [
  { family: 4 as const, type: 'udp4' as const, target: '127.0.0.1', src: '192.0.2.1', dst: '192.0.2.2' },
  { family: 6 as const, type: 'udp6' as const, target: '::1', src: '2001:db8::1', dst: '2001:db8::2' },
];

const open: { close(): unknown }[] = [];
afterEach(async () => {
  for (const o of open.splice(0)) await o.close();
});

/** A frame of flow f carrying sequence number seq in its payload. */
function frame(src: string, dst: string, flow: number, seq: number): Buffer {
  const payload = Buffer.alloc(FRAME_PAYLOAD);
  payload.writeUInt32BE(seq, 0);
  return buildPacket({ src, dst, proto: 'udp', srcPort: 10_000 + flow, dstPort: 53, payload });
}

/** Destination unreachable messages this namespace's kernel sent (/proc/net/snmp, /proc/net/snmp6). */
async function destinationUnreachableSent(family: 4 | 6): Promise<number> {
  if (family === 4) {
    const [names = '', values = ''] = (await readFile('/proc/net/snmp', 'utf8')).split('\n').filter((l) => l.startsWith('Icmp:'));
    return Number(values.split(/\s+/)[names.split(/\s+/).indexOf('OutDestUnreachs')]);
  }
  const line = (await readFile('/proc/net/snmp6', 'utf8')).split('\n').find((l) => l.startsWith('Icmp6OutDestUnreachs'));
  return Number(line?.split(/\s+/)[1]);
}

function viewOf(buf: Buffer): PacketView {
  const view = new PacketView();
  decode(view, buf, buf.length, buf.length);
  return view;
}

describe.each(families)('VxlanSender over IPv$family', ({ family, type, target, src, dst }) => {
  it('delivers every copy it counts, VXLAN-framed, in order per flow, from one stable port per flow', async () => {
    const receiver = dgram.createSocket({ type, recvBufferSize: 16 * 1024 * 1024 });
    open.push(receiver);
    await new Promise<void>((resolve) => receiver.bind(0, target, resolve));
    const got: { port: number; flow: number; seq: number; vni: number; flags: number; inner: number }[] = [];
    receiver.on('message', (msg, rinfo) => {
      const inner = msg.subarray(8);
      const v = viewOf(inner);
      got.push({ port: rinfo.port, flow: v.srcPort - 10_000, seq: inner.readUInt32BE(inner.length - FRAME_PAYLOAD), vni: msg.readUIntBE(4, 3), flags: msg[0]!, inner: inner.length });
    });
    const sender = await VxlanSender.open({ address: target, port: receiver.address().port, family, pathMtu: 1500, logger });
    open.push(sender);

    const frames = Array.from({ length: COPIES }, (_, i) => frame(src, dst, i % FLOWS, i));
    for (const f of frames) expect(sender.send(viewOf(f), VNI, 8500)).toBe(true);
    const deadline = Date.now() + 10_000;
    while (got.length < sender.packets && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));

    expect(sender.sendErrors).toBe(0);
    expect(sender.dropped).toBe(0);
    expect(sender.packets).toBe(COPIES);
    expect(got.length).toBe(COPIES);
    // SPEC §5: mirror_bytes_total counts the inner frames as sent, without the VXLAN header.
    expect(sender.bytes).toBe(got.reduce((sum, g) => sum + g.inner, 0));
    expect(got.every((g) => g.flags === 0x08 && g.vni === VNI && g.inner === frames[0]!.length)).toBe(true);
    const portOfFlow = new Map<number, number>();
    const lastSeq = new Map<number, number>();
    for (const g of got) {
      expect(g.port).toBeGreaterThanOrEqual(SOURCE_PORT_MIN);
      expect(g.port).toBeLessThanOrEqual(SOURCE_PORT_MAX);
      expect(portOfFlow.get(g.flow) ?? g.port).toBe(g.port);
      portOfFlow.set(g.flow, g.port);
      expect(g.seq).toBeGreaterThan(lastSeq.get(g.flow) ?? -1);
      lastSeq.set(g.flow, g.seq);
    }
    // Each flow's port is its symmetric port: the reply direction's frame maps to it too.
    for (const [flow, port] of portOfFlow) {
      expect(port, `flow ${flow}`).toBe(flowSourcePort(viewOf(frame(src, dst, flow, 0))));
      const reply = buildPacket({ src: dst, dst: src, proto: 'udp', srcPort: 53, dstPort: 10_000 + flow, payload: Buffer.alloc(FRAME_PAYLOAD) });
      expect(flowSourcePort(viewOf(reply)), `reply of flow ${flow}`).toBe(port);
    }
    expect(new Set(portOfFlow.values()).size).toBeGreaterThan(FLOWS / 2);
  });

  it('with a budget of 1000 pps, copies are charged at their capture times: a burst captured at once sends the bucket\'s 100, a backlog captured at 1000 pps and handed over at once sends all', async () => {
    const receiver = dgram.createSocket({ type, recvBufferSize: 16 * 1024 * 1024 });
    open.push(receiver);
    await new Promise<void>((resolve) => receiver.bind(0, target, resolve));
    let received = 0;
    receiver.on('message', () => received++);
    const budget = new SessionBudget(new BudgetBucket({ pps: 1000, bps: 0 }), new BudgetBucket({ pps: 0, bps: 0 }));
    const sender = await VxlanSender.open({ address: target, port: receiver.address().port, family, pathMtu: 1500, logger, budget });
    open.push(sender);
    const views = Array.from({ length: COPIES }, (_, i) => viewOf(frame(src, dst, i % FLOWS, i)));
    const burstAtUs = 1_700_000_000e6;
    let accepted = 0;
    for (const v of views) {
      v.tsUs = burstAtUs;
      if (sender.send(v, VNI, 8500)) accepted++;
    }
    // 100 ms of 1000 pps is the bucket's depth, and the copy whose cost ends exactly there.
    expect(accepted).toBe(100);
    expect(sender.budgetDrops).toBe(COPIES - 100);
    // A second later (the bucket full again), 1000 copies captured 1 ms apart, as a ring's
    // backlog reaches the sender: in one go, long after they arrived.
    const backlog = views.slice(0, 1000);
    backlog.forEach((v, i) => { v.tsUs = burstAtUs + 1e6 + i * 1000; });
    for (const v of backlog) if (sender.send(v, VNI, 8500)) accepted++;
    expect(accepted).toBe(1100);
    sender.flush();
    const deadline = Date.now() + 10_000;
    while (received < sender.packets && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    expect(sender.budgetDrops).toBe(COPIES - 100);
    expect(sender.packets).toBe(accepted);
    expect(received).toBe(accepted);
  });

  it('a target port nobody listens on: ICMP port unreachable comes back as ECONNREFUSED send errors', async () => {
    const probe = dgram.createSocket(type);
    await new Promise<void>((resolve) => probe.bind(0, target, resolve));
    const closedPort = probe.address().port;
    probe.close();
    const lines: string[] = [];
    const logged = pino({ level: 'warn' }, new Writable({ write: (c, _e, cb) => { lines.push(String(c)); cb(); } }));
    const sender = await VxlanSender.open({ address: target, port: closedPort, family, pathMtu: 1500, logger: logged });
    open.push(sender);
    const view = viewOf(frame(src, dst, 1, 1));
    const deadline = Date.now() + 10_000;
    // Loopback answers the first copies at once; the sender reads the error queue after its sends.
    while (sender.sendErrors === 0 && Date.now() < deadline) {
      sender.send(view, VNI, 8500);
      await new Promise((r) => setTimeout(r, 5));
    }
    expect(sender.sendErrors).toBeGreaterThan(0);
    expect(sender.packets).toBeGreaterThan(0);
    expect(lines.join('')).toMatch(/"err":"ECONNREFUSED \(Connection refused\)".*"msg":"mirror send failing"/);
  });
  it('ICMP errors about other UDP traffic of this host to the target are not counted as the sender\'s', async () => {
    const receiver = dgram.createSocket({ type, recvBufferSize: 1024 * 1024 });
    open.push(receiver);
    await new Promise<void>((resolve) => receiver.bind(0, target, resolve));
    let received = 0;
    receiver.on('message', () => received++);
    const probe = dgram.createSocket(type);
    await new Promise<void>((resolve) => probe.bind(0, target, resolve));
    const closedPort = probe.address().port;
    probe.close();
    const sender = await VxlanSender.open({ address: target, port: receiver.address().port, family, pathMtu: 1500, logger });
    open.push(sender);
    const view = viewOf(frame(src, dst, 1, 1));
    const icmpBefore = await destinationUnreachableSent(family);
    // Another socket's datagram to a closed port of the target draws a port unreachable,
    // which the kernel also queues on the sender's raw socket (same protocol and addresses).
    const other = dgram.createSocket(type);
    await new Promise<void>((resolve, reject) => other.send(Buffer.alloc(10), closedPort, target, (err) => (err ? reject(err) : resolve())));
    other.close();
    const deadline = Date.now() + 10_000;
    while ((await destinationUnreachableSent(family)) === icmpBefore && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    expect(await destinationUnreachableSent(family)).toBeGreaterThan(icmpBefore);
    for (let i = 0; i < 3; i++) sender.send(view, VNI, 8500);
    // close() flushes and reads the error queue.
    await sender.close();
    while (received < 3 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    expect(received).toBe(3);
    expect(sender.packets).toBe(3);
    expect(sender.sendErrors).toBe(0);
  });
});
