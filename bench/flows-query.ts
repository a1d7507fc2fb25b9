// `mirrorflow flows query` against jq: bytes per destination, the ten biggest (the first
// step of the bandwidth report) over N flow log records written as the file sink writes
// them (recordLine, rotated 100 MB files), by the CLI as a process and by a streaming jq
// reduce over the same files. Both answers must agree. (Per address pair, jq 1.6 goes
// quadratic: 200 000 records with ~200 000 pairs did not finish in 10 minutes.)
// FLOWS_BENCH_RECORDS sets N (default 1 million, ~0.4 GB: jq 1.6 takes minutes; issue 18 names 10 million);
// the files go to FLOWS_BENCH_DIR (default a temporary directory, removed after).
import { execFileSync, spawnSync } from 'node:child_process';
import { closeSync, mkdirSync, mkdtempSync, openSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FlowRecord } from '../agent/flow/record.js';
import { recordLine } from '../agent/sinks/jsonl-file.js';

const RECORDS = Number(process.env.FLOWS_BENCH_RECORDS ?? 1_000_000);
const FILE_BYTES = 100 * 1024 * 1024;
const WINDOW = 600;
const T0 = 1_764_547_200;
const CLI = fileURLToPath(new URL('../agent/cli.js', import.meta.url));
const RESULTS = fileURLToPath(new URL('../../bench/results/flows-query.json', import.meta.url));
const TOP = 10;
const SQL = `SELECT dstaddr, sum(bytes) AS bytes FROM flows WHERE "log-status" = 'OK' GROUP BY dstaddr ORDER BY bytes DESC, dstaddr LIMIT ${TOP}`;
const JQ_PROGRAM = `reduce inputs as $r ({}; if $r["log-status"] == "OK" then .[$r.dstaddr] += $r.bytes else . end)
  | to_entries | sort_by(-.value, .key) | .[:${TOP}] | map("\\(.key) \\(.value)") | .[]`;

/** Record i of a synthetic host: 2000 local sources, 300 peers, 100 windows, 1 % REJECT, a NODATA record every 997. */
function record(i: number): FlowRecord {
  const start = T0 + WINDOW * (i % 100);
  if (i % 997 === 0) {
    return { version: 1, 'vswitch-id': 'vsw-lab', 'vm-id': 'host-1', 'vpc-id': 'vpc-lab', 'account-id': '1234567890', 'eni-id': `eth${i % 4}`,
      srcaddr: null, srcport: null, dstaddr: null, dstport: null, protocol: null, direction: null, packets: null, bytes: null, start, end: start + WINDOW,
      'log-status': 'NODATA', action: null, 'tcp-flags': null, 'icmp-type': null, 'icmp-code': null, retrans: null, 'zero-win': null, 'rtt-us': null, 'mirrored-packets': null, 'mirror-session': null };
  }
  const packets = 1 + ((i * 7919) % 500);
  return { version: 1, 'vswitch-id': 'vsw-lab', 'vm-id': 'host-1', 'vpc-id': 'vpc-lab', 'account-id': '1234567890', 'eni-id': `eth${i % 4}`,
    srcaddr: `10.0.${(i >> 8) % 8}.${i % 250}`, srcport: 32768 + (i % 28000), dstaddr: i % 3 === 0 ? `fd00::${(i % 300).toString(16)}` : `10.1.${i % 300 >> 8}.${i % 256}`,
    dstport: [443, 80, 53, 22][i % 4]!, protocol: i % 4 === 2 ? 17 : 6, direction: i % 2 === 0 ? 'out' : 'in', packets, bytes: packets * (64 + (i % 1400)),
    start, end: start + WINDOW, 'log-status': 'OK', action: i % 100 === 0 ? 'REJECT' : 'ACCEPT', 'tcp-flags': 27, 'icmp-type': null, 'icmp-code': null, retrans: i % 5, 'zero-win': i % 11 === 0 ? 1 : 0,
    'rtt-us': 100 + (i % 4000), 'mirrored-packets': packets, 'mirror-session': 'ts-1' };
}

/** Writes the records oldest first into path.K … path.1, path, each up to FILE_BYTES: the sink's rotation layout. */
function writeRecords(dir: string): string[] {
  const chunks: string[] = [];
  let fd = -1;
  let size = 0;
  let buf = '';
  const open = (): void => {
    const path = join(dir, `part-${chunks.length}`);
    chunks.push(path);
    fd = openSync(path, 'w');
    size = 0;
  };
  const flush = (): void => {
    if (buf.length === 0) return;
    size += writeSync(fd, buf);
    buf = '';
  };
  open();
  for (let i = 0; i < RECORDS; i++) {
    buf += recordLine(record(i));
    if (buf.length >= 1 << 20) {
      flush();
      if (size >= FILE_BYTES) {
        closeSync(fd);
        open();
      }
    }
  }
  flush();
  closeSync(fd);
  // Oldest is the highest rotation index; the newest part is the current file.
  const names = chunks.map((_, k) => join(dir, k === chunks.length - 1 ? 'flowlog.jsonl' : `flowlog.jsonl.${chunks.length - 1 - k}`));
  chunks.forEach((c, k) => execFileSync('mv', [c, names[k]!]));
  return names;
}

/** Wall time and peak RSS (GNU time) of a command; its stdout. */
function timed(argv: string[]): { seconds: number; maxRssMb: number; stdout: string } {
  const t = process.hrtime.bigint();
  const r = spawnSync('/usr/bin/time', ['-f', 'MAXRSS %M', ...argv], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  const seconds = Number(process.hrtime.bigint() - t) / 1e9;
  if (r.status !== 0) throw new Error(`${argv.join(' ')} exited ${r.status}: ${r.stderr}`);
  const rss = /MAXRSS (\d+)/.exec(r.stderr)?.[1];
  return { seconds, maxRssMb: Number(rss) / 1024, stdout: r.stdout };
}

const dir = process.env.FLOWS_BENCH_DIR ?? mkdtempSync(join(tmpdir(), 'mirrorflow-flows-bench-'));
mkdirSync(dir, { recursive: true });
try {
  const t = Date.now();
  const files = writeRecords(dir);
  const bytes = files.reduce((n, f) => n + statSync(f).size, 0);
  console.log(`flows bench: ${RECORDS} records, ${files.length} files, ${(bytes / 1e9).toFixed(2)} GB written in ${((Date.now() - t) / 1000).toFixed(1)} s`);
  // Read once so both tools start from the page cache.
  execFileSync('cat', files, { stdio: ['ignore', 'ignore', 'inherit'] });
  const mirrorflow = timed([process.execPath, CLI, 'flows', 'query', '--format', 'csv', SQL, '--files', `${dir}/flowlog.jsonl*`]);
  const jq = timed(['jq', '-n', '-r', JQ_PROGRAM, ...files]);
  const ours = mirrorflow.stdout.trim().split('\n').slice(1).map((l) => l.split(',').join(' '));
  const theirs = jq.stdout.trim().split('\n');
  if (ours.join('\n') !== theirs.join('\n')) throw new Error(`answers differ:\nmirrorflow:\n${ours.join('\n')}\njq:\n${theirs.join('\n')}`);
  const result = {
    records: RECORDS, files: files.length, bytes, query: SQL, jq: JQ_PROGRAM,
    mirrorflow: { seconds: mirrorflow.seconds, maxRssMb: mirrorflow.maxRssMb, recordsPerSecond: RECORDS / mirrorflow.seconds },
    jqRun: { seconds: jq.seconds, maxRssMb: jq.maxRssMb, recordsPerSecond: RECORDS / jq.seconds },
    speedup: jq.seconds / mirrorflow.seconds,
  };
  mkdirSync(join(RESULTS, '..'), { recursive: true });
  writeFileSync(RESULTS, `${JSON.stringify(result, null, 2)}\n`);
  console.log(`flows bench: mirrorflow flows query ${mirrorflow.seconds.toFixed(2)} s (${mirrorflow.maxRssMb.toFixed(0)} MB RSS), ` +
    `jq ${jq.seconds.toFixed(2)} s (${jq.maxRssMb.toFixed(0)} MB RSS): ${result.speedup.toFixed(1)}× faster, same top ${TOP}`);
} finally {
  if (process.env.FLOWS_BENCH_DIR === undefined) rmSync(dir, { recursive: true, force: true });
}
