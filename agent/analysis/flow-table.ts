// The `flows` table: a DuckDB view over flow log JSON lines files. Files that end in a
// newline are read by read_json with the declared columns (a malformed line there is an
// error naming the file and line). A file whose last line is incomplete — being written,
// or cut by a crash — is read line by line instead: lines that are not whole JSON
// documents are skipped and counted, so a query never fails on the tail of a live file.
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DuckDBInstance, type DuckDBConnection, type DuckDBResult, type JS } from '@duckdb/node-api';
import { DERIVED_COLUMNS, FLOW_COLUMNS, ident, literal, readJsonColumns, transformStructure } from './columns.js';
import { redescribe, type FlowFile } from './flow-files.js';

export interface SkippedLines {
  path: string;
  lines: number;
}

/** A query the engine refused (syntax, unknown column, bad type), with DuckDB's message and a hint where one helps. */
export class FlowQueryError extends Error {}

export interface StreamedResult {
  columns: string[];
  /** Column types as DuckDB names them (BIGINT, DOUBLE, TIMESTAMP WITH TIME ZONE …). */
  types: string[];
  rows: AsyncIterable<JS[][]>;
}

/** Called while a query runs, with DuckDB's estimate of how far it is (0..100, or -1 when unknown). */
export type ProgressListener = (percentage: number) => void;

const PROGRESS_POLL_MS = 250;
/** DuckDB's memory for one flows command (its default is 80 % of the host's RAM). */
const MEMORY_LIMIT = '1GB';
const TOLERANT_COLUMN = 'line';
/** A byte that never occurs raw in JSON text (control characters must be escaped), so each line is one CSV field. */
const NO_DELIMITER = String.raw`E'\x01'`;

export class FlowTable {
  private tolerant: FlowFile[];
  private clean: FlowFile[];
  /** Lines skipped in the files read line by line, by file; filled when the view is made. */
  skipped: SkippedLines[] = [];

  private constructor(
    private readonly instance: DuckDBInstance,
    private readonly connection: DuckDBConnection,
    readonly files: readonly FlowFile[],
  ) {
    this.clean = files.filter((f) => !f.cutTail);
    this.tolerant = files.filter((f) => f.cutTail);
  }

  static async open(files: readonly FlowFile[]): Promise<FlowTable> {
    // In memory: the view reads the files on each query; nothing is stored. Extensions
    // not built into the package (icu, inet …) stay out: loading one would download it.
    const instance = await DuckDBInstance.create(':memory:', {
      autoinstall_known_extensions: 'false', autoload_known_extensions: 'false',
      // A bounded share of the host the agent observes: a large sort or GROUP BY spills
      // to a temporary directory (removed when DuckDB closes) instead of growing.
      memory_limit: MEMORY_LIMIT, temp_directory: join(tmpdir(), `mirrorflow-flows-${process.pid}`),
    });
    const connection = await instance.connect();
    // The progress bar setting makes DuckDB track a statement's progress (which the
    // progress line reads); DuckDB's own printing of it stays off.
    await connection.run('SET enable_progress_bar = true; SET enable_progress_bar_print = false');
    const table = new FlowTable(instance, connection, files);
    await table.createView();
    return table;
  }

  /**
   * Runs one statement and streams its rows. A file that grew a partial line while it
   * was being read (the writer's append seen half done) moves to the line-by-line path
   * and the statement runs again, at most once per file.
   */
  async stream(sql: string, onProgress?: ProgressListener): Promise<StreamedResult> {
    // DuckDB may do the whole scan before the first chunk (an aggregate), so progress is
    // watched from the start of the statement to its last row.
    const timer = onProgress === undefined ? undefined : setInterval(() => onProgress(this.connection.progress.percentage), PROGRESS_POLL_MS);
    const stop = (): void => clearInterval(timer);
    for (;;) {
      try {
        const result = await this.connection.stream(sql);
        return { columns: result.columnNames(), types: result.columnTypes().map(String), rows: rowsOf(result, stop) };
      } catch (err) {
        if (!(await this.recoverFromGrowingFile(err))) {
          stop();
          throw queryError(err);
        }
      }
    }
  }

  /** Runs one statement and returns all its rows (for the reports, whose results are small). */
  async all(sql: string, onProgress?: ProgressListener): Promise<{ columns: string[]; types: string[]; rows: JS[][] }> {
    for (;;) {
      try {
        const { columns, types, rows } = await this.stream(sql, onProgress);
        const all: JS[][] = [];
        for await (const chunk of rows) all.push(...chunk);
        return { columns, types, rows: all };
      } catch (err) {
        if (!(await this.recoverFromGrowingFile(err))) throw queryError(err);
      }
    }
  }

  close(): void {
    this.connection.closeSync();
    this.instance.closeSync();
  }

  private async recoverFromGrowingFile(err: unknown): Promise<boolean> {
    const path = /Malformed JSON in file "([^"]+)"/.exec(String((err as Error).message))?.[1];
    const file = this.clean.find((f) => f.path === path);
    if (file === undefined) return false;
    const now = await redescribe(file);
    if (now.size === file.size) return false;
    this.clean = this.clean.filter((f) => f !== file);
    this.tolerant.push({ ...now, cutTail: true });
    await this.createView();
    return true;
  }

  private async createView(): Promise<void> {
    const parts: string[] = [];
    if (this.clean.length > 0) {
      parts.push(`SELECT * FROM read_json(${pathList(this.clean)}, format = 'newline_delimited', columns = ${readJsonColumns()})`);
    }
    if (this.tolerant.length > 0) parts.push(tolerantSelect(this.tolerant));
    // No file at all still gives the table its columns (and no rows), so queries bind.
    if (parts.length === 0) parts.push(`SELECT ${FLOW_COLUMNS.map(([n, t]) => `NULL::${t} AS ${ident(n)}`).join(', ')} WHERE false`);
    const columns = [...FLOW_COLUMNS.map(([n]) => ident(n)), ...DERIVED_COLUMNS.map(([n, expr]) => `${expr} AS ${ident(n)}`)];
    await this.connection.run(`CREATE OR REPLACE VIEW flows AS SELECT ${columns.join(', ')} FROM (${parts.join(' UNION ALL BY NAME ')})`);
    this.skipped = await this.countSkipped();
  }

  private async countSkipped(): Promise<SkippedLines[]> {
    if (this.tolerant.length === 0) return [];
    const reader = await this.connection.runAndReadAll(
      `SELECT filename, count(*) FROM ${linesOf(this.tolerant, true)} WHERE NOT json_valid(${TOLERANT_COLUMN}) GROUP BY filename ORDER BY filename`,
    );
    return reader.getRowsJS().map(([path, lines]) => ({ path: String(path), lines: Number(lines) }));
  }
}

async function* rowsOf(result: DuckDBResult, done: () => void): AsyncIterable<JS[][]> {
  try {
    yield* result.yieldRowsJs();
  } catch (err) {
    throw queryError(err);
  } finally {
    done();
  }
}

function pathList(files: readonly FlowFile[]): string {
  return `[${files.map((f) => literal(f.path)).join(', ')}]`;
}

/** Each line of the files as one VARCHAR column (no quoting, no header, no type detection). */
function linesOf(files: readonly FlowFile[], withFilename: boolean): string {
  return `read_csv(${pathList(files)}, columns = {${literal(TOLERANT_COLUMN)}: 'VARCHAR'}, delim = ${NO_DELIMITER}, quote = '', escape = '', header = false, auto_detect = false${withFilename ? ', filename = true' : ''})`;
}

/**
 * The whole-JSON lines of the files as records. json_transform_strict refuses a record
 * missing a field or with a value of the wrong type, as read_json does; skipped-packets
 * appears only on SKIPDATA records, so it is taken apart from the others.
 */
function tolerantSelect(files: readonly FlowFile[]): string {
  // The CASE keeps the transform off invalid lines even where the optimizer evaluates a
  // pushed-down filter on the transformed columns before the WHERE below.
  const valid = `CASE WHEN json_valid(${TOLERANT_COLUMN}) THEN ${TOLERANT_COLUMN} END`;
  return `SELECT unnest(json_transform_strict(${valid}, ${literal(transformStructure(['skipped-packets']))})), ` +
    `json_extract(${valid}, '$."skipped-packets"')::BIGINT AS "skipped-packets" ` +
    `FROM ${linesOf(files, false)} WHERE json_valid(${TOLERANT_COLUMN})`;
}

/** DuckDB's message, plus what to do when the cause is one of the record's awkward names. */
function queryError(err: unknown): FlowQueryError {
  if (err instanceof FlowQueryError) return err;
  // The node binding's wrapper adds nothing a reader needs before the engine's own words.
  const message = String((err as Error).message ?? err).replace(/^Failed to extract statements: /, '').trim();
  const hints: string[] = [];
  const column = /Referenced column "([^"]+)" not found/.exec(message)?.[1];
  const hyphenated = FLOW_COLUMNS.map(([n]) => n).filter((n) => column !== undefined && n.startsWith(`${column}-`));
  if (hyphenated.length > 0) hints.push(`hint: names with a hyphen must be quoted: ${hyphenated.map((n) => `"${n}"`).join(', ')}`);
  if (/syntax error at or near "end"/i.test(message)) hints.push('hint: "end" is an SQL keyword; quote the column: "end"');
  return new FlowQueryError([message, ...hints].join('\n'));
}
