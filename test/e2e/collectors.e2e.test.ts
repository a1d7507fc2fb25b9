// End to end (root): the agent's IPFIX read by the collectors operators run, against the
// JSON records of the same traffic.
// - `mirrorflow replay` of a capture built here (TCP, UDP and ICMP of both families, both
//   directions, two windows) writes the JSON records with one flow log and exports the
//   same records with two more: to nfcapd, and to nfacctd with deploy/'s configuration
//   (pgsql plugin into a throwaway PostgreSQL, plus a print plugin).
// - A sink in this process adds what a replay cannot make: an ACCEPT/REJECT pair of one
//   5-tuple, NODATA and SKIPDATA.
// - nfdump (-o fmt, and -o long for the docs) and nfacctd's print show every record field
//   by field: times, flags, action, ICMP type/code, addresses, counters, the extensions.
// - PostgreSQL holds the same packets and bytes per 5-tuple as the JSON records.
// - softflowd exporting the same capture is a reference for counts, flags and addresses
//   (its times in pcap mode are meaningless, so they are not compared).
// - `replay` with no collector listening exits non-zero and says how many records did not leave.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { run } from '../../agent/exec.js';
import { PcapWriter } from '../../agent/capture/pcap-file.js';
import { buildPacket, DEFAULT_SRC_MAC } from '../helpers/build-packet.js';
import type { FlowRecord } from '../../agent/flow/record.js';
import { createSink } from '../../agent/sinks/sink.js';
import { AGENT_CLI, ensureBuilt } from './helpers/build.js';
import {
  freeUdpPort,
  PMACCT_DIR,
  pollUntil,
  startNfacctd,
  startNfcapd,
  startPostgres,
  type Nfacctd,
  type Nfcapd,
  type Postgres,
} from './helpers/collectors.js';

const WINDOW = 60;
const T0 = 1_764_626_400; // a multiple of 60
const PEN = 32473;
const COLLECTOR_TIMEOUT_MS = 20_000;
const RTT_UNKNOWN = 0xffffffff;
const LOG_STATUS: Record<string, number> = { OK: 0, NODATA: 1, SKIPDATA: 2 };
const END_REASON: Record<string, number> = { NODATA: 1, SKIPDATA: 5 };
const FORWARDING_STATUS: Record<string, number> = { ACCEPT: 64, REJECT: 129 };
const OBSERVATION_POINT: Record<string, number> = { ACCEPT: 1, REJECT: 2 };
const NFDUMP_FORMAT = '%tsr|%ter|%pr|%sa|%sp|%da|%dp|%it|%ic|%flg|%pkt|%byt|%in|%out|%dir|%opid|%end';

const quiet = pino({ level: 'silent' }, new Writable({ write: (_c, _e, cb) => cb() }));

interface Frame {
  frame: Buffer;
  tsUs: number;
}

/** Inbound frames carry the peer's MAC as source: `--local-mac` tells the directions apart. */
function inbound(frame: Buffer): Buffer {
  const f = Buffer.from(frame);
  frame.copy(f, 0, 6, 12);
  frame.copy(f, 6, 0, 6);
  return f;
}

/** The capture: conversations of both families, both directions, across two windows. */
function traffic(): Frame[] {
  const frames: Frame[] = [];
  let t = (T0 + 5) * 1e6;
  const add = (out: boolean, spec: Parameters<typeof buildPacket>[0], dtUs = 1000): void => {
    t += dtUs;
    const f = buildPacket(spec);
    frames.push({ frame: out ? f : inbound(f), tsUs: t });
  };
  for (const [a, b] of [['198.18.0.1', '198.18.0.2'], ['fd00::1', 'fd00::2']] as const) {
    const tcp = (out: boolean, tcpFlags: number, payload = 0) =>
      add(out, { src: out ? a : b, dst: out ? b : a, proto: 'tcp', srcPort: out ? 40000 : 80, dstPort: out ? 80 : 40000, tcpFlags, payload });
    tcp(true, 0x02);
    tcp(false, 0x12);
    tcp(true, 0x10);
    tcp(true, 0x18, 100);
    tcp(false, 0x10);
    tcp(false, 0x18, 1300);
    for (let i = 0; i < 3; i++) add(true, { src: a, dst: b, proto: 'udp', srcPort: 5353, dstPort: 53, payload: 40 + i });
    add(false, { src: b, dst: a, proto: 'udp', srcPort: 53, dstPort: 5353, payload: 200 });
    const v4 = a.includes('.');
    for (let i = 0; i < 2; i++) {
      add(true, { src: a, dst: b, proto: 'icmp', icmpType: v4 ? 8 : 128, payload: 56 });
      add(false, { src: b, dst: a, proto: 'icmp', icmpType: v4 ? 0 : 129, payload: 56 });
    }
    add(false, { src: b, dst: a, proto: 'icmp', icmpType: v4 ? 3 : 1, icmpCode: v4 ? 3 : 4, payload: 48 });
    // The next window: the connection ends, and one of the UDP flows goes on.
    t = Math.max(t, (T0 + WINDOW + 2) * 1e6);
    tcp(true, 0x11);
    tcp(false, 0x11);
    tcp(true, 0x10);
    add(true, { src: a, dst: b, proto: 'udp', srcPort: 5353, dstPort: 53, payload: 60 });
    t = (T0 + 5) * 1e6 + 500_000;
  }
  return frames.sort((x, y) => x.tsUs - y.tsUs);
}

/** What the replay cannot produce: ACCEPT and REJECT twins of one 5-tuple, NODATA, SKIPDATA. */
function craftedRecords(): FlowRecord[] {
  const base: FlowRecord = {
    version: 1, 'vswitch-id': null, 'vm-id': 'host-1', 'vpc-id': null, 'account-id': null, 'eni-id': 'lo',
    srcaddr: '198.18.7.1', srcport: 33000, dstaddr: '198.18.7.2', dstport: 22, protocol: 6, direction: 'in',
    packets: 12, bytes: 3456, start: T0, end: T0 + WINDOW, 'log-status': 'OK', action: 'ACCEPT', 'tcp-flags': 0x1b,
    'icmp-type': null, 'icmp-code': null, retrans: 1, 'zero-win': 0, 'rtt-us': 212, 'mirrored-packets': 12, 'mirror-session': 'ts-1',
  };
  const status: FlowRecord = {
    ...base, srcaddr: null, srcport: null, dstaddr: null, dstport: null, protocol: null, direction: null, packets: null, bytes: null,
    action: null, 'tcp-flags': null, retrans: null, 'zero-win': null, 'rtt-us': null, 'mirrored-packets': null, 'mirror-session': null,
    start: T0 + WINDOW, end: T0 + 2 * WINDOW,
  };
  return [
    base,
    { ...base, action: 'REJECT', packets: 3, bytes: 180, 'tcp-flags': 0x02, retrans: 0, 'rtt-us': null, 'mirrored-packets': 0, 'mirror-session': null },
    { ...status, 'log-status': 'NODATA' },
    { ...status, 'log-status': 'SKIPDATA', 'skipped-packets': 42 },
  ];
}

/** nfdump's flag string (CEUAPRSF, `.` for unset). */
function flagString(flags: number): string {
  return [...'CEUAPRSF'].map((c, i) => ((flags >> (7 - i)) & 1 ? c : '.')).join('');
}

const ok = (r: FlowRecord): boolean => r['log-status'] === 'OK';
const isIcmp = (r: FlowRecord): boolean => r['icmp-type'] !== null;

/** ifindex of a local interface as the sink reads it: a replayed capture's name maps to this host's interface of that name, 0 if none. */
async function hostIfindex(name: string): Promise<number> {
  return Number.parseInt(await readFile(`/sys/class/net/${name}/ifindex`, 'utf8').catch(() => '0'), 10);
}

/** A JSON record as nfdump's fmt line should show it. */
function asNfdump(r: FlowRecord, ifindex: number): string {
  if (!ok(r)) return [`${r.start}.000`, `${r.end}.000`, 0, '0.0.0.0', 0, '0.0.0.0', 0, 0, 0, '........', 0, 0, ifindex, 0, 'I', '0x0000000000', END_REASON[r['log-status']]].join('|');
  const icmp = isIcmp(r);
  return [
    `${r.start}.000`, `${r.end}.000`, r.protocol, r.srcaddr, r.srcport, r.dstaddr,
    icmp ? `${r['icmp-type']}.${r['icmp-code']}` : r.dstport, icmp ? r['icmp-type'] : 0, icmp ? r['icmp-code'] : 0,
    flagString(r['tcp-flags'] ?? 0), r.packets, r.bytes,
    r.direction === 'in' ? ifindex : 0, r.direction === 'out' ? ifindex : 0, r.direction === 'in' ? 'I' : 'E',
    `0x${OBSERVATION_POINT[r.action!]!.toString(16).padStart(10, '0')}`, 0,
  ].join('|');
}

/** A JSON record as nfacctd's print plugin should show it (the CSV columns of deploy's aggregate). */
function asPmacct(r: FlowRecord, ifindex: number): Record<string, string> {
  const iso = (s: number) => new Date(s * 1000).toISOString().replace('T', ' ').replace('Z', '000');
  const v6 = r.srcaddr?.includes(':') ?? false;
  const icmpTc = isIcmp(r) ? (r['icmp-type']! << 8) | r['icmp-code']! : 0;
  return {
    SRC_IP: r.srcaddr ?? '', DST_IP: r.dstaddr ?? '', SRC_PORT: String(r.srcport ?? 0), DST_PORT: String(r.dstport ?? 0),
    PROTOCOL: String(r.protocol ?? 0), TCP_FLAGS: String(r['tcp-flags'] ?? 0),
    IN_IFACE: String(ok(r) ? (r.direction === 'in' ? ifindex : 0) : ifindex), OUT_IFACE: String(r.direction === 'out' ? ifindex : 0),
    TIMESTAMP_START: iso(r.start), TIMESTAMP_END: iso(r.end),
    flow_dir: String(r.direction === 'out' ? 1 : 0),
    fwd_status: String(ok(r) ? FORWARDING_STATUS[r.action!] : 0), obs_point: String(ok(r) ? OBSERVATION_POINT[r.action!] : 0),
    icmp_type_code: String(v6 ? 0 : icmpTc), icmp6_type_code: String(v6 ? icmpTc : 0),
    retrans: String(r.retrans ?? 0), zero_win: String(r['zero-win'] ?? 0),
    rtt_us: String(ok(r) ? (r['rtt-us'] ?? RTT_UNKNOWN) : 0), mirrored_packets: String(r['mirrored-packets'] ?? 0),
    mirror_session: r['mirror-session'] ?? '', log_status: String(LOG_STATUS[r['log-status']]),
    skipped_packets: String(r['skipped-packets'] ?? 0),
    PACKETS: String(r.packets ?? 0), BYTES: String(r.bytes ?? 0),
  };
}

let dir: string;
let pcap: string;
let postgres: Postgres | undefined;
let nfcapd: Nfcapd | undefined;
let reference: Nfcapd | undefined;
let nfacctd: Nfacctd | undefined;
/** The replay's JSON records (the flow log with the file sink). */
let replayed: FlowRecord[];
/** ifindex the records of the replayed interface (eth0) and of the crafted ones (lo) carry. */
let eth0 = 0;
let lo = 0;
const crafted = craftedRecords();

beforeAll(async () => {
  await ensureBuilt();
  dir = await mkdtemp(join(tmpdir(), 'mf-collectors-e2e-'));
  pcap = join(dir, 'traffic.pcap');
  const w = new PcapWriter(pcap, 65535);
  for (const { frame, tsUs } of traffic()) w.write(frame, frame.length, frame.length, tsUs);
  await w.close();

  postgres = await startPostgres(join(dir, 'pg'));
  await postgres.query("CREATE ROLE mirrorflow LOGIN PASSWORD 'mirrorflow'");
  await postgres.query('CREATE DATABASE mirrorflow OWNER mirrorflow');
  await postgres.query(await readFile(join(PMACCT_DIR, 'mirrorflow.pgsql'), 'utf8'), 'mirrorflow', 'mirrorflow');
  [nfcapd, reference, nfacctd] = await Promise.all([
    startNfcapd(join(dir, 'nfcapd')),
    startNfcapd(join(dir, 'softflowd')),
    startNfacctd(join(dir, 'nfacctd'), postgres.port),
  ]);

  const jsonl = join(dir, 'flows.jsonl');
  const flowLog = (id: string, sink: unknown) => ({ id, sources: ['eth0'], window: WINDOW, sink });
  const config = {
    agent: { vmId: 'host-1', metrics: { listen: '' }, control: { socket: join(dir, 'control.sock') } },
    filters: [{ id: 'tf-all', ingressRules: [{ priority: 1, action: 'accept', protocol: 'ALL', sourceCidrBlock: '0.0.0.0/0', destinationCidrBlock: '0.0.0.0/0' }], egressRules: [] }],
    sessions: [{ id: 'ts-1', priority: 1, vni: 10, filterId: 'tf-all', sources: ['eth0'], target: { address: '192.0.2.50' } }],
    flowLogs: [
      flowLog('fl-json', { type: 'file', path: jsonl }),
      flowLog('fl-nfdump', { type: 'ipfix', collector: `127.0.0.1:${nfcapd.port}` }),
      flowLog('fl-pmacct', { type: 'ipfix', collector: `127.0.0.1:${nfacctd.port}` }),
    ],
  };
  const cfg = join(dir, 'config.json');
  await writeFile(cfg, JSON.stringify(config));
  const { stdout } = await run('node', [AGENT_CLI, 'replay', '--config', cfg, '--pcap', pcap, '--local-mac', DEFAULT_SRC_MAC]);
  const summary = JSON.parse(stdout) as { flowLogRecordsLost: Record<string, number> };
  expect(summary.flowLogRecordsLost).toEqual({ 'fl-json': 0, 'fl-nfdump': 0, 'fl-pmacct': 0 });
  replayed = (await readFile(jsonl, 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as FlowRecord);
  [eth0, lo] = await Promise.all([hostIfindex('eth0'), hostIfindex('lo')]);

  for (const port of [nfcapd.port, nfacctd.port]) {
    const sink = createSink({ type: 'ipfix', collector: `127.0.0.1:${port}`, enterpriseNumber: PEN, templateRefresh: 10 }, { logger: quiet, flowLogId: 'fl-crafted' });
    sink.write(crafted);
    await sink.close();
    expect(sink.stats).toMatchObject({ records: crafted.length, dropped: 0 });
  }
  await run('softflowd', ['-r', pcap, '-n', `127.0.0.1:${reference.port}`, '-v', '10', '-d']);
}, 120_000);

afterAll(async () => {
  await Promise.all([nfcapd?.stop(), reference?.stop(), nfacctd?.stop()]);
  await postgres?.stop();
  if (dir !== undefined && process.env.MIRRORFLOW_E2E_KEEP !== '1') await rm(dir, { recursive: true, force: true });
});

describe('IPFIX read by the collectors', () => {
  it('the replay covers what is compared: both families, TCP/UDP/ICMP, both directions, two windows', () => {
    expect(new Set(replayed.map((r) => `${r.srcaddr?.includes(':') ? 6 : 4}/${r.protocol}/${r.direction}`)).size).toBe(12);
    expect(new Set(replayed.map((r) => r.start))).toEqual(new Set([T0, T0 + WINDOW]));
    expect(replayed.filter(isIcmp).map((r) => `${r['icmp-type']}.${r['icmp-code']}`).sort()).toEqual(['0.0', '1.4', '128.0', '129.0', '3.3', '8.0']);
  });

  it('nfdump shows every record as the JSON has it: times, flags, action, ICMP type/code, counters, interface', async () => {
    const lines = await nfcapd!.dump(NFDUMP_FORMAT);
    const got = lines.map((l) => l.split('|').map((c) => c.trim()).join('|')).sort();
    const want = [...replayed.map((r) => asNfdump(r, eth0)), ...crafted.map((r) => asNfdump(r, lo))].sort();
    expect(got).toEqual(want);
    // The REJECT twin is what nfdump's observation point filter picks.
    const rejected = await run('nfdump', ['-R', join(dir, 'nfcapd'), '-q', '-N', '-o', 'fmt:%sa|%pkt', 'observation point id 2']);
    expect(rejected.stdout.split('\n').filter((l) => l.trim() !== '').map((l) => l.replace(/\s/g, ''))).toEqual(['198.18.7.1|3']);
  });

  it("nfacctd's print plugin shows every record field by field, the enterprise-specific extensions included", async () => {
    const want = [...replayed.map((r) => asPmacct(r, eth0)), ...crafted.map((r) => asPmacct(r, lo))];
    const rows = await pollUntil(() => nfacctd!.printed(), (r) => r.length >= want.length, COLLECTOR_TIMEOUT_MS);
    const keys = Object.keys(want[0]!);
    const pick = (r: Record<string, string>) => keys.map((k) => `${k}=${r[k]}`).join(' ');
    expect(rows.map(pick).sort()).toEqual(want.map(pick).sort());
  });

  it('PostgreSQL (nfacctd pgsql plugin, deploy/ schema) holds the packets and bytes of each 5-tuple the JSON records count', async () => {
    const key = (sa: string, sp: unknown, da: string, dp: unknown, pr: unknown, dir: unknown, fwd: unknown) => `${pr} ${sa}:${sp} > ${da}:${dp} dir=${dir} fwd=${fwd}`;
    const want = new Map<string, [number, number]>();
    for (const r of [...replayed, ...crafted].filter(ok)) {
      const k = key(r.srcaddr!, r.srcport, r.dstaddr!, r.dstport, r.protocol, r.direction === 'out' ? 1 : 0, FORWARDING_STATUS[r.action!]);
      const [p, b] = want.get(k) ?? [0, 0];
      want.set(k, [p + r.packets!, b + r.bytes!]);
    }
    const sql = `SELECT ip_src, port_src, ip_dst, port_dst, ip_proto, flow_dir, fwd_status, sum(packets), sum(bytes)
      FROM flows WHERE log_status = 0 GROUP BY 1, 2, 3, 4, 5, 6, 7`;
    const read = async () => new Map((await postgres!.query(sql, 'mirrorflow')).map(([sa, sp, da, dp, pr, d, f, p, b]) => [key(sa!, sp, da!, dp, pr, d, f), [Number(p), Number(b)] as [number, number]]));
    const got = await pollUntil(read, (m) => m.size >= want.size && [...want].every(([k, v]) => m.get(k)?.[0] === v[0]), COLLECTOR_TIMEOUT_MS);
    expect(Object.fromEntries(got)).toEqual(Object.fromEntries(want));
    const status = await postgres!.query('SELECT log_status, skipped_packets, packets FROM flows WHERE log_status > 0 ORDER BY 1', 'mirrorflow');
    expect(status).toEqual([['1', '0', ''], ['2', '42', '']]);
  });

  it('softflowd exporting the same capture counts the same packets, bytes and flags per 5-tuple', async () => {
    const lines = await reference!.dump('%pr|%sa|%sp|%da|%dp|%flg|%pkt|%byt');
    const sum = (rows: [string, number, number, number][]) => {
      const m = new Map<string, [number, number, number]>();
      for (const [k, p, b, f] of rows) {
        const [pp, bb, ff] = m.get(k) ?? [0, 0, 0];
        m.set(k, [pp + p, bb + b, ff | f]);
      }
      return Object.fromEntries(m);
    };
    const flagBits = (s: string) => [...s].reduce((n, c, i) => (c === '.' ? n : n | (1 << (7 - i))), 0);
    const got = sum(lines.map((l) => {
      const [pr, sa, sp, da, dp, flg, pkt, byt] = l.split('|').map((c) => c.trim());
      return [`${pr} ${sa}:${sp} > ${da}:${dp}`, Number(pkt), Number(byt), flagBits(flg!)];
    }));
    const want = sum(replayed.map((r) => [
      `${r.protocol} ${r.srcaddr}:${r.srcport} > ${r.dstaddr}:${isIcmp(r) ? `${r['icmp-type']}.${r['icmp-code']}` : r.dstport}`,
      r.packets!, r.bytes!, r['tcp-flags'] ?? 0,
    ]));
    expect(got).toEqual(want);
  });

  it('replay with no collector listening exits non-zero and says how many records did not leave', async () => {
    const port = await freeUdpPort();
    const cfg = join(dir, 'nowhere.json');
    const config = JSON.parse(await readFile(join(dir, 'config.json'), 'utf8')) as { flowLogs: unknown[] };
    config.flowLogs = [{ id: 'fl-nowhere', sources: ['eth0'], window: WINDOW, sink: { type: 'ipfix', collector: `127.0.0.1:${port}` } }];
    await writeFile(cfg, JSON.stringify(config));
    const res = await run('node', [AGENT_CLI, 'replay', '--config', cfg, '--pcap', pcap, '--local-mac', DEFAULT_SRC_MAC]).then(
      () => ({ code: 0, stderr: '' }),
      (err: { exitCode: number; stderr: string }) => ({ code: err.exitCode, stderr: err.stderr }),
    );
    expect(res.code).toBe(1);
    expect(res.stderr).toContain(`replay: ${replayed.length} flow log records did not reach their sink (fl-nowhere: ${replayed.length})`);
  }, 30_000);
});
