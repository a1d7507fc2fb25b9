// The ready reports: questions an operator asks of flow logs, each one SQL statement
// over the `flows` table that `--show-sql` prints as it runs (filters filled in), so any
// of them can be copied into `mirrorflow flows query` and changed.
import { formatIp, parseIp } from '../packet/address.js';
import { literal } from './columns.js';

export interface ReportFilters {
  /** Seconds since the epoch: records whose window ends after it. */
  since?: number;
  /** Seconds since the epoch: records whose window starts before it. */
  until?: number;
  eni?: string;
  /** Records with this source or destination address. */
  addr?: string;
  /** Rows a ranking report keeps (series a chart keeps, for bandwidth). */
  limit: number;
}

export type ReportName = 'top-talkers' | 'bandwidth' | 'rejected' | 'tcp-health' | 'gaps';

export interface Report {
  name: ReportName;
  title: string;
  /** What the report shows, for a reader who never saw the tool. */
  explains: string;
  sql(f: ReportFilters): string;
}

export class ReportFilterError extends Error {}

/** Conditions of the filters, as SQL; `addresses` false for reports on records without addresses (NODATA, SKIPDATA). */
export function conditions(f: ReportFilters, addresses = true): string[] {
  const c: string[] = [];
  if (f.since !== undefined) c.push(`"end" > ${f.since}`);
  if (f.until !== undefined) c.push(`start < ${f.until}`);
  if (f.eni !== undefined) c.push(`"eni-id" = ${literal(f.eni)}`);
  if (addresses && f.addr !== undefined) c.push(`(srcaddr = ${literal(f.addr)} OR dstaddr = ${literal(f.addr)})`);
  return c;
}

function where(first: string, f: ReportFilters, addresses = true): string {
  return `WHERE ${[first, ...conditions(f, addresses)].join('\n  AND ')}`;
}

const PROTOCOL_NAME = `CASE protocol WHEN 1 THEN 'ICMP' WHEN 6 THEN 'TCP' WHEN 17 THEN 'UDP' WHEN 58 THEN 'ICMPv6' ELSE protocol::VARCHAR END`;

export const REPORTS: readonly Report[] = [
  {
    name: 'top-talkers',
    title: 'Top talkers',
    explains: 'The source and destination address pairs that moved the most bytes, summed over all interfaces, directions and windows.',
    sql: (f) => `SELECT srcaddr, dstaddr, sum(bytes) AS bytes, sum(packets) AS packets, count(*) AS records
FROM flows
${where(`"log-status" = 'OK'`, f)}
GROUP BY srcaddr, dstaddr
ORDER BY bytes DESC, srcaddr, dstaddr
LIMIT ${f.limit}`,
  },
  {
    name: 'bandwidth',
    title: 'Bandwidth over time by destination',
    explains: 'Average bit rate towards each destination address in each capture window: bytes × 8 ÷ window length, summed over the records of the window (the busiest destinations by name, the rest as "(other)").',
    // The cloud guides' query (sum(bytes*8/("end"-start)) ... group by time, dstaddr),
    // with the destinations beyond the busiest few folded together so a chart stays legible.
    sql: (f) => `WITH busiest AS (
  SELECT dstaddr FROM flows
  ${where(`"log-status" = 'OK'`, f).replaceAll('\n', '\n  ')}
  GROUP BY dstaddr ORDER BY sum(bytes) DESC, dstaddr LIMIT ${f.limit}
)
SELECT to_timestamp(start) AS time,
       CASE WHEN dstaddr IN (SELECT dstaddr FROM busiest) THEN dstaddr ELSE '(other)' END AS dstaddr,
       sum(bytes * 8 / ("end" - start)) AS bandwidth
FROM flows
${where(`"log-status" = 'OK'`, f)}
GROUP BY time, 2
ORDER BY time, bandwidth DESC, dstaddr`,
  },
  {
    name: 'rejected',
    title: 'Rejected traffic by port',
    explains: "Traffic the host's own packet filter dropped (action REJECT), by destination port and protocol: how much, and from how many source addresses.",
    sql: (f) => `SELECT dstport, ${PROTOCOL_NAME} AS protocol,
       count(DISTINCT srcaddr) AS sources, sum(packets) AS packets, sum(bytes) AS bytes, count(*) AS records
FROM flows
${where(`action = 'REJECT' AND "log-status" = 'OK'`, f)}
GROUP BY dstport, protocol
ORDER BY packets DESC, dstport, protocol
LIMIT ${f.limit}`,
  },
  {
    name: 'tcp-health',
    title: 'TCP health hot spots',
    explains: 'TCP peers (the remote address of each record) ranked by retransmitted segments, then zero-window advertisements; with the handshake round-trip time where a handshake was seen.',
    sql: (f) => `SELECT CASE direction WHEN 'out' THEN dstaddr ELSE srcaddr END AS peer,
       sum(packets) AS packets, sum(retrans) AS retrans,
       round(100.0 * sum(retrans) / nullif(sum(packets), 0), 2) AS "retrans-pct",
       sum("zero-win") AS "zero-win",
       round(avg("rtt-us"))::BIGINT AS "avg-rtt-us", max("rtt-us") AS "max-rtt-us"
FROM flows
${where(`protocol = 6 AND "log-status" = 'OK'`, f)}
GROUP BY peer
ORDER BY retrans DESC, "zero-win" DESC, "max-rtt-us" DESC NULLS LAST, peer
LIMIT ${f.limit}`,
  },
  {
    name: 'gaps',
    title: 'Gaps per interface (NODATA, SKIPDATA)',
    explains: 'Capture windows in which an interface saw no traffic at all (NODATA) or lost packets to capture drops or a full flow table (SKIPDATA, with the packets skipped). The address filter does not apply: these records have no addresses.',
    sql: (f) => `SELECT "eni-id",
       count(*) FILTER (WHERE "log-status" = 'NODATA') AS "nodata-windows",
       count(*) FILTER (WHERE "log-status" = 'SKIPDATA') AS "skipdata-windows",
       coalesce(sum("skipped-packets"), 0) AS "skipped-packets",
       min(start_time) AS "first-gap", max(end_time) AS "last-gap-end"
FROM flows
${where(`"log-status" IN ('NODATA', 'SKIPDATA')`, f, false)}
GROUP BY "eni-id"
ORDER BY "eni-id"`,
  },
];

export function reportNamed(name: string): Report {
  const report = REPORTS.find((r) => r.name === name);
  if (report === undefined) throw new ReportFilterError(`no report named ${name} (reports: ${REPORTS.map((r) => r.name).join(', ')})`);
  return report;
}

const RELATIVE = /^(\d+)([smhd])$/;
const UNIT_SECONDS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86400 };

/** --since/--until: an ISO 8601 time, seconds since the epoch, or a span back from now (30m, 6h, 2d). */
export function parseTime(option: string, text: string, nowMs = Date.now()): number {
  const rel = RELATIVE.exec(text);
  if (rel !== null) return Math.floor(nowMs / 1000) - Number(rel[1]) * UNIT_SECONDS[rel[2]!]!;
  if (/^\d+$/.test(text)) return Number(text);
  const ms = Date.parse(text);
  if (Number.isNaN(ms)) throw new ReportFilterError(`${option} ${text}: not a time (use ISO 8601 like 2026-12-01T10:00Z, epoch seconds, or 30m/6h/2d back from now)`);
  return Math.floor(ms / 1000);
}

/** --addr: one IPv4 or IPv6 address, in the form the records write it (agent/packet/address.ts, RFC 5952). */
export function parseAddress(text: string): string {
  const ip = parseIp(text);
  if (ip === undefined) throw new ReportFilterError(`--addr ${text}: not an IPv4 or IPv6 address`);
  return formatIp(ip);
}

/** --eni: an interface name (no quoting games: letters, digits and . _ - : @). */
export function parseInterface(text: string): string {
  if (!/^[A-Za-z0-9_.:@-]{1,64}$/.test(text)) throw new ReportFilterError(`--eni ${text}: not an interface name`);
  return text;
}
