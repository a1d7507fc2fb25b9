// The collectors operators run, started for a test on loopback only: nfcapd (nfdump),
// nfacctd (pmacct) with the configuration deploy/collectors/pmacct ships, and a throwaway
// PostgreSQL cluster (initdb in a temp dir as the postgres user, 127.0.0.1 on a random
// port). Each returns a handle whose stop() ends only the process it started.
import { chmod, chown, mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import dgram from 'node:dgram';
import { join } from 'node:path';
import { run, spawnProcess, type Spawned } from '../../../agent/exec.js';
import { REPO_ROOT } from './build.js';

const READY_TIMEOUT_MS = 15_000;
const POSTGRES_USER = 'postgres';
export const PMACCT_DIR = join(REPO_ROOT, 'deploy/collectors/pmacct');

/** A UDP port free on 127.0.0.1 right now (the collector binds it next). */
export function freeUdpPort(): Promise<number> {
  const s = dgram.createSocket('udp4');
  return new Promise((resolve) =>
    s.bind(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    }),
  );
}

function freeTcpPort(): Promise<number> {
  const server = createServer();
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => resolve(port));
    }),
  );
}

export interface Nfcapd {
  port: number;
  /** Stops nfcapd (it writes its file on exit) and returns `nfdump -R` of everything it stored, one line per flow. */
  dump(format: string, filter?: string): Promise<string[]>;
  stop(): Promise<void>;
}

/** nfcapd on 127.0.0.1 writing into `dir`. */
export async function startNfcapd(dir: string): Promise<Nfcapd> {
  await mkdir(dir, { recursive: true });
  const port = await freeUdpPort();
  const proc = spawnProcess('nfcapd', ['-b', '127.0.0.1', '-p', String(port), '-w', dir]);
  await proc.waitForLine(/Startup/, READY_TIMEOUT_MS);
  const stop = async (): Promise<void> => {
    await proc.stop('SIGTERM');
  };
  return {
    port,
    stop,
    async dump(format, filter) {
      await stop();
      const args = ['-R', dir, '-q', '-N', '-o', `fmt:${format}`];
      const { stdout } = await run('nfdump', filter === undefined ? args : [...args, filter], { env: { ...process.env, TZ: 'UTC' } });
      return stdout.split('\n').filter((l) => l.trim() !== '');
    },
  };
}

export interface Postgres {
  port: number;
  /** Rows of a query as arrays of text fields (psql -At, '|' separated). */
  query(sql: string, db?: string, user?: string): Promise<string[][]>;
  stop(): Promise<void>;
}

/** A PostgreSQL cluster of its own in `dir` (trust auth), listening on 127.0.0.1 only. */
export async function startPostgres(dir: string): Promise<Postgres> {
  const versions = (await readdir('/usr/lib/postgresql')).sort((a, b) => Number(b) - Number(a));
  const bin = join('/usr/lib/postgresql', versions[0]!, 'bin');
  const { stdout: uid } = await run('id', ['-u', POSTGRES_USER]);
  const { stdout: gid } = await run('id', ['-g', POSTGRES_USER]);
  await mkdir(dir, { recursive: true });
  // The postgres user must reach its directory inside the test's (root-owned) temp dir.
  await chmod(join(dir, '..'), 0o711);
  await chown(dir, Number(uid), Number(gid));
  const data = join(dir, 'data');
  const asPostgres = (cmd: string, args: string[]) => run('runuser', ['-u', POSTGRES_USER, '--', join(bin, cmd), ...args]);
  await asPostgres('initdb', ['-D', data, '-A', 'trust', '-U', POSTGRES_USER, '--no-sync']);
  const port = await freeTcpPort();
  await asPostgres('pg_ctl', ['-D', data, '-w', '-l', join(dir, 'postgres.log'), '-o', `-c listen_addresses=127.0.0.1 -p ${port} -k ${dir} -c fsync=off`, 'start']);
  return {
    port,
    async query(sql, db = 'postgres', user = POSTGRES_USER) {
      const { stdout } = await run('psql', ['-h', '127.0.0.1', '-p', String(port), '-U', user, '-d', db, '-v', 'ON_ERROR_STOP=1', '-At', '-c', sql]);
      return stdout.split('\n').filter((l) => l !== '').map((l) => l.split('|'));
    },
    async stop() {
      await asPostgres('pg_ctl', ['-D', data, '-m', 'immediate', 'stop']).catch(() => undefined);
    },
  };
}

export interface Nfacctd {
  port: number;
  proc: Spawned;
  /** Rows the print plugin has written so far, as header → value maps. */
  printed(): Promise<Record<string, string>[]>;
  stop(): Promise<void>;
}

/**
 * nfacctd with deploy/collectors/pmacct/nfacctd.conf as shipped, changed only where a test
 * must: loopback and a random port, the test's database port, a 1 s refresh, paths in
 * `dir`; plus a print plugin (CSV) with the same primitives next to the pgsql one.
 */
export async function startNfacctd(dir: string, pgPort: number): Promise<Nfacctd> {
  await mkdir(dir, { recursive: true });
  const port = await freeUdpPort();
  const csv = join(dir, 'print.csv');
  const shipped = await readFile(join(PMACCT_DIR, 'nfacctd.conf'), 'utf8');
  const set = (text: string, key: string, value: string): string => {
    const re = new RegExp(`^${key.replace(/[[\]]/g, '\\$&')}:.*$`, 'm');
    if (!re.test(text)) throw new Error(`deploy nfacctd.conf has no ${key}`);
    return text.replace(re, `${key}: ${value}`);
  };
  let conf = shipped;
  conf = set(conf, 'nfacctd_ip', '127.0.0.1');
  conf = set(conf, 'nfacctd_port', String(port));
  conf = set(conf, 'nfacctd_templates_file', join(dir, 'templates.json'));
  conf = set(conf, 'aggregate_primitives', join(PMACCT_DIR, 'primitives.lst'));
  conf = set(conf, 'sql_port[flows]', String(pgPort));
  conf = set(conf, 'sql_refresh_time[flows]', '1');
  conf = set(conf, 'plugins', 'pgsql[flows], print[p]');
  const aggregate = /^aggregate\[flows\]: (.*)$/m.exec(conf)![1]!;
  conf += [
    `aggregate[p]: ${aggregate}`,
    'print_output[p]: csv',
    'print_num_protos[p]: true',
    `print_output_file[p]: ${csv}`,
    'print_output_file_append[p]: true',
    'print_refresh_time[p]: 1',
    '',
  ].join('\n');
  const file = join(dir, 'nfacctd.conf');
  await writeFile(file, conf);
  const proc = spawnProcess('nfacctd', ['-f', file]);
  await proc.waitForLine(/waiting for NetFlow\/IPFIX data on/, READY_TIMEOUT_MS);
  return {
    port,
    proc,
    async printed() {
      const text = await readFile(csv, 'utf8').catch(() => '');
      const rows: Record<string, string>[] = [];
      let headerLine: string | undefined;
      let header: string[] = [];
      for (const line of text.split('\n')) {
        if (line === '') continue;
        // Every refresh appends its own copy of the header line.
        if (headerLine === undefined || line === headerLine) {
          headerLine = line;
          header = line.split(',');
          continue;
        }
        const cells = line.split(',');
        rows.push(Object.fromEntries(header.map((h, i) => [h, cells[i] ?? ''])));
      }
      return rows;
    },
    async stop() {
      await proc.stop('SIGTERM', 10_000);
    },
  };
}

/** Polls `read` until `done` holds for its value or timeoutMs passes; returns the last value. */
export async function pollUntil<T>(read: () => Promise<T>, done: (v: T) => boolean, timeoutMs: number): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const v = await read();
    if (done(v) || Date.now() > until) return v;
    await new Promise((r) => setTimeout(r, 200));
  }
}
