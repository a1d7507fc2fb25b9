// What `mirrorflow flows query|report` do (the commands are declared in flows-command.ts,
// which loads this module, and DuckDB with it, only when one of them runs).
import { writeFile } from 'node:fs/promises';
import { loadConfig } from '../config/load.js';
import { ConfigError } from '../errors.js';
import { filesFromConfig, filesFromGlobs, FlowFilesError, type FlowFile } from './flow-files.js';
import { FlowQueryError, FlowTable } from './flow-table.js';
import { writeRows, type OutputFormat } from './output-format.js';
import { terminalProgress } from './progress.js';
import { renderReportPage } from './report-page.js';
import { runOverview, runReport } from './report-runner.js';
import { parseAddress, parseInterface, parseTime, ReportFilterError, reportNamed, REPORTS, type Report, type ReportFilters } from './reports.js';

export interface SourceOptions {
  config: string;
  files?: string[];
  format: OutputFormat;
}

export interface ReportOptions extends SourceOptions {
  since?: string;
  until?: string;
  eni?: string;
  addr?: string;
  limit: number;
  showSql?: boolean;
  out?: string;
}

async function resolveFiles(opts: SourceOptions): Promise<FlowFile[]> {
  if (opts.files !== undefined) return filesFromGlobs(opts.files);
  return filesFromConfig(await loadConfig(opts.config), opts.config);
}

async function openTable(opts: SourceOptions): Promise<FlowTable> {
  const files = await resolveFiles(opts);
  if (files.every((f) => f.size === 0)) {
    process.stderr.write(`flows: ${files.length === 1 ? 'the file is' : `all ${files.length} files are`} empty (${files.map((f) => f.path).join(', ')}): no records to query\n`);
  }
  return FlowTable.open(files);
}

/** Closes the table, first telling stderr about the lines it skipped (known only once the statements ran). */
function closeTable(table: FlowTable): void {
  for (const s of table.skipped) {
    process.stderr.write(`flows: skipped ${s.lines} incomplete line${s.lines === 1 ? '' : 's'} in ${s.path} (a file being written, or cut by a crash)\n`);
  }
  table.close();
}

function scanLabel(table: FlowTable): string {
  const bytes = table.files.reduce((n, f) => n + f.size, 0);
  return `scanning ${table.files.length} flow log file${table.files.length === 1 ? '' : 's'} (${(bytes / 1e6).toFixed(0)} MB)`;
}

/** Known failures end with their message and exit 1; anything else is a bug and keeps its stack. */
export async function guarded(command: string, action: () => Promise<void>): Promise<void> {
  try {
    await action();
  } catch (err) {
    if (err instanceof ConfigError) {
      for (const issue of err.issues) process.stderr.write(`${issue.path}: ${issue.message}\n`);
    } else if (err instanceof FlowQueryError || err instanceof FlowFilesError || err instanceof ReportFilterError || (err as NodeJS.ErrnoException).code !== undefined) {
      process.stderr.write(`flows ${command}: ${(err as Error).message}\n`);
    } else {
      throw err;
    }
    process.exitCode = 1;
  }
}

function reportFilters(opts: ReportOptions): ReportFilters {
  if (!Number.isInteger(opts.limit) || opts.limit < 1) throw new ReportFilterError(`--limit ${opts.limit}: must be a whole number ≥ 1`);
  return {
    since: opts.since === undefined ? undefined : parseTime('--since', opts.since),
    until: opts.until === undefined ? undefined : parseTime('--until', opts.until),
    eni: opts.eni === undefined ? undefined : parseInterface(opts.eni),
    addr: opts.addr === undefined ? undefined : parseAddress(opts.addr),
    limit: opts.limit,
  };
}

export async function runQuery(sql: string, opts: SourceOptions): Promise<void> {
  const table = await openTable(opts);
  const progress = terminalProgress(process.stderr, scanLabel(table));
  try {
    const result = await table.stream(sql, (p) => progress.update(p));
    let first = true;
    await writeRows(opts.format, result.columns, result.types, result.rows, (text) => {
      if (first) progress.done();
      first = false;
      process.stdout.write(text);
    });
  } finally {
    progress.done();
    closeTable(table);
  }
}

export async function runReports(name: string | undefined, opts: ReportOptions): Promise<void> {
  const filters = reportFilters(opts);
  const reports: readonly Report[] = name === undefined ? REPORTS : [reportNamed(name)];
  if (opts.showSql === true) {
    process.stdout.write(reports.map((r) => `/* ${r.name}: ${r.title} */\n${r.sql(filters)};\n`).join('\n'));
    return;
  }
  const table = await openTable(opts);
  const progress = terminalProgress(process.stderr, scanLabel(table));
  const onProgress = (p: number): void => progress.update(p);
  try {
    const results = [];
    for (const report of reports) results.push(await runReport(table, report, filters, onProgress));
    if (opts.out !== undefined) {
      const overview = await runOverview(table, filters, onProgress);
      progress.done();
      const page = renderReportPage({ generatedAt: new Date(), files: table.files, skipped: table.skipped, filters, overview, results });
      await writeFile(opts.out, page);
      process.stderr.write(`flows report: wrote ${opts.out} (${results.length} report${results.length === 1 ? '' : 's'} over ${overview.records} records)\n`);
      return;
    }
    progress.done();
    for (const [i, r] of results.entries()) {
      if (results.length > 1 && opts.format === 'table') process.stdout.write(`${i > 0 ? '\n' : ''}== ${r.report.title} (${r.report.name})\n`);
      await writeRows(opts.format, r.columns, r.types, once(r.rows), (text) => process.stdout.write(text));
    }
  } finally {
    progress.done();
    closeTable(table);
  }
}

async function* once<T>(value: T): AsyncIterable<T> {
  yield value;
}

