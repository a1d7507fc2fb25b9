// Flow log records with known contents for the analysis tests: two interfaces, IPv4 and
// IPv6 peers, TCP and UDP, REJECT traffic, NODATA and SKIPDATA windows; written as the
// file sink writes them (recordLine) into a current file and two rotations, the current
// one ending in part of a line as a file being written does.
import { mkdtemp, writeFile, appendFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FlowRecord } from '../../agent/flow/record.js';
import { recordLine } from '../../agent/sinks/jsonl-file.js';

export const WINDOW = 600;
/** 2025-12-01T00:00:00Z, a multiple of the window. */
export const T0 = 1_764_547_200;
export const WINDOWS = 6;

const PEERS_V4 = ['10.0.0.2', '10.0.0.3', '10.0.0.4'];
const PEERS_V6 = ['fd00::2', 'fd00:0:0:1::9'];
const LOCAL_V4 = '10.0.0.1';
const LOCAL_V6 = 'fd00::1';
const SCANNERS = ['198.18.5.1', '198.18.5.2', 'fd00:bad::7'];

/** A small deterministic generator (mulberry32), so the records vary without being random between runs. */
function prng(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function base(eni: string, start: number): Pick<FlowRecord, 'version' | 'vswitch-id' | 'vm-id' | 'vpc-id' | 'account-id' | 'eni-id' | 'start' | 'end'> {
  return { version: 1, 'vswitch-id': 'vsw-lab', 'vm-id': 'host-1', 'vpc-id': 'vpc-lab', 'account-id': '1234567890', 'eni-id': eni, start, end: start + WINDOW };
}

function status(eni: string, start: number, s: 'NODATA' | 'SKIPDATA', skipped?: number): FlowRecord {
  const r: FlowRecord = {
    ...base(eni, start), srcaddr: null, srcport: null, dstaddr: null, dstport: null, protocol: null, direction: null, packets: null, bytes: null,
    'log-status': s, action: null, 'tcp-flags': null, 'icmp-type': null, 'icmp-code': null, retrans: null, 'zero-win': null, 'rtt-us': null, 'mirrored-packets': null, 'mirror-session': null,
  };
  if (skipped !== undefined) r['skipped-packets'] = skipped;
  return r;
}

export function fixtureRecords(): FlowRecord[] {
  const rnd = prng(18);
  const int = (lo: number, hi: number): number => lo + Math.floor(rnd() * (hi - lo + 1));
  const out: FlowRecord[] = [];
  for (let w = 0; w < WINDOWS; w++) {
    const start = T0 + w * WINDOW;
    for (const eni of ['eth0', 'eth1']) {
      // eth1 is idle in the last two windows: NODATA, no other record.
      if (eni === 'eth1' && w >= WINDOWS - 2) {
        out.push(status(eni, start, 'NODATA'));
        continue;
      }
      for (const peer of [...PEERS_V4, ...PEERS_V6]) {
        const local = peer.includes(':') ? LOCAL_V6 : LOCAL_V4;
        const tcp = peer !== '10.0.0.4';
        for (const direction of ['out', 'in'] as const) {
          const packets = int(1, 400);
          const rtt = tcp && rnd() < 0.7 ? int(80, 5000) : null;
          out.push({
            ...base(eni, start),
            srcaddr: direction === 'out' ? local : peer, srcport: direction === 'out' ? 40000 + w : tcp ? 443 : 53,
            dstaddr: direction === 'out' ? peer : local, dstport: direction === 'out' ? (tcp ? 443 : 53) : 40000 + w,
            protocol: tcp ? 6 : 17, direction, packets, bytes: packets * int(60, 1500),
            'log-status': 'OK', action: 'ACCEPT', 'tcp-flags': tcp ? 27 : null, 'icmp-type': null, 'icmp-code': null,
            retrans: tcp ? int(0, 3) * (peer === '10.0.0.3' ? 5 : 1) : null, 'zero-win': tcp ? (peer === 'fd00::2' ? int(0, 4) : 0) : null,
            'rtt-us': rtt, 'mirrored-packets': packets, 'mirror-session': 'ts-1',
          });
        }
      }
      // Scanners knocking on closed ports, dropped by the host's filter.
      for (const [i, scanner] of SCANNERS.entries()) {
        const port = [22, 3389, 22][i]!;
        const v6 = scanner.includes(':');
        const packets = int(1, 30);
        out.push({
          ...base(eni, start), srcaddr: scanner, srcport: 50000 + w, dstaddr: v6 ? LOCAL_V6 : LOCAL_V4, dstport: port, protocol: 6, direction: 'in',
          packets, bytes: packets * 60, 'log-status': 'OK', action: 'REJECT', 'tcp-flags': 2, 'icmp-type': null, 'icmp-code': null, retrans: 0, 'zero-win': 0, 'rtt-us': null,
          'mirrored-packets': 0, 'mirror-session': null,
        });
      }
      if (eni === 'eth0' && w === 2) out.push(status(eni, start, 'SKIPDATA', 17));
      if (eni === 'eth1' && w === 1) out.push(status(eni, start, 'SKIPDATA', 5));
    }
  }
  return out;
}

export interface Fixture {
  dir: string;
  /** The current file; path.1 and path.2 are its rotations. */
  path: string;
  records: FlowRecord[];
  /** The bytes of a line cut short at the end of the current file. */
  cutLine: string;
}

/** Writes the records oldest first: a third to path.2, a third to path.1, the rest to path, then part of one more line. */
export async function writeFixture(records = fixtureRecords()): Promise<Fixture> {
  const dir = await mkdtemp(join(tmpdir(), 'mirrorflow-flows-'));
  const path = join(dir, 'flowlog.jsonl');
  const third = Math.ceil(records.length / 3);
  const lines = (rs: FlowRecord[]): string => rs.map(recordLine).join('');
  await writeFile(`${path}.2`, lines(records.slice(0, third)));
  await writeFile(`${path}.1`, lines(records.slice(third, 2 * third)));
  await writeFile(path, lines(records.slice(2 * third)));
  const extra = recordLine({ ...records[records.length - 1]!, bytes: 999_999_999 });
  const cutLine = extra.slice(0, Math.floor(extra.length / 2));
  await appendFile(path, cutLine);
  return { dir, path, records, cutLine };
}
