// Starting the compiled agent for a measurement. A plane the host cannot run (the eBPF
// plane where its programs do not load) is recorded as unavailable, not a failed run.
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Spawned } from '../agent/exec.js';
import type { Topology } from '../agent/lab/topology.js';

const REPO = fileURLToPath(new URL('../../', import.meta.url));
/** BENCH_AGENT: another build's dist/agent/cli.js (e.g. the commit an issue was measured at), for before/after in one run. */
export const OTHER_AGENT = process.env.BENCH_AGENT;
const CLI = OTHER_AGENT ?? join(REPO, 'dist/agent/cli.js');
const READY_TIMEOUT_MS = 20_000;
/** pino's level for error; the agent logs one JSON object per line on stdout. */
const LEVEL_ERROR = 50;

/** The agent exited at start with an error about eBPF: the plane cannot run here. */
export class PlaneUnavailable extends Error {}

export type StartAgent = (file: string) => Promise<Spawned>;

/** The first error the agent reported: its message's first line, else its first stderr line. */
function firstError(agent: Spawned): string {
  // The agent logs errors on stderr, the rest on stdout.
  for (const line of [...agent.lines.stderr, ...agent.lines.stdout]) {
    try {
      const rec = JSON.parse(line) as { level?: number; msg?: string; err?: { message?: string } };
      if ((rec.level ?? 0) >= LEVEL_ERROR) return (rec.err?.message ?? rec.msg ?? line).split('\n')[0]!;
    } catch {
      continue;
    }
  }
  return agent.lines.stderr.find((l) => l.trim() !== '') ?? 'exited without a message';
}

/** Extra node options for the agent, e.g. BENCH_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof" to profile it under load. */
const NODE_ARGS = process.env.BENCH_NODE_ARGS?.split(' ').filter((a) => a !== '') ?? [];

/** Starts `node dist/agent/cli.js run --config file` in src and waits for "agent ready". */
export function agentStarter(t: Pick<Topology, 'spawn'>): StartAgent {
  return async (file) => {
    const agent = t.spawn('src', process.execPath, [...NODE_ARGS, CLI, 'run', '--config', file], { cwd: REPO });
    try {
      await agent.waitForLine(/"msg":"agent ready"/, READY_TIMEOUT_MS, { stream: 'stdout' });
    } catch (err) {
      const exited = !agent.running;
      await agent.stop('SIGTERM', 15_000);
      if (exited && /ebpf/i.test(agent.output())) throw new PlaneUnavailable(`unavailable: ${firstError(agent)}`);
      throw err;
    }
    return agent;
  };
}
