// Capture files (root: a namespace pair of our own): forEachFrame reads what Wireshark's own
// tools write — dumpcap's pcapng (ns timestamps, interface names), editcap's µs and ns pcap,
// text2pcap's pcapng with inbound/outbound EPB flags — frame for frame as tshark reads them;
// other link types and cut files fail clearly; PcapWriter's buffered output is what tshark reads.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { forEachFrame, PcapWriter } from '../../agent/capture/pcap-file.js';
import { tsharkFields } from '../../agent/lab/lab.js';
import { buildPacket } from '../helpers/build-packet.js';
import { pcapngBlock, pcapngOption, pcapngSectionHeader } from '../helpers/pcapng.js';

const run = promisify(execFile);
const PINGS = 5;
const PORT = 9999;
const TIMEOUT_MS = 20_000;
/** Echoes UDP datagrams; says when it listens. */
const ECHO = `const s = require('node:dgram').createSocket('udp4');
s.on('message', (m, r) => s.send(m, r.port, r.address));
s.bind(${PORT}, () => console.log('ready'));`;
/** Sends PINGS datagrams one at a time, each after the previous echo. */
const PINGER = (host: string) => `const s = require('node:dgram').createSocket('udp4');
let n = 0;
const next = () => (n++ < ${PINGS} ? s.send(Buffer.alloc(32 + n), ${PORT}, '${host}') : s.close());
s.on('message', next);
next();`;

/** Resolves when the process prints `text` on the stream. */
function waitFor(stream: NodeJS.ReadableStream, text: string, what: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what} did not start`)), TIMEOUT_MS);
    let seen = '';
    stream.on('data', (d: Buffer) => {
      seen += d.toString();
      if (seen.includes(text)) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
}

interface Frame {
  caplen: number;
  wireLen: number;
  tsUs: number;
  direction: number;
  ifName: string | undefined;
  src: string;
}

async function read(file: string): Promise<Frame[]> {
  const out: Frame[] = [];
  const count = await forEachFrame(file, (buf, caplen, wireLen, tsUs, direction, ifName) => {
    out.push({ caplen, wireLen, tsUs, direction, ifName, src: [...buf.subarray(6, 12)].map((b) => b.toString(16).padStart(2, '0')).join(':') });
  });
  expect(count).toBe(out.length);
  return out;
}

/** tshark's view of the same file, in our units (µs timestamps truncated like ours). */
async function tsharkFrames(file: string): Promise<Array<Omit<Frame, 'direction' | 'ifName'>>> {
  const rows = await tsharkFields(file, '', ['frame.cap_len', 'frame.len', 'frame.time_epoch', 'eth.src']);
  return rows.map(([cap = '', len = '', epoch = '', src = '']) => {
    const [sec = '0', frac = ''] = epoch.split('.');
    return { caplen: Number(cap), wireLen: Number(len), tsUs: Number(sec) * 1e6 + Number(frac.padEnd(9, '0').slice(0, 6)), src };
  });
}

describe('capture files written by Wireshark tools (root, namespaces)', () => {
  const suffix = `pf${process.pid % 100000}`;
  const [nsA, nsB, ifA, ifB] = [`mfa${suffix}`, `mfb${suffix}`, `va${suffix}`, `vb${suffix}`];
  const dir = mkdtempSync(join(tmpdir(), 'mirrorflow-pcap-'));
  const live = join(dir, 'live.pcapng');
  let macA = '';
  let echo: ChildProcess | undefined;

  beforeAll(async () => {
    await run('ip', ['netns', 'add', nsA]);
    await run('ip', ['netns', 'add', nsB]);
    await run('ip', ['link', 'add', ifA, 'netns', nsA, 'type', 'veth', 'peer', 'name', ifB, 'netns', nsB]);
    await run('ip', ['-n', nsA, 'addr', 'add', '10.201.0.1/24', 'dev', ifA]);
    await run('ip', ['-n', nsB, 'addr', 'add', '10.201.0.2/24', 'dev', ifB]);
    await run('ip', ['-n', nsA, 'link', 'set', ifA, 'up']);
    await run('ip', ['-n', nsB, 'link', 'set', ifB, 'up']);
    macA = JSON.parse((await run('ip', ['-j', '-n', nsA, 'link', 'show', ifA])).stdout)[0].address;

    echo = spawn('ip', ['netns', 'exec', nsB, process.execPath, '-e', ECHO]);
    await waitFor(echo.stdout!, 'ready', 'UDP echo');
    // dumpcap stops by itself after the datagrams and their echoes.
    const cap = spawn('ip', ['netns', 'exec', nsA, 'dumpcap', '-i', ifA, '-f', `udp port ${PORT}`, '-c', String(2 * PINGS), '-w', live]);
    const exited = new Promise<number | null>((resolve) => cap.on('exit', resolve));
    await waitFor(cap.stderr, 'Capturing on', 'dumpcap');
    await run('ip', ['netns', 'exec', nsA, process.execPath, '-e', PINGER('10.201.0.2')], { timeout: TIMEOUT_MS });
    expect(await exited).toBe(0);
  }, 60_000);

  afterAll(async () => {
    echo?.kill();
    await run('ip', ['netns', 'del', nsA]).catch(() => undefined);
    await run('ip', ['netns', 'del', nsB]).catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  });

  it("reads dumpcap's pcapng (ns resolution, interface name) frame for frame as tshark does", async () => {
    const ours = await read(live);
    expect(ours).toHaveLength(2 * PINGS);
    expect(ours.map(({ caplen, wireLen, tsUs, src }) => ({ caplen, wireLen, tsUs, src }))).toEqual(await tsharkFrames(live));
    expect(new Set(ours.map((f) => f.ifName))).toEqual(new Set([ifA]));
    // The file does not say the direction: libpcap does not report it on a veth.
    expect(new Set(ours.map((f) => f.direction))).toEqual(new Set([-1]));
    expect(ours.filter((f) => f.src === macA)).toHaveLength(PINGS);
  });

  it.each([['pcap', 'µs'], ['nsecpcap', 'ns'], ['pcapng', 'editcap pcapng']])('reads the same frames after editcap -F %s (%s)', async (format) => {
    const file = join(dir, `copy.${format}`);
    await run('editcap', ['-F', format, live, file]);
    const ours = await read(file);
    const want = await tsharkFrames(live);
    expect(ours.map(({ caplen, wireLen, tsUs, src }) => ({ caplen, wireLen, tsUs, src }))).toEqual(want);
  });

  it('takes inbound/outbound from the EPB flags text2pcap writes', async () => {
    // The captured frames again, marked O when sent from A's MAC and I otherwise.
    const frames: Buffer[] = [];
    await forEachFrame(live, (buf) => frames.push(Buffer.from(buf)));
    const text = frames.map((f) => {
      const out = f.subarray(6, 12).equals(Buffer.from(macA.replaceAll(':', ''), 'hex'));
      return `${out ? 'O' : 'I'} 0000 ${[...f].map((b) => b.toString(16).padStart(2, '0')).join(' ')}\n`;
    }).join('');
    writeFileSync(join(dir, 'dir.txt'), text);
    const file = join(dir, 'dir.pcapng');
    await run('text2pcap', ['-q', '-n', '-D', '-N', 'eth7', join(dir, 'dir.txt'), file]);

    const ours = await read(file);
    const theirs = await tsharkFields(file, '', ['frame.packet_flags_direction']);
    // pcapng epb_flags: 0x1 inbound, 0x2 outbound.
    expect(ours.map((f) => f.direction)).toEqual(theirs.map(([d]) => (Number(d) === 1 ? 0 : Number(d) === 2 ? 1 : -1)));
    expect(ours.map((f) => f.direction)).toEqual(ours.map((f) => (f.src === macA ? 1 : 0)));
    expect(new Set(ours.map((f) => f.ifName))).toEqual(new Set(['eth7']));
  });

  it.each([['pcap', 'rawip4'], ['pcapng', 'linux-sll']])('refuses a %s file with link type %s, naming it', async (format, encap) => {
    const file = join(dir, `${encap}.${format}`);
    await run('editcap', ['-F', format, '-T', encap, live, file]);
    await expect(read(file)).rejects.toThrow(/link type \d+; only Ethernet \(1\) is supported/);
  });

  it('refuses a file whose last record is cut short, and one that is no capture file', async () => {
    const pcap = join(dir, 'cut.pcap');
    await run('editcap', ['-F', 'pcap', live, pcap]);
    writeFileSync(pcap, readFileSync(pcap).subarray(0, -5));
    await expect(read(pcap)).rejects.toThrow(/record \d+ at byte \d+ is cut short/);
    const junk = join(dir, 'junk');
    writeFileSync(junk, 'not a capture file at all');
    await expect(read(junk)).rejects.toThrow(/not a pcap or pcapng file/);
    await expect(read(junk)).rejects.toMatchObject({ code: 'MF_CAPTURE_FILE' });
  });
});

/** A big-endian pcapng section: ns resolution, a 10 s if_tsoffset, one outbound EPB. */
function bigEndianPcapng(frame: Buffer, tsNs: bigint): Buffer {
  const block = (type: number, body: Buffer) => pcapngBlock(type, body, 'BE');
  const opt = (code: number, value: Buffer) => pcapngOption(code, value, 'BE');
  const idb = Buffer.alloc(8);
  idb.writeUInt16BE(1, 0);
  const offset = Buffer.alloc(8);
  offset.writeBigInt64BE(10n);
  const epb = Buffer.alloc(20 + ((frame.length + 3) & ~3));
  epb.writeUInt32BE(Number(tsNs >> 32n), 4);
  epb.writeUInt32BE(Number(tsNs & 0xffffffffn), 8);
  epb.writeUInt32BE(frame.length, 12);
  epb.writeUInt32BE(frame.length, 16);
  frame.copy(epb, 20);
  const flags = Buffer.alloc(4);
  flags.writeUInt32BE(2);
  return Buffer.concat([
    pcapngSectionHeader('BE'),
    block(1, Buffer.concat([idb, opt(9, Buffer.from([9])), opt(14, offset), opt(2, Buffer.from('be0')), opt(0, Buffer.alloc(0))])),
    block(6, Buffer.concat([epb, opt(2, flags), opt(0, Buffer.alloc(0))])),
  ]);
}

describe('pcapng details', () => {
  const dir = mkdtempSync(join(tmpdir(), 'mirrorflow-pcapng-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('reads a big-endian section with if_tsoffset and ns timestamps as tshark does', async () => {
    const file = join(dir, 'be.pcapng');
    const frame = buildPacket({ src: '10.0.0.1', dst: '10.0.0.2', proto: 'udp', srcPort: 1, dstPort: 2, payload: 3 });
    writeFileSync(file, bigEndianPcapng(frame, 1_795_401_558_196_633_999n));
    const ours = await read(file);
    const [[epoch = '', dirFlag = '', name = ''] = []] = await tsharkFields(file, '', ['frame.time_epoch', 'frame.packet_flags_direction', 'frame.interface_name']);
    expect(epoch).toBe('1795401568.196633999');
    expect([Number(dirFlag), name]).toEqual([2, 'be0']);
    expect(ours).toEqual([{ caplen: frame.length, wireLen: frame.length, tsUs: 1_795_401_568_196_633, direction: 1, ifName: 'be0', src: '02:00:00:00:00:01' }]);
  });
});

describe('PcapWriter', () => {
  const dir = mkdtempSync(join(tmpdir(), 'mirrorflow-pcapw-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('buffers many frames into one classic pcap that tshark reads, cutting at the snap length', async () => {
    const file = join(dir, 'out.pcap');
    const snap = 200;
    const w = new PcapWriter(file, snap);
    const sizes: number[] = [];
    // About 4 MiB: several buffer flushes.
    for (let i = 0; i < 3000; i++) {
      const f = buildPacket({ src: '10.0.0.1', dst: '10.0.0.2', proto: 'udp', srcPort: 1000 + (i % 50), dstPort: 53, payload: (i * 37) % 1400 });
      sizes.push(f.length);
      w.write(f, f.length, f.length, 1_700_000_000_000_000 + i * 1001);
    }
    await w.close();
    expect(w.frames).toBe(3000);
    const theirs = await tsharkFrames(file);
    expect(theirs).toEqual(sizes.map((len, i) => ({
      caplen: Math.min(len, snap), wireLen: len, tsUs: 1_700_000_000_000_000 + i * 1001, src: '02:00:00:00:00:01',
    })));
    const ours = await read(file);
    expect(ours.map(({ caplen, wireLen, tsUs }) => ({ caplen, wireLen, tsUs }))).toEqual(theirs.map(({ caplen, wireLen, tsUs }) => ({ caplen, wireLen, tsUs })));
  });
});
