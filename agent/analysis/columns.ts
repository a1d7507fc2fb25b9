// The `flows` table's columns: the flow log record fields (SPEC §4) under their own names,
// each with a declared DuckDB type. Declaring them (rather than letting DuckDB infer them
// from a sample) keeps NODATA/SKIPDATA records, whose 5-tuple fields are null, from
// turning a column into JSON or VARCHAR, and gives every file the same table shape.
/** Record field → DuckDB type; in the record's order (RECORD_FIELDS of the file sink; a test keeps them in step). */
export const FLOW_COLUMNS: ReadonlyArray<readonly [name: string, type: string]> = [
  ['version', 'INTEGER'],
  ['vswitch-id', 'VARCHAR'],
  ['vm-id', 'VARCHAR'],
  ['vpc-id', 'VARCHAR'],
  ['account-id', 'VARCHAR'],
  ['eni-id', 'VARCHAR'],
  ['srcaddr', 'VARCHAR'],
  ['srcport', 'INTEGER'],
  ['dstaddr', 'VARCHAR'],
  ['dstport', 'INTEGER'],
  ['protocol', 'INTEGER'],
  ['direction', 'VARCHAR'],
  ['packets', 'BIGINT'],
  ['bytes', 'BIGINT'],
  // Seconds since the epoch, as in the record, so the cloud guides' arithmetic
  // ("end" - start) works unchanged; start_time/end_time below are the same as times.
  ['start', 'BIGINT'],
  ['end', 'BIGINT'],
  ['log-status', 'VARCHAR'],
  ['action', 'VARCHAR'],
  ['tcp-flags', 'INTEGER'],
  ['icmp-type', 'INTEGER'],
  ['icmp-code', 'INTEGER'],
  ['retrans', 'BIGINT'],
  ['zero-win', 'BIGINT'],
  ['rtt-us', 'BIGINT'],
  ['mirrored-packets', 'BIGINT'],
  ['mirror-session', 'VARCHAR'],
  ['skipped-packets', 'BIGINT'],
];

/** Columns the view adds after the record fields: the window bounds as UTC timestamps. */
export const DERIVED_COLUMNS: ReadonlyArray<readonly [name: string, sql: string]> = [
  ['start_time', 'to_timestamp("start")'],
  ['end_time', 'to_timestamp("end")'],
];

/** A DuckDB identifier, always quoted: the record's names have hyphens and `end` is a keyword. */
export function ident(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

/** A DuckDB string literal. */
export function literal(text: string): string {
  return `'${text.replaceAll("'", "''")}'`;
}

/** The `columns={...}` argument of read_json. */
export function readJsonColumns(): string {
  return `{${FLOW_COLUMNS.map(([n, t]) => `${literal(n)}: ${literal(t)}`).join(', ')}}`;
}

/** The structure argument of json_transform: the same names and types as a JSON document. */
export function transformStructure(except: readonly string[]): string {
  return JSON.stringify(Object.fromEntries(FLOW_COLUMNS.filter(([n]) => !except.includes(n))));
}
