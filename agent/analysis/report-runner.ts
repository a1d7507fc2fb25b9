// Runs the ready reports (and the overview the page opens with) over a flow table.
import type { JS } from '@duckdb/node-api';
import type { FlowTable, ProgressListener } from './flow-table.js';
import { conditions, type Report, type ReportFilters } from './reports.js';

export interface ReportResult {
  report: Report;
  sql: string;
  columns: string[];
  types: string[];
  rows: JS[][];
}

export interface Overview {
  sql: string;
  records: number;
  ok: number;
  nodata: number;
  skipdata: number;
  rejected: number;
  bytes: number;
  interfaces: number;
  first: Date | null;
  last: Date | null;
}

/** What the records of the filters' time range and interface add up to, for the page's opening lines (NODATA/SKIPDATA included, so not --addr). */
export function overviewSql(f: ReportFilters): string {
  const c = conditions(f, false);
  return `SELECT count(*) AS records,
       count(*) FILTER (WHERE "log-status" = 'OK') AS ok,
       count(*) FILTER (WHERE "log-status" = 'NODATA') AS nodata,
       count(*) FILTER (WHERE "log-status" = 'SKIPDATA') AS skipdata,
       count(*) FILTER (WHERE action = 'REJECT') AS rejected,
       coalesce(sum(bytes), 0) AS bytes,
       count(DISTINCT "eni-id") AS interfaces,
       min(start_time) AS first, max(end_time) AS last
FROM flows${c.length > 0 ? `\nWHERE ${c.join(' AND ')}` : ''}`;
}

export async function runReport(table: FlowTable, report: Report, filters: ReportFilters, onProgress?: ProgressListener): Promise<ReportResult> {
  const sql = report.sql(filters);
  return { report, sql, ...(await table.all(sql, onProgress)) };
}

export async function runOverview(table: FlowTable, filters: ReportFilters, onProgress?: ProgressListener): Promise<Overview> {
  const sql = overviewSql(filters);
  const { rows } = await table.all(sql, onProgress);
  const [records, ok, nodata, skipdata, rejected, bytes, interfaces, first, last] = rows[0]!;
  return {
    sql, records: Number(records), ok: Number(ok), nodata: Number(nodata), skipdata: Number(skipdata), rejected: Number(rejected),
    bytes: Number(bytes), interfaces: Number(interfaces), first: first instanceof Date ? first : null, last: last instanceof Date ? last : null,
  };
}
