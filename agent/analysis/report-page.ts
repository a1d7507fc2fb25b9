// The flow log report as one self-contained HTML page: inline CSS, charts as inline SVG,
// no script and nothing fetched, so it opens offline, in a mail client or a ticket. Every
// figure is in a table cell too (exact value in data-value), for reading and for checks.
import type { JS } from '@duckdb/node-api';
import { cellText } from './output-format.js';
import type { Overview, ReportResult } from './report-runner.js';
import type { ReportFilters } from './reports.js';
import { barChart, escapeXml, lineChart, type TimeSeries } from './svg-charts.js';

export interface PageInput {
  generatedAt: Date;
  files: ReadonlyArray<{ path: string; size: number }>;
  skipped: ReadonlyArray<{ path: string; lines: number }>;
  filters: ReportFilters;
  overview: Overview;
  results: readonly ReportResult[];
}

const STYLE = `
body { font: 14px/1.45 system-ui, sans-serif; color: #222; margin: 0 auto; max-width: 980px; padding: 16px 24px 48px; }
h1 { font-size: 24px; margin-bottom: 4px; } h2 { font-size: 19px; margin-top: 36px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
.explains { color: #444; max-width: 760px; } .empty { color: #777; font-style: italic; }
dl.overview { display: grid; grid-template-columns: max-content auto; gap: 2px 16px; } dl.overview dt { color: #555; } dl.overview dd { margin: 0; }
table { border-collapse: collapse; margin: 8px 0; font-variant-numeric: tabular-nums; }
th, td { padding: 3px 10px; border-bottom: 1px solid #eee; text-align: left; } th { background: #f4f4f4; }
td.num { text-align: right; } pre { background: #f6f6f6; padding: 8px; overflow-x: auto; font-size: 12px; }
svg.chart { max-width: 100%; height: auto; } svg.chart text { fill: #333; } svg.chart .grid { stroke: #e4e4e4; }
svg.chart .axis-title { fill: #666; } nav a { margin-right: 14px; } .warn { color: #a33; }
`;

/** Units of a result column, by name, for the people reading the page. */
function columnFormat(name: string): (v: number) => string {
  // Identifiers that happen to be numbers: no thousands separators in port 3389.
  if (name.endsWith('port') || name === 'protocol' || name === 'version') return String;
  if (name === 'bytes') return formatBytes;
  if (name === 'bandwidth') return formatBitRate;
  if (name.endsWith('-pct')) return (v) => `${v.toFixed(2)} %`;
  if (name.endsWith('-us')) return (v) => `${formatCount(v)} µs`;
  return formatCount;
}

export function formatBytes(v: number): string {
  return scaled(v, ['B', 'kB', 'MB', 'GB', 'TB', 'PB']);
}

export function formatBitRate(v: number): string {
  return scaled(v, ['bit/s', 'kbit/s', 'Mbit/s', 'Gbit/s', 'Tbit/s']);
}

export function formatCount(v: number): string {
  return Math.round(v).toLocaleString('en-US');
}

/** SI (powers of 1000, as network rates and the cloud consoles count). */
function scaled(v: number, units: readonly string[]): string {
  let i = 0;
  while (Math.abs(v) >= 1000 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  return `${i === 0 ? Math.round(v) : v.toFixed(v >= 100 ? 0 : v >= 10 ? 1 : 2)} ${units[i]}`;
}

function num(v: JS): number {
  return v === null ? 0 : Number(v);
}

function column(result: ReportResult, name: string): number {
  const i = result.columns.indexOf(name);
  if (i < 0) throw new Error(`report ${result.report.name}: no column ${name}`);
  return i;
}

function table(result: ReportResult): string {
  const numeric = result.types.map((t) => /INT|DOUBLE|FLOAT|DECIMAL/.test(t));
  const head = result.columns.map((c) => `<th>${escapeXml(c)}</th>`).join('');
  const body = result.rows.map((row) => `<tr>${row.map((v, i) => {
    const raw = cellText(v, false);
    const shown = v === null ? '' : numeric[i] ? columnFormat(result.columns[i]!)(Number(v)) : raw;
    return `<td${numeric[i] ? ' class="num"' : ''} data-col="${escapeXml(result.columns[i]!)}" data-value="${escapeXml(raw)}">${escapeXml(shown)}</td>`;
  }).join('')}</tr>`).join('\n');
  return `<table data-report="${result.report.name}"><thead><tr>${head}</tr></thead><tbody>\n${body}\n</tbody></table>`;
}

/** The chart of each report, from its rows. */
function chart(result: ReportResult): string {
  const rows = result.rows;
  const text = (row: JS[], name: string): string => cellText(row[column(result, name)]!, false) || '—';
  switch (result.report.name) {
    case 'top-talkers':
      return barChart(rows.map((r) => `${text(r, 'srcaddr')} → ${text(r, 'dstaddr')}`), [{ name: 'bytes', values: rows.map((r) => num(r[column(result, 'bytes')]!)) }], formatBytes);
    case 'rejected':
      return barChart(rows.map((r) => `${text(r, 'protocol')} port ${text(r, 'dstport')}`), [{ name: 'packets', values: rows.map((r) => num(r[column(result, 'packets')]!)) }], (v) => `${formatCount(v)} pkts`);
    case 'tcp-health':
      return barChart(rows.map((r) => text(r, 'peer')), [
        { name: 'retransmissions', values: rows.map((r) => num(r[column(result, 'retrans')]!)) },
        { name: 'zero-window', values: rows.map((r) => num(r[column(result, 'zero-win')]!)) },
      ], formatCount);
    case 'gaps':
      return barChart(rows.map((r) => text(r, 'eni-id')), [
        { name: 'NODATA windows', values: rows.map((r) => num(r[column(result, 'nodata-windows')]!)) },
        { name: 'SKIPDATA windows', values: rows.map((r) => num(r[column(result, 'skipdata-windows')]!)) },
      ], formatCount);
    case 'bandwidth': {
      const byDestination = new Map<string, TimeSeries & { points: Array<{ t: number; v: number }> }>();
      for (const r of rows) {
        const name = text(r, 'dstaddr');
        const series = byDestination.get(name) ?? { name, points: [] };
        series.points.push({ t: (r[column(result, 'time')] as Date).getTime(), v: num(r[column(result, 'bandwidth')]!) });
        byDestination.set(name, series);
      }
      return lineChart([...byDestination.values()], formatBitRate);
    }
  }
}

function section(result: ReportResult): string {
  const { report } = result;
  const empty = result.rows.length === 0;
  // The bandwidth table has a row per window and destination: long, so folded away.
  const numbers = report.name === 'bandwidth' ? `<details><summary>The numbers (${result.rows.length} rows)</summary>${table(result)}</details>` : table(result);
  return `<section id="${report.name}" data-rows="${result.rows.length}">
<h2>${escapeXml(report.title)}</h2>
<p class="explains">${escapeXml(report.explains)}</p>
${empty ? '<p class="empty">No records match.</p>' : `<figure>${chart(result)}</figure>\n${numbers}`}
<details><summary>SQL (run it with <code>mirrorflow flows query</code>)</summary><pre>${escapeXml(result.sql)}</pre></details>
</section>`;
}

function filterText(f: ReportFilters): string {
  const parts: string[] = [];
  if (f.since !== undefined) parts.push(`since ${new Date(f.since * 1000).toISOString()}`);
  if (f.until !== undefined) parts.push(`until ${new Date(f.until * 1000).toISOString()}`);
  if (f.eni !== undefined) parts.push(`interface ${f.eni}`);
  if (f.addr !== undefined) parts.push(`address ${f.addr}`);
  return parts.length > 0 ? parts.join(', ') : 'none (every record)';
}

export function renderReportPage(input: PageInput): string {
  const o = input.overview;
  const skippedLines = input.skipped.reduce((n, s) => n + s.lines, 0);
  const overview: Array<[string, string, string]> = [
    ['records', 'Flow log records', `${formatCount(o.records)} (${formatCount(o.ok)} with traffic, ${formatCount(o.nodata)} NODATA, ${formatCount(o.skipdata)} SKIPDATA; ${formatCount(o.rejected)} rejected)`],
    ['bytes', 'Bytes recorded', `${formatBytes(o.bytes)} (${formatCount(o.bytes)} B)`],
    ['span', 'Time covered (UTC)', o.first === null || o.last === null ? '—' : `${o.first.toISOString()} to ${o.last.toISOString()}`],
    ['interfaces', 'Interfaces', formatCount(o.interfaces)],
    ['filters', 'Filters', filterText(input.filters)],
    ['files', 'Files read', input.files.map((f) => `${f.path} (${formatBytes(f.size)})`).join(', ')],
  ];
  if (skippedLines > 0) {
    overview.push(['skipped', 'Lines skipped', `${formatCount(skippedLines)} incomplete line(s): ${input.skipped.map((s) => `${s.path}: ${s.lines}`).join(', ')}`]);
  }
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Flow log report</title>
<style>${STYLE}</style>
</head>
<body>
<header>
<h1>Flow log report</h1>
<p>What crossed this host's network interfaces, from the flow logs mirrorflow wrote. A flow log record counts the packets and bytes of one direction of one connection (source and destination address and port, protocol) on one interface during one capture window. Generated ${escapeXml(input.generatedAt.toISOString())}.</p>
<dl class="overview">
${overview.map(([id, label, value]) => `<dt>${escapeXml(label)}</dt><dd id="overview-${id}"${id === 'skipped' ? ' class="warn"' : ''}>${escapeXml(value)}</dd>`).join('\n')}
</dl>
<nav>${input.results.map((r) => `<a href="#${r.report.name}">${escapeXml(r.report.title)}</a>`).join('')}</nav>
</header>
<main>
${input.results.map(section).join('\n')}
</main>
<footer><details><summary>Overview SQL</summary><pre>${escapeXml(o.sql)}</pre></details></footer>
</body>
</html>
`;
}
