// Operating the running agent (root, veth lab, the compiled agent): the control socket's
// edits change what the destination receives and are written back to a file that stays
// valid; invalid edits are refused with validate's messages and change nothing; non-root
// users cannot connect. SIGHUP reloads (good ones, and ones refused for a syntax error, a
// world-writable file, a dangerous interface name, an unknown key) under a sequenced UDP
// stream lose and duplicate nothing. SIGTERM under traffic exits 0 in time and leaves the
// interface as it found it.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chmod, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parse, stringify } from 'yaml';
import type { Spawned } from '../../agent/exec.js';
import { startCapture, type Capture } from '../../agent/lab/lab.js';
import { createLabTopology, type Topology } from '../../agent/lab/topology.js';
import { ensureBuilt } from './helpers/build.js';
import { MARKER_LEN, gapsAndRepeats, sequencedSender, sequencesIn } from './helpers/sequenced.js';
import { AGENT_TIMEOUT_MS, alive, interfaceFootprint, settle, startLabAgent, validateFile, type LabAgent } from './helpers/agent.js';

const VNI = 4242;
const UDP_PORT = 4000;
const SESSION = 'ts-ctl';
const TIMEOUT_MS = AGENT_TIMEOUT_MS;
const RELOADS = 3;
/** The CLI's SIGTERM deadline (agent/cli.ts STOP_DEADLINE_MS): exit must come before it. */
const STOP_DEADLINE_MS = 10_000;

/** Issue lines (`path: reason`) of validate's or the control CLI's output, trimmed. */
const issueLines = (text: string) => text.split('\n').map((l) => l.trim()).filter((l) => /^[\w[\].]+: /.test(l) && !l.startsWith('MF_'));

describe('control socket, reload and shutdown under traffic (root, veth, real agent)', () => {
  let topo: Topology;
  let agent: LabAgent;
  let sender: Spawned;
  let decap: Capture;
  let footprintBefore: string;
  const sent = async (more: number) => {
    const now = sender.countLines(/^sent /, 'stdout');
    await sender.waitForLine(/^sent /, TIMEOUT_MS, { stream: 'stdout', count: now + more });
  };
  const arrivals = () => decap.count();
  const fileDoc = async () => parse(await readFile(agent.configFile, 'utf8')) as { sessions: { id: string; enabled?: boolean; sources: string[] }[] };

  beforeAll(async () => {
    await ensureBuilt();
    topo = await createLabTopology({ vnis: [VNI], keepFiles: process.env.MIRRORFLOW_E2E_KEEP === '1' });
    footprintBefore = await interfaceFootprint(topo, 'src', topo.srcIf);
    decap = await startCapture(topo, 'dst', topo.vxlan[0]!.name, join(topo.workDir, 'decap.pcap'), ['udp', 'port', String(UDP_PORT)]);
    agent = await startLabAgent(topo, {
      agent: { vmId: 'ctl' },
      filters: [{ id: 'tf-udp', ingressRules: [], egressRules: [{ priority: 1, action: 'accept', protocol: 'UDP', sourceCidrBlock: '0.0.0.0/0', destinationCidrBlock: `${topo.v4.dst}/32`, destinationPortRange: `${UDP_PORT}/${UDP_PORT}` }] }],
      sessions: [{ id: SESSION, priority: 1, vni: VNI, filterId: 'tf-udp', sources: [topo.srcIf], target: { address: topo.v4.dst } }],
    });
    sender = topo.spawn('src', process.execPath, ['-e', sequencedSender(topo.v4.dst, UDP_PORT)]);
    await decap.waitFor(50, TIMEOUT_MS);
  }, 60_000);

  afterAll(async () => {
    await topo?.destroy();
  }, 30_000);

  it('session stop: the destination stops receiving, the file says enabled: false; start: it resumes; the file stays valid', async () => {
    const stop = await agent.cli(['session', 'stop', SESSION]);
    expect(stop.code, stop.err).toBe(0);
    const atStop = arrivals();
    await sent(3); // 300 more datagrams offered while stopped
    // A few copies already handed to the kernel may still land; the stream does not.
    expect(arrivals() - atStop).toBeLessThan(20);
    expect((await fileDoc()).sessions[0]!.enabled).toBe(false);
    expect((await validateFile(agent.configFile)).code).toBe(0);
    expect((await stat(agent.configFile)).mode & 0o777).toBe(0o600);
    const list = await agent.cli(['session', 'list']);
    expect(list.out).toMatch(new RegExp(`^${SESSION}\\s.*\\bno\\b`, 'm'));

    const start = await agent.cli(['session', 'start', SESSION]);
    expect(start.code, start.err).toBe(0);
    await decap.waitFor(arrivals() + 100, TIMEOUT_MS);
    expect((await fileDoc()).sessions[0]!.enabled ?? true).toBe(true);
    expect((await validateFile(agent.configFile)).code).toBe(0);
  });

  it('remove-source / add-source: removing the interface stops the copies, adding it back resumes them', async () => {
    // A session keeps at least one source: park it on lo while the real one is removed.
    expect((await agent.cli(['session', 'add-source', SESSION, 'lo'])).code).toBe(0);
    const removed = await agent.cli(['session', 'remove-source', SESSION, topo.srcIf]);
    expect(removed.code, removed.err).toBe(0);
    expect((await fileDoc()).sessions[0]!.sources).toEqual(['lo']);
    const atRemove = arrivals();
    await sent(3);
    expect(arrivals() - atRemove).toBeLessThan(20);

    const added = await agent.cli(['session', 'add-source', SESSION, topo.srcIf]);
    expect(added.code, added.err).toBe(0);
    await decap.waitFor(arrivals() + 100, TIMEOUT_MS);
    expect((await agent.cli(['session', 'remove-source', SESSION, 'lo'])).code).toBe(0);
    expect((await fileDoc()).sessions[0]!.sources).toEqual([topo.srcIf]);
    expect((await validateFile(agent.configFile)).code).toBe(0);
    await decap.waitFor(arrivals() + 100, TIMEOUT_MS);
  });

  it('refuses invalid changes with the messages validate gives, and changes neither the file nor what is mirrored', async () => {
    const before = await readFile(agent.configFile, 'utf8');
    const listBefore = (await agent.cli(['session', 'list'])).out;

    const unknown = await agent.cli(['session', 'start', 'no-such-session']);
    expect(unknown.code).toBe(1);
    expect(unknown.err).toMatch(/no session "no-such-session" \(defined: ts-ctl\)/);
    const notMember = await agent.cli(['session', 'remove-source', SESSION, 'eth9']);
    expect(notMember.code).toBe(1);
    expect(notMember.err).toMatch(/has no source "eth9"/);

    // The same edits written into a file: validate's issue lines and the control refusal's must agree.
    for (const [args, edit] of [
      [['session', 'add-source', SESSION, 'eth0;rm -rf /'], (d: Awaited<ReturnType<typeof fileDoc>>) => d.sessions[0]!.sources.push('eth0;rm -rf /')],
      [['session', 'remove-source', SESSION, topo.srcIf], (d: Awaited<ReturnType<typeof fileDoc>>) => d.sessions[0]!.sources.splice(0, 1)],
    ] as const) {
      const refused = await agent.cli(args);
      expect(refused.code).toBe(1);
      const doc = await fileDoc();
      edit(doc);
      const file = join(topo.workDir, 'edited.yaml');
      await writeFile(file, stringify(doc), { mode: 0o600 });
      const validated = await validateFile(file);
      expect(validated.code).toBe(1);
      // validate names the file on each line; the control socket's refusal is about the running config.
      const validatedIssues = issueLines(validated.err.replaceAll(`${file}: `, ''));
      expect(validatedIssues.length).toBeGreaterThan(0);
      expect(issueLines(refused.err)).toEqual(validatedIssues);
    }

    expect(await readFile(agent.configFile, 'utf8')).toBe(before);
    expect((await agent.cli(['session', 'list'])).out).toBe(listBefore);
    await decap.waitFor(arrivals() + 100, TIMEOUT_MS);
  });

  it('is not reachable by a non-root user', async () => {
    const r = await agent.cli(['status'], { uid: 65534 });
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/permission denied/i);
    const edit = await agent.cli(['session', 'stop', SESSION], { uid: 65534 });
    expect(edit.code).toBe(1);
    expect((await fileDoc()).sessions[0]!.enabled ?? true).toBe(true);
    const root = await agent.cli(['status']);
    expect(root.code, root.err).toBe(0);
    // auto picks the kernel plane where the programs load (CI machines do).
    expect(root.out).toMatch(/dataPlane: ebpf/);
  });

  it('reloads under traffic (changed configs; refused broken, world-writable, dangerous ones) without losing or duplicating a packet', async () => {
    const fromIndex = arrivals();
    const reloadsOk = await agent.metric('mirrorflow_config_reloads_total', { result: 'ok' });
    const good = parse(await readFile(agent.configFile, 'utf8')) as { filters: { egressRules: unknown[] }[] };
    const write = (doc: unknown) => writeFile(agent.configFile, typeof doc === 'string' ? doc : stringify(doc));
    const reloaded = /"msg":"config reloaded"/;
    const refused = /"msg":"reload refused: keeping the running config"/;
    for (let i = 1; i <= RELOADS; i++) {
      // Each reload really changes the rules (one more rule that matches nothing we send).
      const changed = structuredClone(good);
      for (let p = 0; p < i; p++) {
        changed.filters[0]!.egressRules.push({ priority: 10 + p, action: 'accept', protocol: 'TCP', sourceCidrBlock: '0.0.0.0/0', destinationCidrBlock: '0.0.0.0/0', destinationPortRange: `${7000 + p}/${7000 + p}` });
      }
      await write(changed);
      const waiting = agent.waitForLog(reloaded);
      process.kill(agent.proc.pid!, 'SIGHUP');
      await waiting;
      await sent(1);
    }
    const bad: [string, () => Promise<void>, RegExp][] = [
      ['syntax error', () => write('sessions: [ this is not valid'), /line \d+/],
      ['world-writable', async () => { await write(good); await chmod(agent.configFile, 0o666); }, /world-writable/],
      ['dangerous name', () => write({ ...good, sessions: [{ id: SESSION, priority: 1, vni: VNI, filterId: 'tf-udp', sources: ['$(reboot)'], target: { address: topo.v4.dst } }] }), /sources\[0\]/],
      ['unknown key', () => write({ ...good, surprise: true }), /surprise: unknown key/],
    ];
    for (const [what, inject, reason] of bad) {
      await inject();
      const waiting = agent.waitForLog(refused);
      process.kill(agent.proc.pid!, 'SIGHUP');
      const line = await waiting;
      expect(line, what).toMatch(reason);
      await chmod(agent.configFile, 0o600);
      await sent(1);
    }
    await write(good);
    expect(agent.logCount(reloaded)).toBe(RELOADS);
    expect(await agent.metric('mirrorflow_config_reloads_total', { result: 'ok' })).toBe(reloadsOk + RELOADS);
    expect(await agent.metric('mirrorflow_config_reloads_total', { result: 'refused' })).toBe(bad.length);
    await sent(2);
    await sender.stop('SIGUSR2');
    const last = Number(/last (\d+)/.exec(sender.output())?.[1]);
    await decap.proc.waitForLine(new RegExp(`length ${MARKER_LEN}\\b`), TIMEOUT_MS, { stream: 'stdout' });
    await decap.stop();
    // From the first datagram this test saw to the last one sent: every one, once.
    const tail = (await sequencesIn(decap.file)).slice(fromIndex);
    const first = tail[0]!;
    const { missing, dup } = gapsAndRepeats(tail, first, last);
    expect(last - first).toBeGreaterThan(700);
    expect({ missing, dup }).toEqual({ missing: [], dup: [] });
    expect(agent.proc.running).toBe(true);
  }, 90_000);

  it('SIGTERM under traffic: exits 0 before the deadline; nothing left on the interface, no socket, no endpoint', async () => {
    decap = await startCapture(topo, 'dst', topo.vxlan[0]!.name, join(topo.workDir, 'decap-term.pcap'), ['udp', 'port', String(UDP_PORT)]);
    sender = topo.spawn('src', process.execPath, ['-e', sequencedSender(topo.v4.dst, UDP_PORT)]);
    await decap.waitFor(100, TIMEOUT_MS);
    const pid = agent.proc.pid!;
    const started = performance.now();
    const exit = await agent.proc.stop('SIGTERM', STOP_DEADLINE_MS + 5000);
    const tookMs = performance.now() - started;
    expect(exit).toEqual({ code: 0, signal: null });
    expect(tookMs).toBeLessThan(STOP_DEADLINE_MS);
    expect(agent.logCount(/"msg":"agent stopped"/)).toBe(1);
    expect(alive(pid)).toBe(false);
    await expect(stat(agent.socket)).rejects.toMatchObject({ code: 'ENOENT' });
    const scrape = await settle(topo.exec('src', 'curl', ['-sS', '--max-time', '2', `http://${agent.metricsListen}/metrics`]));
    expect(scrape.code).not.toBe(0);
    // The traffic itself kept flowing through the interface the agent let go of.
    await sent(1);
    expect(await interfaceFootprint(topo, 'src', topo.srcIf)).toBe(footprintBefore);
  }, 40_000);
});
