// End to end (root): what leaves the sinks, read by tools other than ours.
// - IPFIX: tcpdump captures the exporter's datagrams on loopback and tshark's IPFIX
//   dissector decodes them; every decoded data record (NODATA too) must equal its JSON record, the
//   messages must stay under the limit, and sequence numbers must follow RFC 7011.
// - IPFIX against a collector that refuses every data message (iptables in a namespace of
//   the test's own): each record is sent 5 times, then counted as dropped and logged.
// - JSON lines file: the compiled sink runs in its own process, rotating fast, and is
//   killed with SIGKILL mid-stream; rotated files hold only whole lines, and a sink that
//   opens the file again continues after the last whole line, so the files hold one
//   unbroken run of records.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { forEachFrame } from '../../agent/capture/pcap-file.js';
import { run, spawnProcess } from '../../agent/exec.js';
import type { FlowRecord } from '../../agent/flow/record.js';
import { createSink, type SinkStats } from '../../agent/sinks/sink.js';
import { ensureBuilt, REPO_ROOT } from './helpers/build.js';

const LISTEN_TIMEOUT_MS = 5000;
const ARRIVAL_TIMEOUT_MS = 10_000;
const MAX_MESSAGE_BYTES = 1400;
const IPFIX_TEMPLATE_SET = '2';
const FIRST_DATA_SET = 256;
/** forwardingStatus as tshark splits it: status/reason (1/0 forwarded, unknown; 2/1 dropped, ACL deny), and observationPointId. */
const FORWARDING: Record<string, string> = { ACCEPT: '1/0', REJECT: '2/1' };
const OBSERVATION_POINT: Record<string, number> = { ACCEPT: 1, REJECT: 2 };
const END_REASON: Record<string, number> = { NODATA: 1, SKIPDATA: 5 };
const TCP_FLAG_BITS = [1, 2, 4, 8, 16, 32];

const quiet = pino({ level: 'silent' }, new Writable({ write: (_c, _e, cb) => cb() }));

let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mf-sinks-e2e-'));
});

afterAll(async () => {
  if (process.env.MIRRORFLOW_E2E_KEEP !== '1') await rm(dir, { recursive: true, force: true });
});

/** Varied records: IPv4 and IPv6, TCP/UDP/ICMP, both directions, both actions, counters past 2^32, the odd NODATA. */
function sampleRecords(count: number): FlowRecord[] {
  return Array.from({ length: count }, (_, i): FlowRecord => {
    const v6 = i % 5 === 2;
    const base: FlowRecord = {
      version: 1,
      'vswitch-id': 'vsw-lab',
      'vm-id': 'host-1',
      'vpc-id': 'vpc-lab',
      'account-id': '1234567890',
      'eni-id': 'lo',
      srcaddr: v6 ? `2001:db8:${i.toString(16)}::1` : `192.0.2.${i % 250}`,
      srcport: (i * 7919) % 65536,
      dstaddr: v6 ? 'fd00::beef' : `198.51.100.${(i * 3) % 250}`,
      dstport: i % 3 === 0 ? 443 : 53,
      protocol: i % 3 === 0 ? 6 : 17,
      'icmp-type': null,
      'icmp-code': null,
      direction: i % 2 === 0 ? 'in' : 'out',
      packets: i * 1000 + 1,
      bytes: i * 2_000_003 + (i % 4 === 0 ? 2 ** 33 : 0),
      start: 1700000400 + i * 60,
      end: 1700000460 + i * 60,
      'log-status': 'OK',
      action: i % 4 === 1 ? 'REJECT' : 'ACCEPT',
      'tcp-flags': i % 3 === 0 ? TCP_FLAG_BITS.filter((_, b) => (i >> b) & 1).reduce((a, b) => a | b, 0) : 0,
      retrans: 0,
      'zero-win': 0,
      'rtt-us': null,
      'mirrored-packets': null,
      'mirror-session': null,
    };
    if (i % 11 === 5) return { ...base, protocol: v6 ? 58 : 1, srcport: 0, dstport: 0, 'icmp-type': i % 256, 'icmp-code': i % 7, 'tcp-flags': null };
    if (i % 17 !== 16) return base;
    return { ...base, srcaddr: null, srcport: null, dstaddr: null, dstport: null, protocol: null, direction: null, packets: null, bytes: null, action: null, 'tcp-flags': null, 'log-status': 'NODATA' };
  });
}

type Tree = { [key: string]: string | Tree };

interface DecodedMessage {
  len: number;
  sequence: number;
  hasTemplates: boolean;
  flows: Tree[];
}

/** tshark's reading of each IPFIX message in the capture. */
async function tsharkIpfix(file: string, port: number): Promise<DecodedMessage[]> {
  const { stdout } = await run('tshark', ['-r', file, '-n', '-d', `udp.port==${port},cflow`, '-T', 'json']);
  const packets = JSON.parse(stdout) as { _source: { layers: { cflow: Tree } } }[];
  return packets.map(({ _source: { layers } }) => {
    const cflow = layers.cflow;
    const sets = Object.entries(cflow).filter(([k]) => k.startsWith('Set ')).map(([, v]) => v as Tree);
    return {
      len: Number(cflow['cflow.len']),
      sequence: Number(cflow['cflow.sequence']),
      hasTemplates: sets.some((s) => s['cflow.flowset_id'] === IPFIX_TEMPLATE_SET),
      flows: sets
        .filter((s) => Number(s['cflow.flowset_id']) >= FIRST_DATA_SET)
        .flatMap((s) => Object.entries(s).filter(([k]) => k.startsWith('Flow ')).map(([, v]) => v as Tree)),
    };
  });
}

/** tshark prints absolute times as "Nov 14, 2023 22:20:00.000000000 UTC". */
function tsharkSeconds(text: string | Tree | undefined): number {
  return Date.parse(String(text).replace(/\.\d+ /, ' ')) / 1000;
}

function forwardingOf(t: Tree): string {
  return `${t['cflow.forwarding_status']}/${t['cflow.forwarding_status_forward_code'] ?? t['cflow.forwarding_status_drop_code']}`;
}

/** A decoded flow in the JSON record's terms. */
function asRecordFields(f: Tree): Record<string, unknown> {
  const times = f['cflow.timedelta_tree'] as Tree;
  if (f['cflow.srcaddr'] === undefined && f['cflow.srcaddrv6'] === undefined) {
    return { start: tsharkSeconds(times['cflow.abstimestart']), end: tsharkSeconds(times['cflow.abstimeend']), ingress: Number(f['cflow.inputint']), endReason: Number(f['cflow.flow_end_reason']) };
  }
  const icmp4 = f['cflow.icmp_type_code_ipv4'] === undefined ? undefined : Number(f['cflow.icmp_type_code_ipv4']);
  const icmp = icmp4 !== undefined ? [icmp4 >> 8, icmp4 & 0xff] : [Number(f['cflow.icmp_ipv6_type']), Number(f['cflow.icmp_ipv6_code'])];
  return {
    srcaddr: f['cflow.srcaddr'] ?? f['cflow.srcaddrv6'],
    dstaddr: f['cflow.dstaddr'] ?? f['cflow.dstaddrv6'],
    srcport: Number(f['cflow.srcport']),
    dstport: Number(f['cflow.dstport']),
    protocol: Number(f['cflow.protocol']),
    packets: Number(f['cflow.packets']),
    bytes: Number(f['cflow.octets']),
    'tcp-flags': Number(f['cflow.tcpflags']),
    direction: f['cflow.direction'] === '0' ? 'in' : 'out',
    start: tsharkSeconds(times['cflow.abstimestart']),
    end: tsharkSeconds(times['cflow.abstimeend']),
    ingress: Number(f['cflow.inputint']),
    egress: Number(f['cflow.outputint']),
    forwarding: forwardingOf(f['Forwarding Status'] as Tree),
    observationPoint: Number(f['cflow.observation_point_id']),
    icmp,
  };
}

function expectedFields(r: FlowRecord): Record<string, unknown> {
  // Every sample record is on lo, ifindex 1.
  if (r['log-status'] !== 'OK') return { start: r.start, end: r.end, ingress: 1, endReason: END_REASON[r['log-status']] };
  return {
    srcaddr: r.srcaddr,
    dstaddr: r.dstaddr,
    srcport: r.srcport,
    dstport: r.dstport,
    protocol: r.protocol,
    packets: r.packets,
    bytes: r.bytes,
    'tcp-flags': r['tcp-flags'] ?? 0,
    direction: r.direction,
    start: r.start,
    end: r.end,
    ingress: r.direction === 'in' ? 1 : 0,
    egress: r.direction === 'out' ? 1 : 0,
    forwarding: FORWARDING[r.action ?? ''],
    observationPoint: OBSERVATION_POINT[r.action ?? ''],
    icmp: [r['icmp-type'] ?? 0, r['icmp-code'] ?? 0],
  };
}

/** Whole frames in a capture file tcpdump is still writing (a record cut short is not yet one). */
async function framesIn(file: string): Promise<number> {
  let frames = 0;
  await forEachFrame(file, () => frames++).catch(() => undefined);
  return frames;
}

describe('IPFIX sink, decoded by tshark', () => {
  it('every data record tshark decodes equals its JSON record; messages < 1400 bytes; RFC 7011 sequence numbers', async () => {
    const collector = dgram.createSocket('udp4');
    await new Promise<void>((resolve) => collector.bind(0, '127.0.0.1', () => resolve()));
    const port = collector.address().port;
    let datagrams = 0;
    let received = 0;
    collector.on('message', (msg) => {
      datagrams++;
      received += msg.length;
    });
    const file = join(dir, 'ipfix.pcap');
    // -s 2048: a message is < 1400 bytes. In immediate mode libpcap's ring has one snap-length
    // slot per packet: at the default 256 KiB its 2 MiB hold 8, and the sink's burst of 26
    // datagrams lost 2-4 of them in CI (kernel drops, not a late stop).
    const capture = spawnProcess('tcpdump', ['-i', 'lo', '-n', '-U', '--immediate-mode', '-s', '2048', '-w', file, 'udp', 'and', 'dst', 'port', String(port)]);
    try {
      await capture.waitForLine(/listening on/, LISTEN_TIMEOUT_MS, { stream: 'stderr' });
      const sink = createSink({ type: 'ipfix', collector: `127.0.0.1:${port}`, enterpriseNumber: 32473, templateRefresh: 10 }, { logger: quiet, flowLogId: 'fl-ipfix' });
      const records = sampleRecords(400);
      sink.write(records.slice(0, 150));
      sink.write(records.slice(150));
      await sink.close();
      expect(sink.stats).toMatchObject({ records: records.length, skipped: 0, errors: 0, dropped: 0 });
      const until = Date.now() + ARRIVAL_TIMEOUT_MS;
      while (received < sink.stats.bytes) {
        if (Date.now() > until) throw new Error(`only ${datagrams} datagrams arrived`);
        await new Promise((r) => setTimeout(r, 10));
      }
      // tcpdump writes each packet as it reads it, but on a loaded host it reads late: a
      // SIGTERM now would lose the datagrams still in its socket.
      while ((await framesIn(file)) < datagrams) {
        if (Date.now() > until) throw new Error(`tcpdump wrote ${await framesIn(file)} of ${datagrams} datagrams`);
        await new Promise((r) => setTimeout(r, 10));
      }
    } finally {
      await capture.stop('SIGTERM');
      collector.close();
    }

    const messages = await tsharkIpfix(file, port);
    const records = sampleRecords(400);
    expect(messages.length).toBe(datagrams);
    expect(messages[0]!.hasTemplates).toBe(true);
    let before = 0;
    for (const m of messages) {
      expect(m.len).toBeLessThanOrEqual(MAX_MESSAGE_BYTES);
      expect(m.sequence).toBe(before);
      before += m.flows.length;
    }
    expect(messages.flatMap((m) => m.flows).map(asRecordFields)).toEqual(records.map(expectedFields));
  });
});

describe('IPFIX sink against a collector that refuses every data message', () => {
  it('sends each record 5 times, then counts it as dropped and logs it; template probes alone draw no error', async () => {
    // A namespace of its own whose INPUT silently drops the small template-only probes (so
    // the collector seems back each time) and answers every data message with ICMP port
    // unreachable, as a collector that keeps going away would. (In OUTPUT the send itself
    // would fail with EPERM, a different path.)
    const ns = `ipfix-${randomBytes(3).toString('hex')}`;
    const port = 4739;
    const records = 20;
    await run('ip', ['netns', 'add', ns]);
    try {
      await run('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
      const rule = (...args: string[]) => run('ip', ['netns', 'exec', ns, 'iptables', '-A', 'INPUT', '-i', 'lo', '-p', 'udp', '--dport', String(port), ...args]);
      await rule('-m', 'length', '--length', '0:300', '-j', 'DROP');
      await rule('-j', 'REJECT', '--reject-with', 'icmp-port-unreachable');
      const sinkModule = join(REPO_ROOT, 'dist/agent/sinks/sink.js');
      const child = `
        const { createSink } = await import(${JSON.stringify(sinkModule)});
        const { pino } = await import('pino');
        const lost = [];
        const logger = pino({ level: 'error' }, { write: (l) => lost.push(JSON.parse(l).dropped) });
        const sink = createSink({ type: 'ipfix', collector: '127.0.0.1:${port}', enterpriseNumber: 32473, templateRefresh: 10 },
          { logger, flowLogId: 'fl-refused', retryMinMs: 10, retryMaxMs: 20, errorWaitMs: 100, closeTimeoutMs: 20000 });
        const base = ${JSON.stringify(sampleRecords(1)[0])};
        sink.write(Array.from({ length: ${records} }, (_, i) => ({ ...base, srcport: i })));
        await sink.close();
        console.log(JSON.stringify({ stats: sink.stats, lost }));`;
      await ensureBuilt();
      const { stdout } = await run('ip', ['netns', 'exec', ns, 'node', '--input-type=module', '-e', child], { cwd: REPO_ROOT, timeoutMs: 30_000 });
      const { stats, lost } = JSON.parse(stdout) as { stats: SinkStats; lost: number[] };
      expect(stats).toMatchObject({ dropped: records, pending: 0, records: 5 * records });
      expect(stats.errors).toBeGreaterThanOrEqual(5);
      expect(lost.reduce((a, b) => a + b, 0)).toBe(records);
    } finally {
      await run('ip', ['netns', 'del', ns]);
    }
  });
});

describe('JSON lines file sink under SIGKILL', () => {
  it('leaves only whole lines, and a reopened sink continues the unbroken run', async () => {
    await ensureBuilt();
    const path = join(dir, 'kill/flow.jsonl');
    const sinkModule = join(REPO_ROOT, 'dist/agent/sinks/sink.js');
    // The child writes records numbered by `packets` forever, rotating every 16 KiB (~2 rotations per batch).
    const child = `
      const { createSink } = await import(${JSON.stringify(sinkModule)});
      const { pino } = await import('pino');
      const sink = createSink({ type: 'file', path: ${JSON.stringify(path)}, maxBytes: 16384, keep: 20 },
        { logger: pino({ level: 'silent' }), flowLogId: 'fl-kill' });
      const base = ${JSON.stringify(sampleRecords(1)[0])};
      for (let n = 0; ; ) {
        const batch = [];
        for (let i = 0; i < 97; i++) batch.push({ ...base, packets: n++ });
        sink.write(batch);
        await sink.flush();
        console.log('written ' + n);
      }`;
    const proc = spawnProcess('node', ['--input-type=module', '-e', child], { cwd: REPO_ROOT });
    await proc.waitForLine(/^written \d+/, ARRIVAL_TIMEOUT_MS, { count: 60 });
    proc.child.kill('SIGKILL');
    await proc.exited;

    const files = async (): Promise<string[]> => {
      const names = await readdir(join(dir, 'kill'));
      const rotated = names.filter((n) => /^flow\.jsonl\.\d+$/.test(n)).map((n) => Number(n.split('.').pop()));
      return [...rotated.sort((a, b) => b - a).map((i) => `${path}.${i}`), path];
    };
    const rotatedFiles = (await files()).slice(0, -1);
    expect(rotatedFiles.length).toBe(20);
    for (const f of rotatedFiles) {
      const text = await readFile(f, 'utf8');
      expect(text.endsWith('\n')).toBe(true);
      for (const line of text.slice(0, -1).split('\n')) expect(() => JSON.parse(line) as unknown).not.toThrow();
    }

    // The current file may end in a line cut by the kill (no newline yet); the reopened sink
    // removes it and continues after the last whole record.
    const current = await readFile(path, 'utf8');
    const wholeText = current.includes('\n') ? current : await readFile(rotatedFiles.at(-1)!, 'utf8');
    const lastWhole = JSON.parse(wholeText.slice(0, wholeText.lastIndexOf('\n')).split('\n').pop()!) as FlowRecord;
    const next = lastWhole.packets! + 1;
    const sink = createSink({ type: 'file', path, maxBytes: 16384, keep: 20 }, { logger: quiet, flowLogId: 'fl-kill' });
    sink.write(sampleRecords(50).map((r, i) => ({ ...r, packets: next + i })));
    await sink.close();
    const after: number[] = [];
    for (const f of await files()) {
      const text = await readFile(f, 'utf8');
      expect(text.endsWith('\n')).toBe(true);
      for (const line of text.slice(0, -1).split('\n')) after.push((JSON.parse(line) as FlowRecord).packets!);
    }
    // Oldest files rotated away; what is kept is one gap-free run ending with the new records.
    const first = after[0]!;
    expect(after).toEqual(Array.from({ length: next + 50 - first }, (_, i) => first + i));
  });
});
