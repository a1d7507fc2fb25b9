// Faults the agent must ride out (root): the mirror target unreachable (no route), the
// target answering ICMP port unreachable (its vxlan device down), the source interface
// down and up, and kill -9 followed by a restart. Each shows in a metric and a log line,
// the agent stays up, and mirroring resumes by itself once the fault is gone.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { stringify } from 'yaml';
import type { Spawned } from '../../agent/lab/exec.js';
import { startCapture, type Capture } from '../../agent/lab/lab.js';
import { createLabTopology, type Topology } from '../../agent/lab/topology.js';
import { AGENT_CLI, REPO_ROOT, ensureBuilt } from './helpers/build.js';

const VNI = 4242;
const UDP_PORT = 4000;
const METRICS = '127.0.0.1:19478';
const TIMEOUT_MS = 20_000;

/** One datagram per millisecond to the peer (which answers port unreachable: fine). */
const SENDER = (host: string) => `
const s = require('node:dgram').createSocket('udp4');
s.on('error', () => {});
const buf = Buffer.alloc(64);
let n = 0;
setInterval(() => { s.send(buf, ${UDP_PORT}, '${host}', () => {}); if (++n % 100 === 0) console.log('sent ' + n); }, 1);`;

describe('faults: the agent survives and resumes by itself (root, veth, real agent)', () => {
  let topo: Topology;
  let agent: Spawned;
  let sender: Spawned;
  let decap: Capture;
  let configFile: string;
  let flowFile: string;

  const metric = async (name: string): Promise<number> => {
    const { stdout } = await topo.exec('src', 'curl', ['-s', `http://${METRICS}/metrics`]);
    return stdout.split('\n').filter((l) => l.startsWith(name)).reduce((sum, l) => sum + Number(l.split(' ').at(-1)), 0);
  };
  const sent = async (more: number) => {
    const now = sender.countLines(/^sent /, 'stdout');
    await sender.waitForLine(/^sent /, TIMEOUT_MS, { stream: 'stdout', count: now + more });
  };
  /** Waits until the destination has received `more` further copies. */
  const resumed = async (more: number) => decap.waitFor(decap.count() + more, TIMEOUT_MS);
  const startAgent = async () => {
    agent = topo.spawn('src', process.execPath, [AGENT_CLI, 'run', '--config', configFile], { cwd: REPO_ROOT });
    await agent.waitForLine(/"msg":"agent ready"/, TIMEOUT_MS, { stream: 'stdout' });
  };

  beforeAll(async () => {
    await ensureBuilt();
    topo = await createLabTopology({ vnis: [VNI], keepFiles: process.env.MIRRORFLOW_E2E_KEEP === '1' });
    configFile = join(topo.workDir, 'agent.yaml');
    flowFile = join(topo.workDir, 'flows.jsonl');
    await writeFile(configFile, stringify({
      agent: { vmId: 'faults', metrics: { listen: METRICS }, control: { socket: join(topo.workDir, 'run', 'control.sock') } },
      filters: [{ id: 'tf', ingressRules: [], egressRules: [{ priority: 1, action: 'accept', protocol: 'UDP', sourceCidrBlock: '0.0.0.0/0', destinationCidrBlock: `${topo.v4.peerSrc}/32`, destinationPortRange: `${UDP_PORT}/${UDP_PORT}` }] }],
      sessions: [{ id: 'ts-f', priority: 1, vni: VNI, filterId: 'tf', sources: [topo.srcIf], target: { address: topo.v4.dst } }],
      flowLogs: [{ id: 'fl-f', sources: [topo.srcIf], window: 1, sink: { type: 'file', path: flowFile } }],
    }), { mode: 0o600 });
    decap = await startCapture(topo, 'dst', topo.vxlan[0]!.name, join(topo.workDir, 'decap.pcap'), ['udp', 'port', String(UDP_PORT)]);
    await startAgent();
    sender = topo.spawn('src', process.execPath, ['-e', SENDER(topo.v4.peerSrc)]);
    await decap.waitFor(100, TIMEOUT_MS);
  }, 60_000);

  afterAll(async () => {
    await topo?.destroy();
  }, 30_000);

  it('target without a route: send errors counted and logged, copies resume when the route is back', async () => {
    const errors = await metric('mirrorflow_mirror_send_errors_total');
    await topo.exec('src', 'ip', ['route', 'add', 'unreachable', `${topo.v4.dst}/32`]);
    await sent(3);
    expect(await metric('mirrorflow_mirror_send_errors_total')).toBeGreaterThan(errors);
    await agent.waitForLine(/mirror send failing/, TIMEOUT_MS, { stream: 'stdout' });
    await topo.exec('src', 'ip', ['route', 'del', 'unreachable', `${topo.v4.dst}/32`]);
    await resumed(100);
  });

  it('target answering port unreachable (its vxlan device down): counted, resumes when it is up', async () => {
    const errors = await metric('mirrorflow_mirror_send_errors_total');
    const vx = topo.vxlan[0]!.name;
    await topo.exec('dst', 'ip', ['link', 'set', vx, 'down']);
    await sent(3);
    expect(await metric('mirrorflow_mirror_send_errors_total')).toBeGreaterThan(errors);
    await topo.exec('dst', 'ip', ['link', 'set', vx, 'up']);
    await resumed(100);
  });

  it('source interface down and up: capture comes back without a restart', async () => {
    await topo.exec('src', 'ip', ['link', 'set', topo.srcIf, 'down']);
    await topo.exec('src', 'ip', ['link', 'set', topo.srcIf, 'up']);
    // Link down drops the routes through it; put the default route back as an operator would.
    await topo.exec('src', 'ip', ['route', 'replace', 'default', 'via', topo.v4.peerSrc]);
    await resumed(100);
    expect(agent.running).toBe(true);
  });

  it('config file deleted before a reload: refused and logged, the running config keeps mirroring', async () => {
    const text = await readFile(configFile, 'utf8');
    await rm(configFile);
    process.kill(agent.pid!, 'SIGHUP');
    await agent.waitForLine(/reload refused.*|"msg":"reload refused: keeping the running config"/, TIMEOUT_MS, { stream: 'stdout' });
    expect(agent.lines.stdout.some((l) => l.includes('no such file'))).toBe(true);
    await resumed(100);
    await writeFile(configFile, text, { mode: 0o600 });
  });

  it('kill -9 then restart: starts cleanly (stale control socket), no partial flow log line, mirroring resumes', async () => {
    await agent.stop('SIGKILL');
    await startAgent();
    await resumed(100);
    const text = await readFile(flowFile, 'utf8');
    expect(text.endsWith('\n')).toBe(true);
    for (const line of text.split('\n').filter((l) => l !== '')) expect(() => JSON.parse(line)).not.toThrow();
    const exit = await agent.stop('SIGTERM', 15_000);
    expect(exit).toEqual({ code: 0, signal: null });
  });
});
