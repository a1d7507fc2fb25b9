// `mirrorflow replay` and the capture-file reader/writer: the copies it writes are checked by
// tshark (VXLAN VNI, port 4789, source port range, IPv4 header and IPv6 UDP checksums) and
// byte for byte against the frames that went in, cut as SPEC §3 says.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { stringify } from 'yaml';
import { buildPacket, DEFAULT_DST_MAC, DEFAULT_SRC_MAC, pcapFile, arpRequest } from '../helpers/build-packet.js';
import { forEachFrame, PcapWriter } from '../../agent/capture/pcap-file.js';
import { replay } from '../../agent/replay.js';
import { createLogger } from '../../agent/log.js';
import { pcapngBlock, pcapngOption, pcapngSectionHeader } from '../helpers/pcapng.js';

const logger = createLogger('silent');

const run = promisify(execFile);
const VNI_V4 = 77;
const VNI_V6 = 88;
const TRUNC_V6 = 100;
const MTU = 1500;
const OUTER_V4 = 14 + 20 + 8 + 8;
const OUTER_V6 = 14 + 40 + 8 + 8;

const rule = (priority: number, action: string, protocol: string, src: string, dst: string, dport = '-1/-1') => ({
  priority, action, protocol, sourceCidrBlock: src, destinationCidrBlock: dst, sourcePortRange: '-1/-1', destinationPortRange: dport,
});

const config = {
  agent: { vmId: 'replay-test', metrics: { listen: '' } },
  filters: [
    {
      id: 'tf-v4',
      ingressRules: [],
      egressRules: [rule(1, 'drop', 'UDP', '0.0.0.0/0', '0.0.0.0/0', '53/53'), rule(2, 'accept', 'ALL', '0.0.0.0/0', '0.0.0.0/0')],
    },
    { id: 'tf-v6', ingressRules: [rule(1, 'accept', 'ICMP', '::/0', '::/0')], egressRules: [] },
  ],
  sessions: [
    { id: 'ts-v4', priority: 1, vni: VNI_V4, filterId: 'tf-v4', sources: ['eth0'], target: { address: '10.9.9.9' } },
    { id: 'ts-v6', priority: 2, vni: VNI_V6, packetLength: TRUNC_V6, filterId: 'tf-v6', sources: ['eth0'], target: { address: 'fd00::9' } },
  ],
};

/** An inbound frame: sent by the peer to our MAC. */
function inbound(frame: Buffer): Buffer {
  const f = Buffer.from(frame);
  Buffer.from(DEFAULT_SRC_MAC.replaceAll(':', ''), 'hex').copy(f, 0);
  Buffer.from(DEFAULT_DST_MAC.replaceAll(':', ''), 'hex').copy(f, 6);
  return f;
}

const outTcp = buildPacket({ src: '10.0.0.1', dst: '10.0.0.2', proto: 'tcp', srcPort: 40000, dstPort: 80, tcpFlags: 0x02 });
const outDns = buildPacket({ src: '10.0.0.1', dst: '10.0.0.2', proto: 'udp', srcPort: 40001, dstPort: 53, payload: 30 });
const outBig = buildPacket({ src: '10.0.0.1', dst: '10.0.0.2', proto: 'udp', srcPort: 40002, dstPort: 9000, payload: 3000 });
const inPing6 = inbound(buildPacket({ src: 'fd00::2', dst: 'fd00::1', proto: 'icmp', payload: 300 }));
const inTcp = inbound(buildPacket({ src: '10.0.0.2', dst: '10.0.0.1', proto: 'tcp', srcPort: 80, dstPort: 40000, tcpFlags: 0x12 }));
const arp = arpRequest('10.0.0.1', '10.0.0.2');

async function tsharkFields(file: string, fields: string[], extra: string[] = []): Promise<string[][]> {
  const { stdout } = await run('tshark', ['-r', file, '-n', ...extra, '-T', 'fields', ...fields.flatMap((f) => ['-e', f])]);
  return stdout.split('\n').filter((l) => l !== '').map((l) => l.split('\t'));
}

async function frames(file: string): Promise<Buffer[]> {
  const out: Buffer[] = [];
  await forEachFrame(file, (buf, caplen) => out.push(Buffer.from(buf.subarray(0, caplen))));
  return out;
}

/** A pcapng file with one interface and EPBs carrying the inbound/outbound flag. */
function pcapng(ifName: string, packets: Array<{ frame: Buffer; outbound: boolean }>): Buffer {
  const block = pcapngBlock;
  const option = pcapngOption;
  const end = Buffer.alloc(4);
  const idb = Buffer.concat([Buffer.from([1, 0, 0, 0, 0xff, 0xff, 0, 0]), option(2, Buffer.from(ifName)), end]);
  const epbs = packets.map(({ frame, outbound }, i) => {
    const head = Buffer.alloc(20);
    const tsUs = 1_700_000_000_000_000n + BigInt(i);
    head.writeUInt32LE(0, 0);
    head.writeUInt32LE(Number(tsUs >> 32n), 4);
    head.writeUInt32LE(Number(tsUs & 0xffffffffn), 8);
    head.writeUInt32LE(frame.length, 12);
    head.writeUInt32LE(frame.length, 16);
    const padded = Buffer.alloc((frame.length + 3) & ~3);
    frame.copy(padded);
    const flags = Buffer.alloc(4);
    flags.writeUInt32LE(outbound ? 2 : 1, 0);
    return block(6, Buffer.concat([head, padded, option(2, flags), end]));
  });
  return Buffer.concat([pcapngSectionHeader(), block(1, idb), ...epbs]);
}

describe('mirrorflow replay', () => {
  let dir: string;
  let configFile: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mf-replay-'));
    configFile = join(dir, 'config.yaml');
    await writeFile(configFile, stringify(config));
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));

  it('writes VXLAN copies of exactly the selected frames that tshark decodes, cut per SPEC §3', async () => {
    const input = join(dir, 'in.pcap');
    const out = join(dir, 'out.pcap');
    await writeFile(input, pcapFile([outTcp, outDns, outBig, inPing6, inTcp, arp]));
    const summary = await replay({ config: configFile, pcap: input, out, localMac: DEFAULT_SRC_MAC, pathMtu: MTU, logger });
    expect(summary).toMatchObject({ frames: 6, interfaceName: 'eth0', mirrored: { 'ts-v4': 2, 'ts-v6': 1 }, truncated: { 'ts-v4': 1, 'ts-v6': 1 }, written: 3 });

    const rows = await tsharkFields(out, ['vxlan.vni', 'udp.dstport', 'udp.srcport', 'ip.dst', 'ipv6.dst', 'ip.checksum.status', 'udp.checksum.status'], [
      '-o', 'ip.check_checksum:TRUE', '-o', 'udp.check_checksum:TRUE',
    ]);
    expect(rows.map((r) => r[0])).toEqual([String(VNI_V4), String(VNI_V4), String(VNI_V6)]);
    for (const [, dport = '', sport = '', ipDst = '', ip6Dst = '', ipSum = '', udpSum = ''] of rows) {
      expect(dport.split(',')[0]).toBe('4789');
      const outer = Number(sport.split(',')[0]);
      expect(outer).toBeGreaterThanOrEqual(49152);
      expect(outer).toBeLessThanOrEqual(65535);
      if (ipDst !== '') {
        expect(ipDst.split(',')[0]).toBe('10.9.9.9');
        expect(ipSum.split(',')[0]).toBe('1'); // tshark checksum status: 1 = good
      } else {
        expect(ip6Dst.split(',')[0]).toBe('fd00::9');
        expect(udpSum.split(',')[0]).toBe('1');
      }
    }
    const [tcpCopy, bigCopy, pingCopy] = await frames(out);
    expect(tcpCopy!.subarray(OUTER_V4)).toEqual(outTcp);
    expect(bigCopy!.subarray(OUTER_V4)).toEqual(outBig.subarray(0, MTU - 50));
    expect(pingCopy!.subarray(OUTER_V6)).toEqual(inPing6.subarray(0, TRUNC_V6));
  });

  it('takes directions and the interface name from pcapng packet flags', async () => {
    const input = join(dir, 'in.pcapng');
    const out = join(dir, 'out-ng.pcap');
    // The same ICMPv6 frame twice: only the inbound one matches the ingress rule.
    await writeFile(input, pcapng('eth0', [{ frame: inPing6, outbound: true }, { frame: inPing6, outbound: false }]));
    const { stdout } = await run('tshark', ['-r', input, '-T', 'fields', '-e', 'frame.packet_flags_direction', '-e', 'frame.interface_name']);
    expect(stdout.trim().split('\n')).toEqual(['0x00000002\teth0', '0x00000001\teth0']);
    const summary = await replay({ config: configFile, pcap: input, out, logger });
    expect(summary.mirrored).toEqual({ 'ts-v4': 0, 'ts-v6': 1 });
    const written: number[] = [];
    await forEachFrame(out, (_b, _c, _w, tsUs) => written.push(tsUs));
    expect(written).toEqual([1_700_000_000_000_001]);
  });

  it('sends to an IPv4-mapped target (::ffff:a.b.c.d) over IPv4, as a socket would', async () => {
    const mappedFile = join(dir, 'mapped.yaml');
    const mapped = { ...config, sessions: [{ ...config.sessions[0]!, target: { address: '::ffff:10.9.9.8' } }] };
    await writeFile(mappedFile, stringify(mapped));
    const input = join(dir, 'mapped-in.pcap');
    const out = join(dir, 'mapped-out.pcap');
    await writeFile(input, pcapFile([outTcp]));
    const summary = await replay({ config: mappedFile, pcap: input, out, localMac: DEFAULT_SRC_MAC, pathMtu: MTU, logger });
    expect(summary).toMatchObject({ mirrored: { 'ts-v4': 1 }, written: 1 });
    const rows = await tsharkFields(out, ['vxlan.vni', 'ip.dst', 'ipv6.dst', 'ip.checksum.status'], ['-o', 'ip.check_checksum:TRUE']);
    // tshark lists outer then inner for repeated fields: the outer header comes first.
    expect(rows.map((r) => r.map((f) => f.split(',')[0]))).toEqual([[String(VNI_V4), '10.9.9.8', '', '1']]);
    expect((await frames(out))[0]!.subarray(OUTER_V4)).toEqual(outTcp);
  });

  it('refuses a classic pcap without --local-mac, and an interface no session uses', async () => {
    const input = join(dir, 'nodir.pcap');
    await writeFile(input, pcapFile([outTcp]));
    await expect(replay({ config: configFile, pcap: input, logger })).rejects.toThrow(/pass --interface NAME .* or --local-mac MAC/);
    await expect(replay({ config: configFile, pcap: input, localMac: DEFAULT_SRC_MAC, interfaceName: 'eth9', logger })).rejects.toThrow(/eth9 is not a source/);
  });
});

describe('capture files', () => {
  it('PcapWriter output is read back by tshark and forEachFrame with lengths and timestamps intact', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'mf-pcapw-'));
    try {
      const file = join(dir, 'w.pcap');
      const w = new PcapWriter(file, 200);
      w.write(outTcp, outTcp.length, outTcp.length, 1_700_000_000_123_456);
      w.write(outBig, outBig.length, outBig.length, 1_700_000_001_000_001);
      await w.close();
      const rows = await tsharkFields(file, ['frame.len', 'frame.cap_len', 'frame.time_epoch']);
      expect(rows).toEqual([
        [String(outTcp.length), String(outTcp.length), '1700000000.123456000'],
        [String(outBig.length), '200', '1700000001.000001000'],
      ]);
      const seen: Array<[number, number, number]> = [];
      await forEachFrame(file, (_b, caplen, wireLen, tsUs) => seen.push([caplen, wireLen, tsUs]));
      expect(seen).toEqual([[outTcp.length, outTcp.length, 1_700_000_000_123_456], [200, outBig.length, 1_700_000_001_000_001]]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('reads big-endian nanosecond pcap files', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'mf-pcapbe-'));
    try {
      const file = join(dir, 'be.pcap');
      const header = Buffer.alloc(24);
      header.writeUInt32BE(0xa1b23c4d, 0);
      header.writeUInt16BE(2, 4);
      header.writeUInt16BE(4, 6);
      header.writeUInt32BE(65535, 16);
      header.writeUInt32BE(1, 20);
      const rec = Buffer.alloc(16);
      rec.writeUInt32BE(1_700_000_000, 0);
      rec.writeUInt32BE(123_456_789, 4);
      rec.writeUInt32BE(outTcp.length, 8);
      rec.writeUInt32BE(outTcp.length, 12);
      await writeFile(file, Buffer.concat([header, rec, outTcp]));
      const { stdout } = await run('tshark', ['-r', file, '-T', 'fields', '-e', 'frame.time_epoch']);
      expect(stdout.trim()).toBe('1700000000.123456789');
      const seen: number[] = [];
      await forEachFrame(file, (buf, caplen, _w, tsUs) => {
        expect(Buffer.from(buf.subarray(0, caplen))).toEqual(outTcp);
        seen.push(tsUs);
      });
      expect(seen).toEqual([1_700_000_000_123_456]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
