// `mirrorflow flows query|report`: SQL and ready reports over the flow log files (SPEC §6,
// docs/flow-analysis.md). Only the options live here: the work, and DuckDB (a 70 MB
// library), is loaded when a flows command runs, never by `mirrorflow run`.
import { Command, Option } from 'commander';
import { OUTPUT_FORMATS } from './output-format.js';
import { REPORTS } from './reports.js';
import type { ReportOptions, SourceOptions } from './flows-run.js';

const DEFAULT_LIMIT = 10;

function sourceOptions(cmd: Command, defaultConfig: string): Command {
  return cmd
    .addOption(new Option('-c, --config <file>', 'read the files of the config\'s file sinks, rotations included').default(defaultConfig).conflicts('files'))
    .option('--files <glob...>', 'read these files instead (quote globs: \'/var/log/mirrorflow/*.jsonl*\'; put them after the SQL, or end them with --)')
    .addOption(new Option('--format <format>', 'output format').choices(OUTPUT_FORMATS).default('table'));
}

export function flowsCommand(defaultConfig: string): Command {
  const flows = new Command('flows').description('ask the flow log files questions: SQL (DuckDB) and ready reports');
  sourceOptions(flows.command('query <sql>'), defaultConfig)
    .description('run SQL over the flow log records as the table `flows` (quote "log-status", "end" and the other hyphenated names)')
    .action((sql: string, opts: SourceOptions) => run((m) => m.guarded('query', () => m.runQuery(sql, opts))));
  sourceOptions(flows.command('report [name]'), defaultConfig)
    .description(`ready reports (${REPORTS.map((r) => r.name).join(', ')}; all when no name): as text, or one HTML page with --out`)
    .option('--since <time>', 'records whose window ends after this (ISO 8601, epoch seconds, or 30m/6h/2d ago)')
    .option('--until <time>', 'records whose window starts before this')
    .option('--eni <interface>', 'records of this interface only')
    .option('--addr <address>', 'records with this source or destination address')
    .option('--limit <n>', 'rows of each ranking (destinations drawn, for bandwidth)', (v) => Number(v), DEFAULT_LIMIT)
    .option('--show-sql', 'print the SQL the reports run (filters filled in) instead of running it')
    .option('--out <file.html>', 'write one self-contained HTML page with the charts and tables')
    .action((name: string | undefined, opts: ReportOptions) => run((m) => m.guarded('report', () => m.runReports(name, opts))));
  return flows;
}

async function run(use: (m: typeof import('./flows-run.js')) => Promise<void>): Promise<void> {
  await use(await import('./flows-run.js'));
}
