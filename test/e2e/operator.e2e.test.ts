// The running agent as an operator drives it (root, veth lab, the compiled agent): `status`
// and `session list` find the control socket from --config, --json prints what scripts
// parse, `session stop|start` confirm in one line, and the metrics series of an interface
// removed with `session remove-source` leave /metrics.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Topology } from '../../agent/lab/topology.js';
import { createLabTopology } from '../../agent/lab/topology.js';
import { ensureBuilt, AGENT_CLI, REPO_ROOT } from './helpers/build.js';
import { settle, startLabAgent, type CliResult, type LabAgent } from './helpers/agent.js';

const SESSION = 'ts-op';
const UDP_PORT = 4100;
const DATAGRAMS = 50;

describe('operator commands against a running agent (root, veth, real agent)', () => {
  let topo: Topology;
  let agent: LabAgent;
  /** `mirrorflow ARGS` in the agent's namespace, without --socket. */
  const cli = (args: string[]): Promise<CliResult> =>
    settle(topo.exec('src', process.execPath, [AGENT_CLI, ...args], { cwd: REPO_ROOT }));
  const scrape = async () => (await topo.exec('src', 'curl', ['-sS', '--max-time', '5', `http://${agent.metricsListen}/metrics`])).stdout;

  beforeAll(async () => {
    await ensureBuilt();
    topo = await createLabTopology();
    agent = await startLabAgent(topo, {
      agent: { vmId: 'op' },
      filters: [{ id: 'tf-udp', egressRules: [{ priority: 1, action: 'accept', protocol: 'UDP', sourceCidrBlock: '0.0.0.0/0', destinationCidrBlock: '0.0.0.0/0' }] }],
      sessions: [{ id: SESSION, priority: 1, vni: 4242, filterId: 'tf-udp', sources: [topo.srcIf, 'lo'], target: { address: topo.v4.dst } }],
    });
  }, 60_000);
  afterAll(async () => {
    await agent?.proc.stop();
    await topo?.destroy();
  }, 30_000);

  it('status and session list find the socket from --config and print JSON with --json', async () => {
    const status = await cli(['status', '--config', agent.configFile, '--json']);
    expect(status.code, status.err).toBe(0);
    const parsed = JSON.parse(status.out) as { dataPlane: string; configPath: string; sessions: { id: string }[] };
    expect(['ebpf', 'pcap']).toContain(parsed.dataPlane);
    expect(parsed.configPath).toBe(agent.configFile);
    expect(parsed.sessions.map((s) => s.id)).toEqual([SESSION]);

    const list = await cli(['session', 'list', '--config', agent.configFile, '--json']);
    expect(list.code, list.err).toBe(0);
    expect((JSON.parse(list.out) as { sessions: { id: string; enabled: boolean }[] }).sessions).toMatchObject([{ id: SESSION, enabled: true }]);
    const table = await cli(['session', 'list', '--config', agent.configFile]);
    expect(table.out).toMatch(new RegExp(`^ID\\s+NAME\\s+ENABLED.*\\n${SESSION}\\s`));
  });

  it('session stop and start confirm in one line, and say when nothing changed', async () => {
    const args = ['--config', agent.configFile];
    expect((await cli(['session', 'stop', SESSION, ...args])).out).toBe(`session ${SESSION} stopped (written to the config file)\n`);
    expect((await cli(['session', 'stop', SESSION, ...args])).out).toBe(`session ${SESSION} was already stopped\n`);
    expect((await cli(['session', 'start', SESSION, ...args])).out).toBe(`session ${SESSION} started (written to the config file)\n`);
  });

  it('remove-source: the removed interface\'s series leave /metrics', async () => {
    const send = `const s = require('node:dgram').createSocket('udp4'); let n = ${DATAGRAMS}; const next = () => n-- ? s.send(Buffer.alloc(32), ${UDP_PORT}, '${topo.v4.peerSrc}', next) : s.close(); next();`;
    await topo.exec('src', process.execPath, ['-e', send]);
    await agent.waitForMetric('mirrorflow_mirror_packets_total', { session: SESSION }, (v) => v >= DATAGRAMS);
    const series = (text: string) => text.split('\n').filter((l) => !l.startsWith('#') && l.includes(`interface="${topo.srcIf}"`));
    expect(series(await scrape()).length).toBeGreaterThan(0);

    const removed = await cli(['session', 'remove-source', SESSION, topo.srcIf, '--config', agent.configFile]);
    expect(removed.out).toBe(`session ${SESSION}: removed source ${topo.srcIf}; sources: lo (written to the config file)\n`);
    const after = await scrape();
    expect(series(after)).toEqual([]);
    // The session's own counters keep their totals: it is still configured.
    expect(Number(/^mirrorflow_mirror_packets_total\{session="ts-op"\} (\d+)/m.exec(after)?.[1])).toBeGreaterThanOrEqual(DATAGRAMS);
  });
});
