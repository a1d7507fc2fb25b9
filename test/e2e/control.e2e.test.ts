// Operating the running agent (root): the control socket starts and stops a session (the
// destination's vxlan device stops and resumes receiving), refuses invalid changes with
// validate's messages and leaves the file alone, is closed to non-root users; SIGHUP
// reloads under a sequenced UDP stream lose and duplicate nothing; SIGTERM exits 0.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { run, type Spawned } from '../../agent/lab/exec.js';
import { startCapture, type Capture } from '../../agent/lab/lab.js';
import { createLabTopology, type Topology } from '../../agent/lab/topology.js';
import { forEachFrame } from '../../agent/capture/pcap-file.js';
import { AGENT_CLI, REPO_ROOT, ensureBuilt } from './helpers/build.js';

const VNI = 4242;
const UDP_PORT = 4000;
const SESSION = 'ts-ctl';
const TIMEOUT_MS = 20_000;
/** Inner Ethernet 14 + IPv4 20 + UDP 8: where the sender's sequence number sits. */
const SEQ_OFFSET = 42;
const RELOADS = 3;
const MARKER_LEN = 99;

/** Sends one UDP datagram per millisecond carrying a sequence number; prints each 100th. */
const SENDER = (host: string) => `
const s = require('node:dgram').createSocket('udp4');
let seq = 0;
const buf = Buffer.alloc(64);
const timer = setInterval(() => { buf.writeUInt32BE(seq, 0); s.send(buf, ${UDP_PORT}, '${host}'); if (seq % 100 === 0) console.log('sent ' + seq); seq++; }, 1);
// On SIGUSR2: stop, and send a marker of another length on the same flow, so its arrival at
// the destination proves everything before it arrived (one flow, one socket, in order).
process.on('SIGUSR2', () => {
  clearInterval(timer);
  console.log('last ' + (seq - 1));
  s.send(Buffer.alloc(${MARKER_LEN}), ${UDP_PORT}, '${host}', () => process.exit(0));
});`;

describe('control socket, reload and shutdown under traffic (root, veth, real agent)', () => {
  let topo: Topology;
  let agent: Spawned;
  let sender: Spawned;
  let decap: Capture;
  let configFile: string;
  let socket: string;
  const cli = (args: string[], opts: { uid?: number } = {}) => {
    const argv = opts.uid === undefined
      ? ['ip', 'netns', 'exec', topo.ns.src, process.execPath, AGENT_CLI, ...args, '--socket', socket]
      : ['ip', 'netns', 'exec', topo.ns.src, 'setpriv', `--reuid=${opts.uid}`, `--regid=${opts.uid}`, '--clear-groups', process.execPath, AGENT_CLI, ...args, '--socket', socket];
    return run(argv[0]!, argv.slice(1), { cwd: REPO_ROOT }).then(
      (r) => ({ code: 0, out: r.stdout, err: r.stderr }),
      (e: { exitCode?: number | null; stdout?: string; stderr?: string }) => ({ code: e.exitCode ?? -1, out: e.stdout ?? '', err: e.stderr ?? '' }),
    );
  };
  const arrivals = () => decap.count();
  const sent = async (more: number) => {
    const now = sender.countLines(/^sent /, 'stdout');
    await sender.waitForLine(/^sent /, TIMEOUT_MS, { stream: 'stdout', count: now + more });
  };

  beforeAll(async () => {
    await ensureBuilt();
    topo = await createLabTopology({ vnis: [VNI], keepFiles: process.env.MIRRORFLOW_E2E_KEEP === '1' });
    socket = join(topo.workDir, 'run', 'control.sock');
    configFile = join(topo.workDir, 'agent.yaml');
    await writeFile(configFile, stringify({
      agent: { vmId: 'ctl', metrics: { listen: '' }, control: { socket } },
      filters: [{ id: 'tf-udp', ingressRules: [], egressRules: [{ priority: 1, action: 'accept', protocol: 'UDP', sourceCidrBlock: '0.0.0.0/0', destinationCidrBlock: `${topo.v4.dst}/32`, destinationPortRange: `${UDP_PORT}/${UDP_PORT}` }] }],
      sessions: [{ id: SESSION, priority: 1, vni: VNI, filterId: 'tf-udp', sources: [topo.srcIf], target: { address: topo.v4.dst } }],
    }), { mode: 0o600 });
    decap = await startCapture(topo, 'dst', topo.vxlan[0]!.name, join(topo.workDir, 'decap.pcap'), ['udp', 'port', String(UDP_PORT)]);
    agent = topo.spawn('src', process.execPath, [AGENT_CLI, 'run', '--config', configFile], { cwd: REPO_ROOT });
    await agent.waitForLine(/"msg":"agent ready"/, TIMEOUT_MS, { stream: 'stdout' });
    sender = topo.spawn('src', process.execPath, ['-e', SENDER(topo.v4.dst)]);
    await decap.waitFor(50, TIMEOUT_MS);
  }, 60_000);

  afterAll(async () => {
    await topo?.destroy();
  }, 30_000);

  it('session stop: the destination stops receiving; the file says enabled: false; start: it resumes', async () => {
    const stop = await cli(['session', 'stop', SESSION]);
    expect(stop.code, stop.err).toBe(0);
    const atStop = arrivals();
    await sent(3); // 300 more datagrams offered while stopped
    // A few copies already handed to the kernel may still land; the stream does not.
    expect(arrivals() - atStop).toBeLessThan(20);
    expect(await readFile(configFile, 'utf8')).toMatch(/enabled: false/);
    const list = await cli(['session', 'list']);
    expect(list.out).toMatch(new RegExp(`^${SESSION}\\s.*\\bno\\b`, 'm'));

    const start = await cli(['session', 'start', SESSION]);
    expect(start.code, start.err).toBe(0);
    const atStart = arrivals();
    await decap.waitFor(atStart + 100, TIMEOUT_MS);
    expect(await readFile(configFile, 'utf8')).not.toMatch(/enabled: false/);
  });

  it('refuses invalid changes with the reason and leaves the config file as it was', async () => {
    const before = await readFile(configFile, 'utf8');
    const unknown = await cli(['session', 'start', 'no-such-session']);
    expect(unknown.code).toBe(1);
    expect(unknown.err).toMatch(/no-such-session/);
    const badName = await cli(['session', 'add-source', SESSION, 'eth0;rm']);
    expect(badName.code).toBe(1);
    expect(badName.err).toMatch(/interface|name/i);
    expect(await readFile(configFile, 'utf8')).toBe(before);
  });

  it('is not reachable by a non-root user', async () => {
    const r = await cli(['status'], { uid: 65534 });
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/permission denied/i);
    const root = await cli(['status']);
    expect(root.code, root.err).toBe(0);
    expect(root.out).toMatch(/dataPlane: pcap/);
  });

  it('reloads under traffic (SIGHUP, also with a broken file) without losing or duplicating a packet', async () => {
    const good = await readFile(configFile, 'utf8');
    for (let i = 1; i <= RELOADS; i++) {
      process.kill(agent.pid!, 'SIGHUP');
      await agent.waitForLine(/"msg":"config reloaded"/, TIMEOUT_MS, { stream: 'stdout', count: i });
      await sent(1);
    }
    await writeFile(configFile, 'sessions: [ this is not valid');
    process.kill(agent.pid!, 'SIGHUP');
    await agent.waitForLine(/reload refused/, TIMEOUT_MS, { stream: 'stdout' });
    await writeFile(configFile, good);
    await sent(2);
    await sender.stop('SIGUSR2');
    const last = Number(/last (\d+)/.exec(sender.output())?.[1]);
    await decap.proc.waitForLine(new RegExp(`length ${MARKER_LEN}\\b`), TIMEOUT_MS, { stream: 'stdout' });
    const exit = await agent.stop('SIGTERM', 15_000);
    expect(exit).toEqual({ code: 0, signal: null });
    await decap.stop();
    const seqs: number[] = [];
    await forEachFrame(decap.file, (buf, caplen) => {
      if (caplen >= SEQ_OFFSET + 4) seqs.push(buf.readUInt32BE(SEQ_OFFSET));
    });
    // From the first datagram after the session restarted to the last one sent: all, once.
    const restartIdx = seqs.findIndex((s, i) => i > 0 && s - seqs[i - 1]! > 1);
    const tail = seqs.slice(restartIdx);
    const first = tail[0]!;
    const seen = new Map<number, number>();
    for (const s of tail) seen.set(s, (seen.get(s) ?? 0) + 1);
    const missing: number[] = [];
    const dup: number[] = [];
    for (let s = first; s <= last; s++) {
      const n = seen.get(s) ?? 0;
      if (n === 0) missing.push(s);
      if (n > 1) dup.push(s);
    }
    expect(last - first).toBeGreaterThan(500);
    expect({ missing, dup }).toEqual({ missing: [], dup: [] });
  }, 90_000);
});
