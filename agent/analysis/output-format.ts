// Query results as text: an aligned table for people, CSV (RFC 4180) and JSON lines for
// other tools. Rows arrive in chunks and are written as they come, so a large result
// needs no more memory than a chunk; the table's column widths come from the first rows.
import type { JS } from '@duckdb/node-api';

export type OutputFormat = 'table' | 'csv' | 'json';
export const OUTPUT_FORMATS: readonly OutputFormat[] = ['table', 'csv', 'json'];

/** Rows a table looks at to size its columns; longer values later simply widen their line. */
const TABLE_SIZING_ROWS = 1000;
/** Digits after the point in a table (CSV and JSON keep the full value). */
const TABLE_DECIMALS = 3;

/** A value as JSON can carry it: integers beyond 2^53 as strings, times as ISO 8601 (UTC). */
export function jsonValue(v: JS): unknown {
  if (typeof v === 'bigint') return Number.isSafeInteger(Number(v)) ? Number(v) : v.toString();
  if (v instanceof Date) return v.toISOString();
  if (Array.isArray(v)) return v.map(jsonValue);
  if (v !== null && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, jsonValue(x as JS)]));
  return v;
}

/** A value as one cell of text ('' for null). */
export function cellText(v: JS, forTable: boolean): string {
  if (v === null || v === undefined) return forTable ? 'NULL' : '';
  if (typeof v === 'number' && forTable && !Number.isInteger(v)) return v.toFixed(TABLE_DECIMALS);
  if (v instanceof Date) return v.toISOString().replace('.000Z', 'Z');
  if (typeof v === 'object') return JSON.stringify(jsonValue(v));
  return String(v);
}

function csvField(text: string): string {
  return /[",\r\n]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
}

/** Writes the rows in the format; returns the number of rows written. */
export async function writeRows(
  format: OutputFormat,
  columns: readonly string[],
  types: readonly string[],
  chunks: AsyncIterable<JS[][]>,
  write: (text: string) => void,
): Promise<number> {
  let count = 0;
  if (format === 'json') {
    for await (const rows of chunks) {
      for (const row of rows) write(`${JSON.stringify(Object.fromEntries(columns.map((c, i) => [c, jsonValue(row[i] as JS)])))}\n`);
      count += rows.length;
    }
    return count;
  }
  if (format === 'csv') {
    write(`${columns.map(csvField).join(',')}\n`);
    for await (const rows of chunks) {
      for (const row of rows) write(`${row.map((v) => csvField(cellText(v, false))).join(',')}\n`);
      count += rows.length;
    }
    return count;
  }
  return writeTable(columns, types, chunks, write);
}

async function writeTable(columns: readonly string[], types: readonly string[], chunks: AsyncIterable<JS[][]>, write: (text: string) => void): Promise<number> {
  const numeric = types.map((t) => /INT|DOUBLE|FLOAT|DECIMAL|REAL|NUMERIC/.test(t));
  let pending: string[][] = [];
  let widths: number[] | undefined;
  let count = 0;
  const line = (cells: readonly string[]): string =>
    `${cells.map((c, i) => (numeric[i] ? c.padStart(widths![i]!) : c.padEnd(widths![i]!))).join('  ').trimEnd()}\n`;
  const flush = (): void => {
    if (widths === undefined) {
      widths = columns.map((c, i) => Math.max(c.length, ...pending.map((r) => r[i]!.length)));
      write(line(columns));
      write(`${widths.map((w) => '-'.repeat(w)).join('  ')}\n`);
    }
    for (const r of pending) write(line(r));
    pending = [];
  };
  for await (const rows of chunks) {
    for (const row of rows) pending.push(row.map((v) => cellText(v, true)));
    count += rows.length;
    if (widths !== undefined || pending.length >= TABLE_SIZING_ROWS) flush();
  }
  if (widths === undefined || pending.length > 0) flush();
  write(`(${count} ${count === 1 ? 'row' : 'rows'})\n`);
  return count;
}
