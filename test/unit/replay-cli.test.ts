// `mirrorflow replay` as the README shows it, run as a process: a plain `tcpdump -w` file of
// real traffic replayed with --interface naming the host interface it was captured on
// (directions from that interface's MAC), and what a user gets when something is off: the
// missing input, a file without directions (classic pcap, and pcapng without flags), each
// with a message saying what to pass, exit code 1, and no OUT file left behind.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync } from 'node:fs';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { createLabTopology, type Topology } from '../../agent/lab/topology.js';
import { CommandError, run } from '../../agent/exec.js';
import { buildPacket, pcapFile } from '../helpers/build-packet.js';
import { AGENT_CLI, ensureBuilt } from '../e2e/helpers/build.js';
import { pcapngBlock, pcapngOption, pcapngSectionHeader } from '../helpers/pcapng.js';

/** Connection attempts to a closed port of the peer: a SYN out, a RST back, each. */
const ATTEMPTS = 3;
const CLOSED_PORT = 7999;
const VNI = 4321;
const LISTEN_TIMEOUT_MS = 10_000;

interface Outcome {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the CLI (in the lab's src namespace when `inLab`); never throws on a non-zero exit. */
async function cli(args: string[], lab?: Topology): Promise<Outcome> {
  try {
    const r = lab ? await lab.exec('src', 'node', [AGENT_CLI, ...args]) : await run('node', [AGENT_CLI, ...args]);
    return { code: 0, ...r };
  } catch (err) {
    if (!(err instanceof CommandError)) throw err;
    return { code: err.exitCode ?? -1, stdout: err.stdout, stderr: err.stderr };
  }
}

describe('mirrorflow replay (command line)', () => {
  let lab: Topology;
  let configFile: string;
  let liveSink: string;

  beforeAll(async () => {
    await ensureBuilt();
    lab = await createLabTopology();
    liveSink = join(lab.workDir, 'live-flows.jsonl');
    configFile = join(lab.workDir, 'replay.yaml');
    // Egress TCP only: the SYNs leave srcIf, the peer's RSTs arrive on it.
    const tcp = { priority: 1, action: 'accept', protocol: 'TCP', sourceCidrBlock: '0.0.0.0/0', destinationCidrBlock: '0.0.0.0/0' };
    await writeFile(configFile, stringify({
      agent: { vmId: 'replay-cli', metrics: { listen: '' } },
      filters: [{ id: 'tf-out', egressRules: [tcp] }],
      sessions: [{ id: 'ts-1', priority: 1, vni: VNI, filterId: 'tf-out', sources: [lab.srcIf], target: { address: '198.19.255.1' } }],
      flowLogs: [{ id: 'fl-1', sources: [lab.srcIf], window: 60, sink: { type: 'file', path: liveSink } }],
    }));
  }, 60_000);
  afterAll(() => lab?.destroy());

  it('replays a plain tcpdump -w file with --interface: directions from that interface\'s MAC on this host', async () => {
    const input = join(lab.workDir, 'ping.pcap');
    const out = join(lab.workDir, 'out.pcap');
    const flows = join(lab.workDir, 'replayed.jsonl');
    const tcpdump = lab.spawn('src', 'tcpdump', ['-i', lab.srcIf, '-w', input, '-U', '-c', String(2 * ATTEMPTS), 'tcp']);
    await tcpdump.waitForLine(/listening on/, LISTEN_TIMEOUT_MS, { stream: 'stderr' });
    const connect = `let n = ${ATTEMPTS}; const next = () => n-- && require('node:net').connect(${CLOSED_PORT}, '${lab.v4.peerSrc}').on('error', next); next();`;
    await lab.exec('src', process.execPath, ['-e', connect]);
    expect((await tcpdump.exited).code).toBe(0);

    const r = await cli(['replay', '--config', configFile, '--pcap', input, '--interface', lab.srcIf, '--out', out, '--flow-log-out', flows], lab);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const summary = JSON.parse(r.stdout) as { frames: number; mirrored: Record<string, number>; directions: string };
    expect(summary.frames).toBe(2 * ATTEMPTS);
    // Only the outbound half (the SYNs) matches the egress rule.
    expect(summary.mirrored).toEqual({ 'ts-1': ATTEMPTS });
    expect(summary.directions).toContain(lab.srcMac);

    // tshark, not our decoder: the copies carry the SYNs from src to its peer.
    const { stdout } = await run('tshark', ['-r', out, '-n', '-T', 'fields', '-e', 'vxlan.vni', '-e', 'tcp.flags', '-e', 'ip.src', '-e', 'tcp.dstport']);
    const rows = stdout.trim().split('\n').map((l) => l.split('\t'));
    expect(rows).toHaveLength(ATTEMPTS);
    for (const [vni, flags, src, dport] of rows) {
      expect(vni).toBe(String(VNI));
      expect(flags).toBe('0x0002');
      expect(src?.split(',').at(-1)).toBe(lab.v4.src);
      expect(dport).toBe(String(CLOSED_PORT));
    }
    // The records went to --flow-log-out, not to the live agent's sink.
    const records = (await readFile(flows, 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(records.length).toBeGreaterThan(0);
    expect(records.some((rec) => rec['srcaddr'] === lab.v4.src && rec['dstaddr'] === lab.v4.peerSrc)).toBe(true);
    expect(existsSync(liveSink)).toBe(false);
  });

  it('without --interface says what to pass, exits 1 and leaves no OUT file', async () => {
    const input = join(lab.workDir, 'nodir.pcap');
    const out = join(lab.workDir, 'never.pcap');
    await writeFile(input, pcapFile([buildPacket({ src: '10.0.0.1', dst: '10.0.0.2', proto: 'icmp' })]));
    const r = await cli(['replay', '--config', configFile, '--pcap', input, '--out', out]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/classic pcap file \(tcpdump -w\) records no packet directions: pass --interface NAME .* or --local-mac MAC/);
    expect(r.stderr).not.toMatch(/\n\s+at /); // no stack trace
    expect(existsSync(out)).toBe(false);
    expect((await readdir(lab.workDir)).filter((f) => f.includes('never.pcap'))).toEqual([]);
  });

  it('names pcapng files without direction flags as such, not as classic pcap', async () => {
    const input = join(lab.workDir, 'noflags.pcapng');
    const frame = buildPacket({ src: '10.0.0.1', dst: '10.0.0.2', proto: 'icmp' });
    const idb = pcapngBlock(1, Buffer.concat([Buffer.from([1, 0, 0, 0, 0xff, 0xff, 0, 0]), pcapngOption(0, Buffer.alloc(0))]));
    const head = Buffer.alloc(20);
    head.writeUInt32LE(frame.length, 12);
    head.writeUInt32LE(frame.length, 16);
    const epb = pcapngBlock(6, Buffer.concat([head, frame, Buffer.alloc(((frame.length + 3) & ~3) - frame.length)]));
    await writeFile(input, Buffer.concat([pcapngSectionHeader(), idb, epb]));
    const r = await cli(['replay', '--config', configFile, '--pcap', input]);
    expect(r.code).toBe(1);
    expect(r.stderr).not.toContain('classic pcap');
    expect(r.stderr).toMatch(/carry no direction flags \(pcapng epb_flags\): pass --interface NAME/);
  });

  it('reports a missing input as such, without a raw ENOENT, and writes no OUT', async () => {
    const out = join(lab.workDir, 'missing-out.pcap');
    const r = await cli(['replay', '--config', configFile, '--pcap', join(lab.workDir, 'nope.pcap'), '--out', out]);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(`replay: cannot read capture file ${join(lab.workDir, 'nope.pcap')}: no such file [MF_CAPTURE_FILE]\n`);
    expect(existsSync(out)).toBe(false);
  });
});
