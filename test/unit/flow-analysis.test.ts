// `mirrorflow flows query|report` (docs/flow-analysis.md): the flows table over a current
// file and two rotations whose last line is cut, each ready report against the same
// figures computed here from the records themselves, the cloud guide's bandwidth query,
// the errors a user meets, and the command line.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { appendFile, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { JS } from '@duckdb/node-api';
import type { FlowRecord } from '../../agent/flow/record.js';
import { RECORD_FIELDS, recordLine } from '../../agent/sinks/jsonl-file.js';
import { FLOW_COLUMNS } from '../../agent/analysis/columns.js';
import { filesFromConfig, filesFromGlobs, FlowFilesError } from '../../agent/analysis/flow-files.js';
import { FlowQueryError, FlowTable } from '../../agent/analysis/flow-table.js';
import { jsonValue, writeRows } from '../../agent/analysis/output-format.js';
import { terminalProgress } from '../../agent/analysis/progress.js';
import { runOverview, runReport } from '../../agent/analysis/report-runner.js';
import { parseAddress, parseTime, reportNamed, type ReportFilters } from '../../agent/analysis/reports.js';
import { parseConfig } from '../../agent/config/load.js';
import { run } from '../../agent/exec.js';
import { AGENT_CLI, ensureBuilt } from '../e2e/helpers/build.js';
import { T0, WINDOW, writeFixture, type Fixture } from '../helpers/flow-fixture.js';

/** The guide's "bandwidth of an instance" query with DuckDB's function names (docs/flow-analysis.md). */
export const CLOUD_BANDWIDTH_QUERY = `SELECT strftime(t, '%H:%M:%S') AS time, dstaddr, SUM((bytes * 8) / ("end" - start)) AS bandwidth FROM (SELECT "end", start, dstaddr, bytes, to_timestamp(start - (start % 3600)) AS t FROM flows LIMIT 1000) GROUP BY time, dstaddr ORDER BY time ASC LIMIT 1000`;

type Row = Record<string, unknown>;

let fx: Fixture;
let table: FlowTable;

beforeAll(async () => {
  fx = await writeFixture();
  table = await FlowTable.open(await filesFromGlobs([`${fx.dir}/flowlog.jsonl*`]));
});

afterAll(async () => {
  table?.close();
  await rm(fx.dir, { recursive: true, force: true });
});

async function rowsOf(sql: string): Promise<Row[]> {
  const { columns, rows } = await table.all(sql);
  return rows.map((r) => Object.fromEntries(columns.map((c, i) => [c, jsonValue(r[i] as JS)])));
}

async function report(name: string, filters: Partial<ReportFilters> = {}): Promise<Row[]> {
  const { columns, rows } = await runReport(table, reportNamed(name), { limit: 10, ...filters });
  return rows.map((r) => Object.fromEntries(columns.map((c, i) => [c, jsonValue(r[i] as JS)])));
}

/** Groups records and folds each group; the map keeps first-seen order. */
function groupBy<T>(records: readonly FlowRecord[], key: (r: FlowRecord) => string, fold: (acc: T | undefined, r: FlowRecord) => T): Map<string, T> {
  const groups = new Map<string, T>();
  for (const r of records) groups.set(key(r), fold(groups.get(key(r)), r));
  return groups;
}

const ok = (rs: readonly FlowRecord[]): FlowRecord[] => rs.filter((r) => r['log-status'] === 'OK');
const byText = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

describe('the flows table', () => {
  it('has the record fields as columns, in record order, with their declared types', async () => {
    expect(FLOW_COLUMNS.map(([n]) => n)).toEqual(RECORD_FIELDS);
    const described = await rowsOf('DESCRIBE flows');
    expect(described.map((d) => [d.column_name, d.column_type])).toEqual([
      ...FLOW_COLUMNS.map(([n, t]) => [n, t]),
      ['start_time', 'TIMESTAMP WITH TIME ZONE'],
      ['end_time', 'TIMESTAMP WITH TIME ZONE'],
    ]);
  });

  it('reads every whole line of the current file and its rotations, and skips and counts the cut last line', async () => {
    expect(table.files.map((f) => f.path.slice(fx.dir.length + 1)).sort()).toEqual(['flowlog.jsonl', 'flowlog.jsonl.1', 'flowlog.jsonl.2']);
    expect(table.skipped).toEqual([{ path: fx.path, lines: 1 }]);
    const [all] = await rowsOf(`SELECT count(*) AS n, sum(bytes) AS bytes, sum("skipped-packets") AS skipped,
      count(*) FILTER (WHERE "log-status" = 'NODATA' AND srcaddr IS NULL AND bytes IS NULL) AS nodata FROM flows`);
    expect(all).toEqual({
      n: fx.records.length,
      bytes: fx.records.reduce((n, r) => n + (r.bytes ?? 0), 0),
      skipped: 22,
      nodata: fx.records.filter((r) => r['log-status'] === 'NODATA').length,
    });
    // The cut line carried 999999999 bytes: had it been read, the sum above would show it.
    expect(fx.cutLine).toContain('"version":1');
  });

  it('has start and end as epoch seconds and start_time/end_time as the same instants', async () => {
    const rows = await rowsOf(`SELECT start, "end", start_time, end_time FROM flows ORDER BY start LIMIT 1`);
    expect(rows[0]).toEqual({ start: T0, end: T0 + WINDOW, start_time: new Date(T0 * 1000).toISOString(), end_time: new Date((T0 + WINDOW) * 1000).toISOString() });
  });

  it("runs the cloud guide's bandwidth query with only DuckDB's function names swapped in", async () => {
    const got = await rowsOf(CLOUD_BANDWIDTH_QUERY);
    const groups = groupBy<{ time: string; dstaddr: string | null; bw: number | null }>(
      fx.records,
      (r) => `${r.start - (r.start % 3600)}|${r.dstaddr}`,
      (acc, r) => {
        const part = r.bytes === null ? null : (r.bytes * 8) / (r.end - r.start);
        const bw = acc?.bw == null ? part : part === null ? acc.bw : acc.bw + part;
        return { time: new Date((r.start - (r.start % 3600)) * 1000).toISOString().slice(11, 19), dstaddr: r.dstaddr, bw };
      },
    );
    expect(fx.records.length).toBeLessThan(1000); // the guide's inner LIMIT 1000 then takes every record
    const sortKey = (x: { time: string; dstaddr: string | null }): string => `${x.time}|${x.dstaddr ?? ''}`;
    const want = [...groups.values()].sort((a, b) => byText(sortKey(a), sortKey(b)));
    const have = got.map((g) => ({ time: g.time as string, dstaddr: g.dstaddr as string | null, bw: g.bandwidth as number | null })).sort((a, b) => byText(sortKey(a), sortKey(b)));
    expect(have.map((h) => [h.time, h.dstaddr])).toEqual(want.map((w) => [w.time, w.dstaddr]));
    have.forEach((h, i) => (want[i]!.bw === null ? expect(h.bw).toBeNull() : expect(h.bw).toBeCloseTo(want[i]!.bw!, 6)));
    expect(have.some((h) => h.dstaddr?.includes(':'))).toBe(true);
  });
});

describe('ready reports, against the same sums computed from the records', () => {
  it('top-talkers: bytes, packets and records per address pair', async () => {
    const want = [...groupBy<Row>(ok(fx.records), (r) => `${r.srcaddr} ${r.dstaddr}`, (a, r) => ({
      srcaddr: r.srcaddr, dstaddr: r.dstaddr,
      bytes: ((a?.bytes as number) ?? 0) + r.bytes!, packets: ((a?.packets as number) ?? 0) + r.packets!, records: ((a?.records as number) ?? 0) + 1,
    })).values()].sort((a, b) => (b.bytes as number) - (a.bytes as number) || byText(a.srcaddr as string, b.srcaddr as string) || byText(a.dstaddr as string, b.dstaddr as string));
    expect(await report('top-talkers')).toEqual(want.slice(0, 10));
    expect(await report('top-talkers', { limit: 3 })).toEqual(want.slice(0, 3));
  });

  it('top-talkers with --eni, --addr (IPv6, written in another form) and --since/--until', async () => {
    const since = T0 + 2 * WINDOW;
    const until = T0 + 4 * WINDOW;
    const addr = parseAddress('FD00:0:0:0::2');
    expect(addr).toBe('fd00::2');
    const sel = ok(fx.records).filter((r) => r['eni-id'] === 'eth0' && (r.srcaddr === addr || r.dstaddr === addr) && r.end > since && r.start < until);
    const want = [...groupBy<Row>(sel, (r) => `${r.srcaddr} ${r.dstaddr}`, (a, r) => ({
      srcaddr: r.srcaddr, dstaddr: r.dstaddr,
      bytes: ((a?.bytes as number) ?? 0) + r.bytes!, packets: ((a?.packets as number) ?? 0) + r.packets!, records: ((a?.records as number) ?? 0) + 1,
    })).values()].sort((a, b) => (b.bytes as number) - (a.bytes as number));
    expect(want).toHaveLength(2);
    expect(want[0]!.records).toBe(2);
    expect(await report('top-talkers', { eni: 'eth0', addr, since, until })).toEqual(want);
  });

  it('bandwidth: bit rate per window and destination, the destinations beyond --limit folded into (other)', async () => {
    const limit = 3;
    const totals = groupBy<number>(ok(fx.records), (r) => r.dstaddr!, (a, r) => (a ?? 0) + r.bytes!);
    const busiest = [...totals.entries()].sort((a, b) => b[1] - a[1] || byText(a[0], b[0])).slice(0, limit).map(([d]) => d);
    const want = groupBy<{ t: number; d: string; bw: number }>(ok(fx.records), (r) => `${r.start}|${busiest.includes(r.dstaddr!) ? r.dstaddr : '(other)'}`, (a, r) => ({
      t: r.start, d: busiest.includes(r.dstaddr!) ? r.dstaddr! : '(other)', bw: (a?.bw ?? 0) + (r.bytes! * 8) / (r.end - r.start),
    }));
    const got = await report('bandwidth', { limit });
    expect(got).toHaveLength(want.size);
    expect(new Set(got.map((g) => g.dstaddr))).toEqual(new Set([...busiest, '(other)']));
    for (const g of got) {
      const w = want.get(`${Date.parse(g.time as string) / 1000}|${g.dstaddr}`);
      expect(w, `${g.time} ${g.dstaddr}`).toBeDefined();
      expect(g.bandwidth as number).toBeCloseTo(w!.bw, 6);
    }
    // Ordered by time, then the biggest rate first.
    const order = got.map((g) => [Date.parse(g.time as string), -(g.bandwidth as number)] as const);
    expect(order).toEqual([...order].sort((a, b) => a[0] - b[0] || a[1] - b[1]));
  });

  it('rejected: REJECT records by port and protocol, with distinct sources', async () => {
    const rejected = ok(fx.records).filter((r) => r.action === 'REJECT');
    const want = [...groupBy<Row & { src: Set<string> }>(rejected, (r) => `${r.dstport}`, (a, r) => ({
      dstport: r.dstport, protocol: 'TCP', src: (a?.src ?? new Set<string>()).add(r.srcaddr!),
      packets: ((a?.packets as number) ?? 0) + r.packets!, bytes: ((a?.bytes as number) ?? 0) + r.bytes!, records: ((a?.records as number) ?? 0) + 1,
    })).values()].sort((a, b) => (b.packets as number) - (a.packets as number))
      .map(({ src, ...rest }) => ({ dstport: rest.dstport, protocol: rest.protocol, sources: src.size, packets: rest.packets, bytes: rest.bytes, records: rest.records }));
    expect(want.map((w) => [w.dstport, w.sources])).toEqual(expect.arrayContaining([[22, 2], [3389, 1]]));
    expect(await report('rejected')).toEqual(want);
  });

  it('tcp-health: retransmissions, zero windows and handshake RTT by peer', async () => {
    const tcp = ok(fx.records).filter((r) => r.protocol === 6);
    const peerOf = (r: FlowRecord): string => (r.direction === 'out' ? r.dstaddr! : r.srcaddr!);
    const want = [...groupBy<{ peer: string; packets: number; retrans: number; zw: number; rtts: number[] }>(tcp, peerOf, (a, r) => ({
      peer: peerOf(r), packets: (a?.packets ?? 0) + r.packets!, retrans: (a?.retrans ?? 0) + r.retrans!, zw: (a?.zw ?? 0) + r['zero-win']!,
      rtts: r['rtt-us'] === null ? (a?.rtts ?? []) : [...(a?.rtts ?? []), r['rtt-us']],
    })).values()].map((g) => ({
      peer: g.peer, packets: g.packets, retrans: g.retrans, 'retrans-pct': Math.round((10000 * g.retrans) / g.packets) / 100, 'zero-win': g.zw,
      'avg-rtt-us': g.rtts.length === 0 ? null : Math.round(g.rtts.reduce((x, y) => x + y, 0) / g.rtts.length),
      'max-rtt-us': g.rtts.length === 0 ? null : Math.max(...g.rtts),
    })).sort((a, b) => b.retrans - a.retrans || b['zero-win'] - a['zero-win'] || (b['max-rtt-us'] ?? -1) - (a['max-rtt-us'] ?? -1) || byText(a.peer, b.peer));
    const got = await report('tcp-health');
    expect(got.map((g) => g.peer)).toEqual(want.slice(0, 10).map((w) => w.peer));
    expect(got[0]!.peer).toBe('10.0.0.3'); // the peer the fixture gives five times the retransmissions
    got.forEach((g, i) => {
      const { 'retrans-pct': pct, ...rest } = want[i]!;
      expect(g).toMatchObject(rest);
      expect(g['retrans-pct'] as number).toBeCloseTo(pct, 2);
    });
  });

  it('gaps: NODATA and SKIPDATA windows and skipped packets per interface', async () => {
    const gaps = fx.records.filter((r) => r['log-status'] !== 'OK');
    const want = [...groupBy<Row>(gaps, (r) => r['eni-id'], (a, r) => ({
      'eni-id': r['eni-id'],
      'nodata-windows': ((a?.['nodata-windows'] as number) ?? 0) + (r['log-status'] === 'NODATA' ? 1 : 0),
      'skipdata-windows': ((a?.['skipdata-windows'] as number) ?? 0) + (r['log-status'] === 'SKIPDATA' ? 1 : 0),
      'skipped-packets': ((a?.['skipped-packets'] as number) ?? 0) + (r['skipped-packets'] ?? 0),
      'first-gap': new Date(Math.min(r.start, a === undefined ? Infinity : Date.parse(a['first-gap'] as string) / 1000) * 1000).toISOString(),
      'last-gap-end': new Date(Math.max(r.end, a === undefined ? 0 : Date.parse(a['last-gap-end'] as string) / 1000) * 1000).toISOString(),
    })).values()].sort((a, b) => byText(a['eni-id'] as string, b['eni-id'] as string));
    expect(want.map((w) => [w['eni-id'], w['nodata-windows'], w['skipdata-windows'], w['skipped-packets']])).toEqual([['eth0', 0, 1, 17], ['eth1', 2, 1, 5]]);
    expect(await report('gaps')).toEqual(want);
    // --addr does not hide gaps: those records have no address.
    expect(await report('gaps', { addr: '10.0.0.2' })).toEqual(want);
  });

  it('overview: record counts by status, bytes and time span', async () => {
    const o = await runOverview(table, { limit: 10 });
    expect(o).toMatchObject({
      records: fx.records.length, ok: ok(fx.records).length, nodata: 2, skipdata: 2,
      rejected: fx.records.filter((r) => r.action === 'REJECT').length, bytes: fx.records.reduce((n, r) => n + (r.bytes ?? 0), 0), interfaces: 2,
    });
    expect(o.first?.getTime()).toBe(T0 * 1000);
  });
});

describe('errors a user meets', () => {
  it('a bad column or statement names the problem, with a hint for the hyphenated names and "end"', async () => {
    await expect(table.all('SELECT nosuch FROM flows')).rejects.toThrow(/Referenced column "nosuch" not found/);
    await expect(table.all('SELECT log-status FROM flows')).rejects.toThrow(/hint: names with a hyphen must be quoted: "log-status"/);
    await expect(table.all('SELECT end FROM flows')).rejects.toThrow(/syntax error at or near "end"[\s\S]*hint: "end" is an SQL keyword/);
    await expect(table.all('SELEC 1')).rejects.toThrow(FlowQueryError);
    await expect(table.all('SELEC 1')).rejects.toThrow(/^Parser Error: syntax error at or near "SELEC"/);
  });

  it('a glob that matches nothing is named; a config without file sinks or files says so', async () => {
    await expect(filesFromGlobs([`${fx.dir}/flowlog.jsonl`, `${fx.dir}/nothing-*.jsonl`])).rejects.toThrow(new FlowFilesError(`--files ${fx.dir}/nothing-*.jsonl: matches no file`));
    const stdoutOnly = parseConfig('flowLogs: [{ id: fl-1, sources: [eth0], sink: { type: stdout } }]\n');
    await expect(filesFromConfig(stdoutOnly, 'c.yaml')).rejects.toThrow(/c.yaml: no flow log has a file sink/);
    const missing = parseConfig(`flowLogs: [{ id: fl-1, sources: [eth0], sink: { type: file, path: ${fx.dir}/none.jsonl } }]\n`);
    await expect(filesFromConfig(missing, 'c.yaml')).rejects.toThrow(`flowLogs[0] (fl-1): ${fx.dir}/none.jsonl`);
  });

  it('the config names the current file and its rotations up to keep', async () => {
    const config = parseConfig(`flowLogs: [{ id: fl-1, sources: [eth0], sink: { type: file, path: ${fx.path}, keep: 5 } }]\n`);
    expect((await filesFromConfig(config, 'c.yaml')).map((f) => f.path)).toEqual([fx.path, `${fx.path}.1`, `${fx.path}.2`]);
  });

  it('a malformed line inside a finished file is an error naming the file and line', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'mirrorflow-flows-bad-'));
    try {
      const path = join(dir, 'bad.jsonl');
      await writeFile(path, `${recordLine(fx.records[0]!)}{"version":1,"bytes":\n${recordLine(fx.records[1]!)}`);
      const bad = await FlowTable.open(await filesFromGlobs([path]));
      try {
        await expect(bad.all('SELECT count(*) FROM flows')).rejects.toThrow(new RegExp(`Malformed JSON in file "${path}", at byte \\d+ in line \\d+`));
      } finally {
        bad.close();
      }
      await writeFile(path, `${recordLine({ ...fx.records[0]!, bytes: 'many' as unknown as number })}`);
      const wrongType = await FlowTable.open(await filesFromGlobs([path]));
      try {
        await expect(wrongType.all('SELECT sum(bytes) FROM flows')).rejects.toThrow(/in file ".*bad.jsonl", in line 1: Failed to cast value to numerical: "many"/);
      } finally {
        wrongType.close();
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('a file that grows a partial line while open is then read up to its last whole line', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'mirrorflow-flows-live-'));
    try {
      const path = join(dir, 'live.jsonl');
      await writeFile(path, fx.records.slice(0, 5).map(recordLine).join(''));
      const live = await FlowTable.open(await filesFromGlobs([path]));
      try {
        expect(live.skipped).toEqual([]);
        // The writer's append, seen half done.
        await appendFile(path, `${recordLine(fx.records[5]!)}${recordLine(fx.records[6]!).slice(0, 40)}`);
        const { rows } = await live.all('SELECT count(*) FROM flows');
        expect(Number(rows[0]![0])).toBe(6);
        expect(live.skipped).toEqual([{ path, lines: 1 }]);
      } finally {
        live.close();
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('filters refuse what they cannot read', () => {
    expect(() => parseTime('--since', 'yesterday')).toThrow(/--since yesterday: not a time/);
    expect(parseTime('--since', '2h', Date.UTC(2025, 11, 1, 12))).toBe(Date.UTC(2025, 11, 1, 10) / 1000);
    expect(parseTime('--until', '2025-12-01T00:10:00Z')).toBe(T0 + 600);
    expect(() => parseAddress('10.0.0.256')).toThrow(/--addr 10.0.0.256: not an IPv4 or IPv6 address/);
    expect(() => reportNamed('talkers')).toThrow(/no report named talkers \(reports: top-talkers, bandwidth, rejected, tcp-health, gaps\)/);
  });
});

describe('output', () => {
  async function render(format: 'table' | 'csv' | 'json', sql: string): Promise<string> {
    const r = await table.stream(sql);
    let text = '';
    await writeRows(format, r.columns, r.types, r.rows, (t) => (text += t));
    return text;
  }

  it('writes tables, CSV and JSON lines', async () => {
    const sql = `SELECT "eni-id", count(*) AS records, min(start_time) AS first FROM flows GROUP BY "eni-id" ORDER BY "eni-id"`;
    const per = (eni: string): number => fx.records.filter((r) => r['eni-id'] === eni).length;
    const first = new Date(T0 * 1000).toISOString().replace('.000Z', 'Z');
    expect(await render('csv', sql)).toBe(`eni-id,records,first\neth0,${per('eth0')},${first}\neth1,${per('eth1')},${first}\n`);
    expect((await render('json', sql)).trim().split('\n').map((l) => JSON.parse(l) as unknown)).toEqual([
      { 'eni-id': 'eth0', records: per('eth0'), first: new Date(T0 * 1000).toISOString() },
      { 'eni-id': 'eth1', records: per('eth1'), first: new Date(T0 * 1000).toISOString() },
    ]);
    expect(await render('table', sql)).toBe([
      `eni-id  records  first`,
      `------  -------  --------------------`,
      `eth0    ${String(per('eth0')).padStart(7)}  ${first}`,
      `eth1    ${String(per('eth1')).padStart(7)}  ${first}`,
      `(2 rows)`, ``,
    ].join('\n'));
  });

  it('shows progress on a terminal only, and only after a second', () => {
    let now = 0;
    const written: string[] = [];
    const tty = { isTTY: true, write: (s: string) => written.push(s) } as unknown as NodeJS.WriteStream;
    const p = terminalProgress(tty, 'scanning 3 flow log files (1 MB)', () => now);
    now = 900;
    p.update(40);
    expect(written).toEqual([]);
    now = 1500;
    p.update(42.4);
    expect(written).toEqual(['\rscanning 3 flow log files (1 MB): 42%  (2 s)\x1b[K']);
    p.done();
    expect(written[1]).toBe('\r\x1b[K');
    const pipe = { isTTY: false, write: (s: string) => written.push(s) } as unknown as NodeJS.WriteStream;
    const q = terminalProgress(pipe, 'x', () => now);
    now = 5000;
    q.update(50);
    q.done();
    expect(written).toHaveLength(2);
  });
});

describe('the command line', () => {
  beforeAll(ensureBuilt, 120_000);

  async function cli(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
    try {
      const { stdout, stderr } = await run(process.execPath, [AGENT_CLI, ...args]);
      return { code: 0, stdout, stderr };
    } catch (err) {
      const e = err as { exitCode: number; stdout: string; stderr: string };
      return { code: e.exitCode, stdout: e.stdout, stderr: e.stderr };
    }
  }

  it('flows query over --config reads the sink files and warns about the skipped line', async () => {
    const config = join(fx.dir, 'mirrorflow.yaml');
    await writeFile(config, `flowLogs: [{ id: fl-1, sources: [eth0], sink: { type: file, path: ${fx.path}, keep: 3 } }]\n`);
    const r = await cli('flows', 'query', '--config', config, '--format', 'csv', `SELECT count(*) AS n FROM flows WHERE "log-status" = 'NODATA'`);
    expect(r).toEqual({ code: 0, stdout: 'n\n2\n', stderr: `flows: skipped 1 incomplete line in ${fx.path} (a file being written, or cut by a crash)\n` });
  });

  it('flows query exits 1 with the engine\'s message; a glob matching nothing is named', async () => {
    const bad = await cli('flows', 'query', 'SELECT "log-statu" FROM flows', '--files', `${fx.dir}/flowlog.jsonl*`);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/flows query: Binder Error: Referenced column "log-statu" not found/);
    const none = await cli('flows', 'query', 'SELECT 1', '--files', `${fx.dir}/*.gz`);
    expect(none).toMatchObject({ code: 1, stderr: `flows query: --files ${fx.dir}/*.gz: matches no file\n` });
  });

  it('flows report --show-sql prints the SQL with the filters filled in, and the SQL runs as flows query', async () => {
    const shown = await cli('flows', 'report', 'rejected', '--show-sql', '--eni', 'eth1', '--since', String(T0 + WINDOW));
    expect(shown.code).toBe(0);
    expect(shown.stdout).toContain(`"eni-id" = 'eth1'`);
    expect(shown.stdout).toContain(`"end" > ${T0 + WINDOW}`);
    const viaQuery = await cli('flows', 'query', '--format', 'json', shown.stdout, '--files', `${fx.dir}/flowlog.jsonl*`);
    const viaReport = await cli('flows', 'report', 'rejected', '--format', 'json', '--eni', 'eth1', '--since', String(T0 + WINDOW), '--files', `${fx.dir}/flowlog.jsonl*`);
    expect(viaQuery.code).toBe(0);
    expect(viaQuery.stdout).toBe(viaReport.stdout);
    const rows = viaReport.stdout.trim().split('\n').map((l) => JSON.parse(l) as { packets: number });
    const want = fx.records.filter((r) => r.action === 'REJECT' && r['eni-id'] === 'eth1' && r.end > T0 + WINDOW).reduce((n, r) => n + r.packets!, 0);
    expect(rows.reduce((n, r) => n + r.packets, 0)).toBe(want);
  });
});
