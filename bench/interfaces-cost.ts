// Issue 15's cost of many source interfaces: the agent on `sources: ["*"]` (a session to a
// target and a flow log) in a veth farm of 10, 50 and 200 pairs, per plane. Measured from
// the outside: start-up until "agent ready" (every interface attached), the agent's RSS
// (/proc/PID/status), the kernel memory it pins — packet rings (its mappings of socket
// files in /proc/PID/maps) and BPF maps (memlock of its map fds, /proc/PID/fdinfo) — and
// how long 10 interfaces created while it runs take to be covered (its log's time stamps).
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { createVethFarm, FARM_TARGET } from '../agent/lab/veth-farm.js';
import { agentStarter, PlaneUnavailable } from './agent.js';

export const INTERFACE_COUNTS = [10, 50, 200];
/** Interfaces created at once while the agent runs, for the coverage latency. */
const ADDED = 10;
const COVERED = /"msg":"source interfaces covered"/;

export interface InterfaceCostRow {
  plane: string;
  interfaces: number;
  /** Spawn to "agent ready" (ms). */
  startMs: number;
  rssMiB: number;
  /** Packet ring memory mapped by the agent (MiB). */
  ringMiB: number;
  /** memlock of the agent's BPF maps (MiB). */
  bpfMapMiB: number;
  /** From creating ADDED interfaces to the agent covering the last of them (ms). */
  addMs: number | null;
  unavailable?: string;
}

/** Bytes of the agent's mappings of socket files: AF_PACKET rings (`socket:[inode]` in /proc/PID/maps). */
async function ringBytes(pid: number): Promise<number> {
  let sum = 0;
  for (const line of (await readFile(`/proc/${pid}/maps`, 'utf8')).split('\n')) {
    if (!line.includes('socket:[')) continue;
    const [from, to] = line.split(' ')[0]!.split('-').map((h) => parseInt(h, 16));
    sum += to! - from!;
  }
  return sum;
}

/** memlock of every BPF map the agent holds a descriptor of, each map once (fdinfo: map_id, memlock). */
async function bpfMapBytes(pid: number): Promise<number> {
  const seen = new Map<string, number>();
  for (const fd of await readdir(`/proc/${pid}/fdinfo`)) {
    const info = await readFile(`/proc/${pid}/fdinfo/${fd}`, 'utf8').catch(() => '');
    const id = /^map_id:\s+(\d+)/m.exec(info)?.[1];
    const memlock = /^memlock:\s+(\d+)/m.exec(info)?.[1];
    if (id !== undefined && memlock !== undefined) seen.set(id, Number(memlock));
  }
  return [...seen.values()].reduce((a, b) => a + b, 0);
}

async function rssBytes(pid: number): Promise<number> {
  const kb = /^VmRSS:\s+(\d+) kB/m.exec(await readFile(`/proc/${pid}/status`, 'utf8'))?.[1];
  return Number(kb) * 1024;
}

const MiB = (b: number) => b / 2 ** 20;

export async function interfacesCost(planes: readonly string[]): Promise<InterfaceCostRow[]> {
  const rows: InterfaceCostRow[] = [];
  for (const plane of planes) {
    for (const count of INTERFACE_COUNTS) {
      const farm = await createVethFarm();
      try {
        await farm.add(count);
        const file = join(farm.workDir, 'agent.yaml');
        await writeFile(file, stringify({
          agent: { vmId: 'bench', dataPlane: plane, metrics: { listen: '' }, control: { socket: join(farm.workDir, 'run', 'c.sock') } },
          filters: [{ id: 'tf', ingressRules: [{ priority: 1, action: 'accept', protocol: 'ALL', sourceCidrBlock: '0.0.0.0/0', destinationCidrBlock: '0.0.0.0/0' }], egressRules: [] }],
          sessions: [{ id: 'ts', priority: 1, vni: 99, filterId: 'tf', sources: ['*'], target: { address: FARM_TARGET } }],
          flowLogs: [{ id: 'fl', sources: ['*'], window: 60, sink: { type: 'file', path: join(farm.workDir, 'flows.jsonl') } }],
        }), { mode: 0o600 });
        const started = performance.now();
        let agent;
        try {
          agent = await agentStarter(farm)(file);
        } catch (err) {
          if (!(err instanceof PlaneUnavailable)) throw err;
          rows.push({ plane, interfaces: count, startMs: 0, rssMiB: 0, ringMiB: 0, bpfMapMiB: 0, addMs: null, unavailable: err.message });
          break;
        }
        const startMs = performance.now() - started;
        const pid = agent.pid!;
        const createdAt = Date.now();
        const added = await farm.add(ADDED);
        const want = new Set(added.map((p) => p.name));
        let coveredAt = 0;
        for (let n = 1; want.size > 0; n++) {
          const line = await agent.waitForLine(COVERED, 10_000, { stream: 'stdout', count: n });
          const rec = JSON.parse(line) as { time: number; added: string[] };
          for (const name of rec.added) want.delete(name);
          coveredAt = rec.time;
        }
        rows.push({
          plane, interfaces: count, startMs, rssMiB: MiB(await rssBytes(pid)), ringMiB: MiB(await ringBytes(pid)),
          bpfMapMiB: MiB(await bpfMapBytes(pid)), addMs: coveredAt - createdAt,
        });
        await agent.stop('SIGTERM', 30_000);
      } finally {
        await farm.destroy();
      }
    }
  }
  return rows;
}

export function formatInterfacesCost(rows: InterfaceCostRow[]): string {
  if (rows.length === 0) return '';
  const f = (x: number) => x.toFixed(1);
  return [
    `Many source interfaces (\`sources: ["*"]\`: one session, one flow log; veth pairs of agent/lab/veth-farm.ts): start-up with every interface covered, memory, and ${ADDED} interfaces created while running until covered:`,
    '',
    '| plane | interfaces | start-up ms | RSS MiB | packet rings MiB | BPF maps MiB | +10 covered after ms |',
    '| --- | --- | --- | --- | --- | --- | --- |',
    ...rows.map((r) => (r.unavailable !== undefined
      ? `| ${r.plane} | ${r.interfaces} | ${r.unavailable} | | | | |`
      : `| ${r.plane} | ${r.interfaces} | ${r.startMs.toFixed(0)} | ${f(r.rssMiB)} | ${f(r.ringMiB)} | ${f(r.bpfMapMiB)} | ${r.addMs ?? '-'} |`)),
    '',
  ].join('\n');
}
