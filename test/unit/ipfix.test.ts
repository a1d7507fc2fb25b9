// IPFIX exporter against a UDP socket on loopback. Messages are decoded here with a small
// RFC 7011 reader that learns the templates from the wire (not from the exporter's
// tables), enterprise-specific and variable-length fields included: header fields,
// sequence numbers, packing under the message limit, templates on the first message /
// after the refresh interval / after an error, NODATA and SKIPDATA records, and a
// collector that is down, comes up, or goes away for good (no record lost uncounted).
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import dgram from 'node:dgram';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import type { FlowRecord } from '../../agent/flow/record.js';
import { createSink, type FlowSink } from '../../agent/sinks/sink.js';

const WAIT_MS = 10_000;
const IE = {
  octetDeltaCount: 1,
  packetDeltaCount: 2,
  protocolIdentifier: 4,
  tcpControlBits: 6,
  sourceTransportPort: 7,
  sourceIPv4Address: 8,
  ingressInterface: 10,
  destinationTransportPort: 11,
  destinationIPv4Address: 12,
  egressInterface: 14,
  sourceIPv6Address: 27,
  destinationIPv6Address: 28,
  icmpTypeCodeIPv4: 32,
  flowDirection: 61,
  forwardingStatus: 89,
  flowEndReason: 136,
  observationPointId: 138,
  icmpTypeCodeIPv6: 139,
  flowStartMilliseconds: 152,
  flowEndMilliseconds: 153,
} as const;
const PEN = 32473;
/** Enterprise-specific elements, keyed as `PEN:id` by the reader. */
const EE = {
  retrans: `${PEN}:1`,
  zeroWin: `${PEN}:2`,
  rttUs: `${PEN}:3`,
  mirroredPackets: `${PEN}:4`,
  mirrorSession: `${PEN}:5`,
  logStatus: `${PEN}:6`,
  skippedPackets: `${PEN}:7`,
} as const;
const VARIABLE = 0xffff;
const IPFIX = (collector: string, over: { enterpriseNumber?: number; templateRefresh?: number } = {}) =>
  ({ type: 'ipfix', collector, enterpriseNumber: PEN, templateRefresh: 10, ...over }) as const;

interface Message {
  version: number;
  length: number;
  exportTime: number;
  sequence: number;
  domain: number;
  /** Template ids announced in this message. */
  templates: number[];
  /** Data records, each a map of element id (`PEN:id` when enterprise-specific) → value (numbers, or address text). */
  records: Map<number | string, number | string>[];
  size: number;
}

/** Reads messages in arrival order, remembering templates across messages as a collector does. */
class Reader {
  private readonly templates = new Map<number, [number | string, number][]>();

  read(buf: Buffer): Message {
    const m: Message = {
      version: buf.readUInt16BE(0),
      length: buf.readUInt16BE(2),
      exportTime: buf.readUInt32BE(4),
      sequence: buf.readUInt32BE(8),
      domain: buf.readUInt32BE(12),
      templates: [],
      records: [],
      size: buf.length,
    };
    let off = 16;
    while (off < m.length) {
      const setId = buf.readUInt16BE(off);
      const setLen = buf.readUInt16BE(off + 2);
      const end = off + setLen;
      let p = off + 4;
      if (setId === 2) {
        while (p + 4 <= end) {
          const id = buf.readUInt16BE(p);
          const count = buf.readUInt16BE(p + 2);
          p += 4;
          const fields: [number | string, number][] = [];
          for (let i = 0; i < count; i++, p += 4) {
            const id = buf.readUInt16BE(p);
            if (id & 0x8000) {
              fields.push([`${buf.readUInt32BE(p + 4)}:${id & 0x7fff}`, buf.readUInt16BE(p + 2)]);
              p += 4;
            } else fields.push([id, buf.readUInt16BE(p + 2)]);
          }
          this.templates.set(id, fields);
          m.templates.push(id);
        }
      } else {
        const fields = this.templates.get(setId);
        if (fields === undefined) throw new Error(`data set ${setId} before its template`);
        const minLen = fields.reduce((n, [, len]) => n + (len === VARIABLE ? 1 : len), 0);
        while (p + minLen <= end) {
          const rec = new Map<number | string, number | string>();
          for (const [id, fieldLen] of fields) {
            if (fieldLen === VARIABLE) {
              const n = buf[p]!;
              rec.set(id, buf.toString('utf8', p + 1, p + 1 + n));
              p += 1 + n;
              continue;
            }
            const len = fieldLen;
            const v = buf.subarray(p, p + len);
            if (len === 4 && (id === IE.sourceIPv4Address || id === IE.destinationIPv4Address)) rec.set(id, [...v].join('.'));
            else if (len === 16) rec.set(id, v.toString('hex'));
            else rec.set(id, len === 8 ? Number(v.readBigUInt64BE()) : v.readUIntBE(0, len));
            p += len;
          }
          m.records.push(rec);
        }
      }
      off = end;
    }
    return m;
  }
}

function record(n: number, over: Partial<FlowRecord> = {}): FlowRecord {
  return {
    version: 1,
    'vswitch-id': null,
    'vm-id': 'host-1',
    'vpc-id': null,
    'account-id': null,
    'eni-id': 'lo',
    srcaddr: `10.1.${n >> 8}.${n & 255}`,
    srcport: 10000 + n,
    dstaddr: '10.2.0.1',
    dstport: 443,
    protocol: 6,
    direction: 'in',
    packets: n + 1,
    bytes: 5_000_000_000 + n,
    start: 1700000400,
    end: 1700000460,
    'log-status': 'OK',
    action: 'ACCEPT',
    'tcp-flags': 0x1b,
    'icmp-type': null,
    'icmp-code': null,
    retrans: 0,
    'zero-win': 0,
    'rtt-us': null,
    'mirrored-packets': null,
    'mirror-session': null,
    ...over,
  };
}

const NODATA: FlowRecord = {
  ...record(0),
  srcaddr: null,
  srcport: null,
  dstaddr: null,
  dstport: null,
  protocol: null,
  direction: null,
  packets: null,
  bytes: null,
  'log-status': 'NODATA',
  action: null,
  'tcp-flags': null,
  retrans: null,
  'zero-win': null,
};

const logger = pino({ level: 'silent' }, new Writable({ write: (_c, _e, cb) => cb() }));

/** A logger whose lines land in `into`, parsed. */
function capturingLogger<T>(into: T[]) {
  return pino(
    { level: 'info' },
    new Writable({
      write(chunk: Buffer, _e, cb) {
        into.push(JSON.parse(chunk.toString('utf8')) as T);
        cb();
      },
    }),
  );
}

async function waitFor(what: string, cond: () => boolean, timeoutMs = WAIT_MS): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

interface Collector {
  port: number;
  messages: Message[];
  records(): Map<number | string, number | string>[];
  close(): Promise<void>;
}

function bindCollector(port = 0): Promise<Collector> {
  const socket = dgram.createSocket('udp4');
  const reader = new Reader();
  const messages: Message[] = [];
  let open = true;
  socket.on('message', (buf) => messages.push(reader.read(buf)));
  socket.on('close', () => (open = false));
  return new Promise((resolve) => {
    socket.bind(port, '127.0.0.1', () =>
      resolve({
        port: socket.address().port,
        messages,
        records: () => messages.flatMap((m) => m.records),
        close: () => new Promise((r) => (open ? socket.close(() => r()) : r())),
      }),
    );
  });
}

let collector: Collector;
let sink: FlowSink | undefined;

beforeEach(async () => {
  collector = await bindCollector();
});

afterEach(async () => {
  vi.useRealTimers();
  await sink?.close();
  sink = undefined;
  await collector.close();
});

describe('ipfix sink', () => {
  it('encodes every field of the JSON record: flows of both families, ICMP, the extensions, NODATA and SKIPDATA', async () => {
    sink = createSink(IPFIX(`127.0.0.1:${collector.port}`, { enterpriseNumber: 4242 }), { logger, flowLogId: 'fl-1' });
    const v4 = record(1, { direction: 'in', 'eni-id': 'lo', action: 'ACCEPT', 'tcp-flags': 0x12, retrans: 3, 'zero-win': 1, 'rtt-us': 212, 'mirrored-packets': 2, 'mirror-session': 'ts-1' });
    const v6 = record(2, {
      srcaddr: '2001:db8::1',
      dstaddr: 'fd00::2',
      direction: 'out',
      'eni-id': 'no-such-if0',
      action: 'REJECT',
      protocol: 58,
      srcport: 0,
      dstport: 0,
      'icmp-type': 1,
      'icmp-code': 4,
      'tcp-flags': null,
      retrans: null,
      'zero-win': null,
    });
    const icmp4 = record(3, { protocol: 1, srcport: 0, dstport: 0, 'icmp-type': 8, 'icmp-code': 0, 'tcp-flags': null, retrans: null, 'zero-win': null });
    const skip: FlowRecord = { ...NODATA, 'log-status': 'SKIPDATA', 'skipped-packets': 42 };
    sink.write([v4, v6, icmp4, NODATA, skip]);
    await sink.flush();
    await waitFor('5 records', () => collector.records().length === 5);
    const [m] = collector.messages;
    expect(m).toMatchObject({ version: 10, sequence: 0, templates: [256, 257, 258] });
    expect(m!.length).toBe(m!.size);
    expect(Math.abs(m!.exportTime - Date.now() / 1000)).toBeLessThan(5);
    const [a, b, c, n, k] = collector.records().map((r) => Object.fromEntries(r));
    const pen = (id: string) => id.replace(`${PEN}:`, '4242:');
    expect(a).toEqual({
      [IE.sourceIPv4Address]: v4.srcaddr,
      [IE.destinationIPv4Address]: v4.dstaddr,
      [IE.sourceTransportPort]: v4.srcport,
      [IE.destinationTransportPort]: v4.dstport,
      [IE.protocolIdentifier]: 6,
      [IE.tcpControlBits]: 0x12,
      [IE.flowDirection]: 0,
      [IE.packetDeltaCount]: v4.packets,
      [IE.octetDeltaCount]: v4.bytes,
      [IE.flowStartMilliseconds]: v4.start * 1000,
      [IE.flowEndMilliseconds]: v4.end * 1000,
      [IE.ingressInterface]: 1, // lo is ifindex 1 in every namespace
      [IE.egressInterface]: 0,
      [IE.forwardingStatus]: 64,
      [IE.observationPointId]: 1,
      [IE.icmpTypeCodeIPv4]: 0,
      [pen(EE.retrans)]: 3,
      [pen(EE.zeroWin)]: 1,
      [pen(EE.rttUs)]: 212,
      [pen(EE.mirroredPackets)]: 2,
      [pen(EE.mirrorSession)]: 'ts-1',
    });
    expect(b).toMatchObject({
      [IE.sourceIPv6Address]: '20010db8000000000000000000000001',
      [IE.destinationIPv6Address]: 'fd000000000000000000000000000002',
      [IE.protocolIdentifier]: 58,
      [IE.tcpControlBits]: 0,
      [IE.flowDirection]: 1,
      [IE.ingressInterface]: 0,
      [IE.egressInterface]: 0,
      [IE.forwardingStatus]: 129,
      [IE.observationPointId]: 2,
      [IE.icmpTypeCodeIPv6]: (1 << 8) | 4,
      [pen(EE.rttUs)]: 0xffffffff,
      [pen(EE.mirroredPackets)]: 0,
      [pen(EE.mirrorSession)]: '',
    });
    expect(c).toMatchObject({ [IE.protocolIdentifier]: 1, [IE.icmpTypeCodeIPv4]: 8 << 8, [IE.destinationTransportPort]: 0 });
    const status = { [IE.flowStartMilliseconds]: NODATA.start * 1000, [IE.flowEndMilliseconds]: NODATA.end * 1000, [IE.ingressInterface]: 1 };
    expect(n).toEqual({ ...status, [IE.flowEndReason]: 1, [pen(EE.logStatus)]: 1, [pen(EE.skippedPackets)]: 0 });
    expect(k).toEqual({ ...status, [IE.flowEndReason]: 5, [pen(EE.logStatus)]: 2, [pen(EE.skippedPackets)]: 42 });
    expect(sink.stats).toMatchObject({ records: 5, bytes: m!.size, errors: 0, skipped: 0, pending: 0 });
  });

  it('packs messages under the limit; sequence = data records sent before each message', async () => {
    const maxMessageBytes = 600;
    sink = createSink(IPFIX(`127.0.0.1:${collector.port}`), { logger, flowLogId: 'fl-1', maxMessageBytes });
    const mixed = Array.from({ length: 300 }, (_, i) => (i % 7 === 3 ? record(i, { srcaddr: `2001:db8::${i.toString(16)}`, dstaddr: '2001:db8::ffff' }) : record(i)));
    sink.write(mixed);
    await sink.flush();
    await waitFor('300 records', () => collector.records().length === 300);
    expect(collector.messages.length).toBeGreaterThan(300 / (maxMessageBytes / 49));
    let sent = 0;
    for (const m of collector.messages) {
      expect(m.size).toBeLessThanOrEqual(maxMessageBytes);
      expect(m.sequence).toBe(sent);
      sent += m.records.length;
    }
    expect(collector.records().map((r) => r.get(IE.sourceTransportPort))).toEqual(mixed.map((r) => r.srcport));
    expect(collector.messages.filter((m) => m.templates.length > 0)).toHaveLength(1);
    // Full messages: none could have taken another IPv6 record (the largest, 85 bytes incl. a set header).
    for (const m of collector.messages.slice(0, -1)) expect(m.size + 85).toBeGreaterThan(maxMessageBytes);
  });

  it('skips records whose addresses do not parse, and counts them', async () => {
    sink = createSink(IPFIX(`127.0.0.1:${collector.port}`), { logger, flowLogId: 'fl-1' });
    sink.write([record(1), record(9, { srcaddr: 'not-an-address' }), record(2), record(3, { dstaddr: '2001:db8::1' })]);
    await sink.flush();
    await waitFor('2 records', () => collector.records().length === 2);
    expect(sink.stats).toMatchObject({ records: 2, skipped: 2, pending: 0 });
    expect(collector.records().map((r) => r.get(IE.sourceTransportPort))).toEqual([10001, 10002]);
  });

  it('sends templates again once the refresh interval has passed', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    const t0 = Date.UTC(2024, 0, 1);
    vi.setSystemTime(t0);
    sink = createSink(IPFIX(`127.0.0.1:${collector.port}`, { templateRefresh: 30 }), { logger, flowLogId: 'fl-1' });
    const times = [0, 10_000, 29_999, 30_000, 45_000, 60_001];
    for (const [i, dt] of times.entries()) {
      vi.setSystemTime(t0 + dt);
      sink.write([record(i)]);
      await sink.flush();
      await waitFor(`message ${i}`, () => collector.messages.length === i + 1);
    }
    expect(collector.messages.map((m) => m.templates.length > 0)).toEqual([true, false, false, true, false, true]);
    expect(collector.messages.map((m) => m.exportTime)).toEqual(times.map((dt) => Math.floor((t0 + dt) / 1000)));
  });

  it('keeps records while the collector is down (ICMP port unreachable) and delivers each once it is up, templates first', async () => {
    const port = collector.port;
    await collector.close();
    const logs: { msg: string; code?: string }[] = [];
    sink = createSink(IPFIX(`127.0.0.1:${port}`), { logger: capturingLogger(logs), flowLogId: 'fl-1', retryMinMs: 20, retryMaxMs: 50, errorWaitMs: 100 });
    sink.write([record(0)]);
    await waitFor('the first error', () => sink!.stats.errors === 1);
    sink.write([record(1), record(2)]);
    // While it is down only template probes go out: errors keep coming, records stay queued.
    await waitFor('probes refused', () => sink!.stats.errors >= 3);
    expect(sink.stats).toMatchObject({ dropped: 0, pending: 3 });
    collector = await bindCollector(port);
    sink.write([record(3)]);
    await sink.flush();
    await waitFor('the records after the outage', () => collector.records().length === 4);
    // The collector hears templates (a probe, then with the first data) before any data record.
    expect(collector.messages[0]!.templates).toEqual([256, 257, 258]);
    expect(collector.messages[0]!.records).toEqual([]);
    const firstData = collector.messages.find((m) => m.records.length > 0)!;
    expect(firstData.templates).toEqual([256, 257, 258]);
    expect(collector.records().map((r) => r.get(IE.sourceTransportPort))).toEqual([10000, 10001, 10002, 10003]);
    expect(sink.stats).toMatchObject({ dropped: 0, pending: 0 });
    expect(logs.map((l) => l.msg)).toEqual(['flow log sink failing; records kept and retried', 'flow log sink recovered']);
    expect(logs[0]!.code).toBe('ECONNREFUSED');
  });

  it('sends again what was in flight when the collector went away between two messages', async () => {
    sink = createSink(IPFIX(`127.0.0.1:${collector.port}`), { logger, flowLogId: 'fl-1', retryMinMs: 20, retryMaxMs: 50, errorWaitMs: 1000 });
    sink.write([record(0), record(1)]);
    await waitFor('the first message', () => collector.records().length === 2);
    // Restarted within the error window: the first message may be lost with the old process
    // for all the sink knows, so it goes again, after templates.
    const port = collector.port;
    await collector.close();
    sink.write([record(2)]);
    await waitFor('the refusal', () => sink!.stats.errors === 1);
    collector = await bindCollector(port);
    await sink.flush();
    await waitFor('every record again', () => collector.records().length === 3);
    expect(collector.messages[0]!.templates).toEqual([256, 257, 258]);
    expect(collector.records().map((r) => r.get(IE.sourceTransportPort))).toEqual([10000, 10001, 10002]);
    expect(sink.stats).toMatchObject({ errors: 1, dropped: 0, pending: 0 });
  });

  it('counts and logs as dropped what never reached a collector that stayed down', async () => {
    const port = collector.port;
    await collector.close();
    const logs: { msg: string; dropped?: number }[] = [];
    sink = createSink(IPFIX(`127.0.0.1:${port}`), {
      logger: capturingLogger(logs), flowLogId: 'fl-1', retryMinMs: 20, retryMaxMs: 50, errorWaitMs: 100, closeTimeoutMs: 500,
    });
    sink.write(Array.from({ length: 40 }, (_, i) => record(i)));
    await waitFor('the first error', () => sink!.stats.errors >= 1);
    await sink.close();
    expect(sink.stats).toMatchObject({ dropped: 40, pending: 0 });
    expect(logs.filter((l) => l.dropped !== undefined).reduce((n, l) => n + l.dropped!, 0)).toBe(40);
  });

  it('exports to an IPv6 collector', async () => {
    const rx = dgram.createSocket('udp6');
    const got: Buffer[] = [];
    rx.on('message', (m) => got.push(m));
    await new Promise<void>((resolve) => rx.bind(0, '::1', () => resolve()));
    try {
      sink = createSink(IPFIX(`[::1]:${rx.address().port}`), { logger, flowLogId: 'fl-1' });
      sink.write([record(1), record(2)]);
      await sink.flush();
      await waitFor('a message', () => got.length === 1);
      expect(new Reader().read(got[0]!).records).toHaveLength(2);
    } finally {
      rx.close();
    }
  });

  it('uses one observation domain per flow log id', async () => {
    sink = createSink(IPFIX(`127.0.0.1:${collector.port}`), { logger, flowLogId: 'fl-1' });
    const other = createSink(IPFIX(`127.0.0.1:${collector.port}`), { logger, flowLogId: 'fl-2' });
    sink.write([record(1)]);
    other.write([record(2)]);
    await Promise.all([sink.flush(), other.flush()]);
    await other.close();
    await waitFor('2 messages', () => collector.messages.length === 2);
    const domains = new Set(collector.messages.map((m) => m.domain));
    expect(domains.size).toBe(2);
  });
});
