// The agent as a long-running daemon (issue 13), as a process: a start that fails exits at
// once, a stop ends in bounded time even with a stdout nobody reads, a burst of SIGHUPs
// costs a couple of reloads, a FIFO in place of the config is refused without a hang, a
// control edit never overwrites an edit made on disk, and the path MTU follows the route.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createReadStream } from 'node:fs';
import { lstat, mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises';
import net, { type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse, stringify } from 'yaml';
import { run, spawnProcess } from '../../agent/exec.js';
import { startCapture } from '../../agent/lab/lab.js';
import { createLabTopology, type Topology } from '../../agent/lab/topology.js';
import { AGENT_CLI, REPO_ROOT, ensureBuilt } from './helpers/build.js';
import { AGENT_TIMEOUT_MS, startLabAgent, type LabAgent } from './helpers/agent.js';
import { tsharkFields } from '../../agent/lab/lab.js';

const UDP_PORT = 4000;
const VNI = 4343;
const READY = /"msg":"agent ready"/;

/** RSS of a process in KiB, from /proc. */
async function rssKib(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1]);
}

describe('daemon: start and stop (real agent process)', () => {
  let dir: string;
  beforeAll(async () => {
    await ensureBuilt();
    dir = await mkdtemp(join(tmpdir(), 'mf-daemon-'));
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));

  it('exits 1 at once when the metrics port is in use, naming it, and leaves no control socket behind', async () => {
    const holder = net.createServer();
    await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', resolve));
    const port = (holder.address() as AddressInfo).port;
    const socket = join(dir, 'run', 'control.sock');
    const config = join(dir, 'port-in-use.yaml');
    await writeFile(config, stringify({
      agent: { vmId: 'd', dataPlane: 'pcap', metrics: { listen: `127.0.0.1:${port}` }, control: { socket } },
      filters: [], sessions: [], flowLogs: [],
    }), { mode: 0o600 });
    const started = Date.now();
    const agent = spawnProcess(process.execPath, [AGENT_CLI, 'run', '--config', config], { cwd: REPO_ROOT });
    const status = await agent.exited;
    holder.close();
    expect(status.code, agent.output()).toBe(1);
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(agent.output()).toContain(`agent.metrics.listen 127.0.0.1:${port}: the address is already in use`);
    await expect(lstat(socket)).rejects.toMatchObject({ code: 'ENOENT' });
  });
});

describe('daemon: under a lab (root, veth, real agent)', () => {
  let topo: Topology;

  beforeAll(async () => {
    await ensureBuilt();
    topo = await createLabTopology({ vnis: [VNI], keepFiles: process.env.MIRRORFLOW_E2E_KEEP === '1' });
  }, 60_000);
  afterAll(async () => {
    await topo?.destroy();
  }, 30_000);

  const session = (extra: Record<string, unknown> = {}) => ({
    id: 'ts-d', priority: 1, vni: VNI, filterId: 'tf', sources: [topo.srcIf], target: { address: topo.v4.dst }, ...extra,
  });
  const filter = () => ({
    id: 'tf', ingressRules: [],
    egressRules: [{ priority: 1, action: 'accept', protocol: 'UDP', sourceCidrBlock: '0.0.0.0/0', destinationCidrBlock: `${topo.v4.peerSrc}/32`, destinationPortRange: `${UDP_PORT}/${UDP_PORT}` }],
  });

  it('stop with a stdout sink whose reader is stuck: the process is gone by the deadline, non-zero, saying so on stderr', async () => {
    const deadlineMs = 3_000;
    const fifo = join(topo.workDir, 'stdout.fifo');
    await run('mkfifo', ['-m', '0600', fifo]);
    const config = join(topo.workDir, 'stuck.yaml');
    await writeFile(config, stringify({
      agent: { vmId: 'stuck', dataPlane: 'pcap', metrics: { listen: '' }, control: { socket: join(topo.workDir, 'stuck.sock') } },
      filters: [], sessions: [],
      flowLogs: [{ id: 'fl-stdout', sources: [topo.srcIf], window: 1, sink: { type: 'stdout' } }],
    }), { mode: 0o600 });
    const agent = topo.spawn('src', 'bash', ['-c', `exec "$0" "$1" run --config "$2" > "$3"`, process.execPath, AGENT_CLI, config, fifo], {
      cwd: REPO_ROOT, env: { ...process.env, MIRRORFLOW_STOP_DEADLINE_MS: String(deadlineMs) },
    });
    // Read until the agent is ready, then never again: the pipe fills and stays full.
    const reader = createReadStream(fifo, { highWaterMark: 4096 });
    let seen = '';
    await new Promise<void>((resolve, reject) => {
      const onData = (chunk: string | Buffer) => {
        seen += chunk.toString();
        if (READY.test(seen)) {
          reader.off('data', onData);
          reader.pause();
          resolve();
        }
      };
      reader.on('data', onData);
      reader.once('error', reject);
      setTimeout(() => reject(new Error(`agent not ready: ${agent.output()}`)), AGENT_TIMEOUT_MS).unref();
    });
    // Many flows per second, one record each per window: far more than the pipe holds.
    const flows = topo.spawn('src', process.execPath, ['-e', `
const s = require('node:dgram').createSocket('udp4'); s.on('error', () => {});
const b = Buffer.alloc(32); let n = 0;
setInterval(() => { for (let i = 0; i < 20; i++) s.send(b, 10000 + (n++ % 4000), '${topo.v4.peerSrc}', () => {}); }, 1);`]);
    try {
      // Records of two windows: well past the 64 KiB pipe and the reader's 4 KiB.
      await new Promise((r) => setTimeout(r, 2_500));
      const started = Date.now();
      process.kill(agent.pid!, 'SIGTERM');
      const status = await agent.exited;
      const took = Date.now() - started;
      // The deadline, plus the watchdog's grace when the main thread itself is blocked.
      expect(took, agent.output()).toBeLessThan(deadlineMs + 2_000 + 1_500);
      expect(status.code === 0, `exit ${status.code ?? status.signal}`).toBe(false);
      expect(agent.output()).toMatch(/stop deadline passed|records that could not be written/);
      // The records still queued when it ended are counted, not dropped silently.
      const lost = /"(?:recordsLost|recordsUnwritten)":(\d+)/.exec(agent.lines.stderr.join('\n'))?.[1];
      expect(Number(lost)).toBeGreaterThan(0);
      console.log(`stuck stdout: gone after ${took} ms, ${status.code ?? status.signal}: ${agent.lines.stderr.join(' | ')}`);
    } finally {
      await flows.stop('SIGKILL');
      reader.destroy();
    }
  }, 60_000);

  describe('reloads, config file and control edits', () => {
    let agent: LabAgent;
    beforeAll(async () => {
      agent = await startLabAgent(topo, { agent: { vmId: 'reloads', dataPlane: 'pcap' }, filters: [filter()], sessions: [session()] });
    }, 60_000);
    afterAll(async () => {
      await agent?.proc.stop('SIGTERM', 15_000);
    });

    it('coalesces 300 SIGHUPs over ~1 s into a few reloads, one at a time; the agent keeps answering', async () => {
      const reloadedBefore = await agent.metric('mirrorflow_config_reloads_total', { result: 'ok' });
      const rssBefore = await rssKib(agent.proc.pid!);
      for (let i = 0; i < 300; i++) {
        process.kill(agent.proc.pid!, 'SIGHUP');
        // Spread so each is delivered as its own signal (pending ones of a kind merge).
        await new Promise((r) => setTimeout(r, 2));
      }
      const first = agent.logCount(/"msg":"config reloaded"/);
      await agent.waitForLog(/"msg":"config reloaded"/, Math.max(first, 1));
      // Once the pending reload has run, nothing more comes: the count settles.
      let last = -1;
      let now = await agent.metric('mirrorflow_config_reloads_total', { result: 'ok' });
      while (now !== last) {
        last = now;
        await new Promise((r) => setTimeout(r, 1_000));
        now = await agent.metric('mirrorflow_config_reloads_total', { result: 'ok' });
      }
      const reloads = now - reloadedBefore;
      expect(reloads).toBeGreaterThanOrEqual(1);
      expect(reloads).toBeLessThan(40);
      expect((await agent.cli(['status'])).code).toBe(0);
      console.log(`300 SIGHUPs: ${reloads} reloads; RSS ${rssBefore} -> ${await rssKib(agent.proc.pid!)} KiB`);
    }, 60_000);

    it('a FIFO in place of the config: the reload is refused at once, naming it, and SIGHUP/edits/stop do not hang', async () => {
      const aside = `${agent.configFile}.aside`;
      await rename(agent.configFile, aside);
      await run('mkfifo', ['-m', '0600', agent.configFile]);
      try {
        const refused = agent.waitForLog(/"msg":"reload refused: keeping the running config"/, undefined, 5_000);
        process.kill(agent.proc.pid!, 'SIGHUP');
        expect(await refused).toContain(`${agent.configFile}: it is a FIFO (named pipe), not a regular file`);
        const edit = await agent.cli(['session', 'stop', 'ts-d']);
        expect(edit.code).toBe(1);
        expect(edit.err).toContain('FIFO');
        expect((await agent.cli(['status'])).code).toBe(0);
      } finally {
        await rm(agent.configFile);
        await rename(aside, agent.configFile);
      }
    }, 30_000);

    it('a control edit after an on-disk edit is refused naming what differs; after a reload it applies on top of it', async () => {
      const doc = parse(await readFile(agent.configFile, 'utf8')) as { sessions: Array<Record<string, unknown>> };
      doc.sessions[0]!.packetLength = 200;
      const onDisk = `# the operator's edit\n${stringify(doc)}`;
      await writeFile(agent.configFile, onDisk, { mode: 0o600 });
      const refused = await agent.cli(['session', 'stop', 'ts-d']);
      expect(refused.code).toBe(1);
      expect(refused.err).toContain('was changed on disk since it was loaded');
      expect(refused.err).toContain('sessions[0].packetLength');
      expect(await readFile(agent.configFile, 'utf8')).toBe(onDisk);
      const reloaded = agent.waitForLog(/"msg":"config reloaded"/);
      process.kill(agent.proc.pid!, 'SIGHUP');
      await reloaded;
      const applied = await agent.cli(['session', 'stop', 'ts-d']);
      expect(applied.code, applied.err).toBe(0);
      const after = parse(await readFile(agent.configFile, 'utf8')) as { sessions: Array<Record<string, unknown>> };
      expect(after.sessions[0]).toMatchObject({ packetLength: 200, enabled: false });
      // The agent's own write is what it compares with next: a second edit goes through.
      expect((await agent.cli(['session', 'start', 'ts-d'])).code).toBe(0);
    }, 30_000);
  });

  it.each(['pcap', 'ebpf'] as const)('%s plane: jumbo source, path shrinking to 1500: copies cut to 1450 once the route says so, no fragments, no EMSGSIZE', async (plane) => {
    const JUMBO = 9000;
    for (const [role, dev] of [['src', topo.srcIf], ['peer', topo.peerSrcIf], ['peer', topo.peerDstIf], ['dst', topo.dstIf]] as const) {
      await topo.exec(role, 'ip', ['link', 'set', dev, 'mtu', String(JUMBO)]);
    }
    const agent = await startLabAgent(topo, {
      agent: { vmId: 'jumbo', dataPlane: plane }, filters: [filter()], sessions: [session({ packetLength: 8500 })],
    });
    const outer = await startCapture(topo, 'dst', topo.dstIf, join(topo.workDir, `jumbo-${plane}.pcap`), ['udp', 'port', '4789', 'or', '(ip[6:2] & 0x3fff != 0)']);
    const sendBig = (n: number) => topo.exec('src', process.execPath, ['-e', `
const s = require('node:dgram').createSocket('udp4'); let left = ${n};
const next = () => { if (left-- === 0) return s.close(); s.send(Buffer.alloc(4000), ${UDP_PORT}, '${topo.v4.peerSrc}', () => setTimeout(next, 2)); };
next();`]);
    try {
      // The whole path at 9000: a 4042-byte frame is mirrored whole.
      await sendBig(5);
      await outer.waitFor(5, AGENT_TIMEOUT_MS);
      // The path shrinks (a 1500 hop), and the route to the target says so.
      await topo.exec('peer', 'ip', ['link', 'set', topo.peerDstIf, 'mtu', '1500']);
      await topo.exec('dst', 'ip', ['link', 'set', topo.dstIf, 'mtu', '1500']);
      const followed = agent.waitForLog(/"msg":"path MTU to mirror target changed/, undefined, 15_000);
      await topo.exec('src', 'ip', ['route', 'add', `${topo.v4.dst}/32`, 'via', topo.v4.peerSrc, 'mtu', '1500']);
      expect(await followed).toContain('"pathMtu":1500');
      const errorsBefore = await agent.metric('mirrorflow_mirror_send_errors_total', { session: 'ts-d' });
      const seen = outer.count();
      await sendBig(20);
      await outer.waitFor(seen + 20, AGENT_TIMEOUT_MS);
      await outer.stop();
      // Each field comma-joins its occurrences; the first is the outer header's.
      const rows = (await tsharkFields(outer.file, '', ['ip.flags.mf', 'ip.frag_offset', 'udp.length'])).map((r) => r.map((f) => f.split(',')[0]));
      const frags = rows.filter(([mf, off]) => mf === '1' || (off !== undefined && off !== '' && off !== '0'));
      expect(frags, 'IP fragments at the destination').toEqual([]);
      // Outer UDP length = 8 UDP + 8 VXLAN + inner frame.
      const inner = rows.map(([, , udpLen]) => Number(udpLen) - 16);
      expect(inner.slice(0, 5)).toEqual([4042, 4042, 4042, 4042, 4042]);
      expect(inner.slice(-20)).toEqual(Array(20).fill(1450));
      expect(await agent.metric('mirrorflow_mirror_send_errors_total', { session: 'ts-d' })).toBe(errorsBefore);
    } finally {
      await agent.proc.stop('SIGTERM', 15_000);
      await topo.exec('src', 'ip', ['route', 'del', `${topo.v4.dst}/32`]).catch(() => undefined);
    }
  }, 90_000);
});
