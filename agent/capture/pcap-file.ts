// Capture files for `mirrorflow replay` and the tests: a reader for classic pcap (either
// byte order, µs or ns timestamps) and pcapng (with per-packet direction from the EPB
// flags and the interface name from the IDB), and a buffered classic-pcap writer.
import { closeSync, openSync, readFileSync, writeSync } from 'node:fs';

/** Receives each frame; buf is a view into the file and valid only during the call. */
export type FileFrameHandler = (
  buf: Buffer, caplen: number, wireLen: number, tsUs: number,
  /** 0 inbound, 1 outbound, -1 when the file does not say. */
  direction: number,
  /** The capture interface's name when the file records it (pcapng if_name). */
  ifName: string | undefined,
) => void;

const LINKTYPE_ETHERNET = 1;
const PCAP_MAGIC_US = 0xa1b2c3d4;
const PCAP_MAGIC_NS = 0xa1b23c4d;
const PCAP_HEADER_LEN = 24;
const PCAP_RECORD_LEN = 16;

const NG_SHB = 0x0a0d0d0a;
const NG_IDB = 0x00000001;
const NG_SPB = 0x00000003;
const NG_EPB = 0x00000006;
const NG_BYTE_ORDER_MAGIC = 0x1a2b3c4d;
const OPT_END = 0;
const IDB_IF_NAME = 2;
const IDB_IF_TSRESOL = 9;
const EPB_FLAGS = 2;
/** epb_flags bits 0-1: 01 inbound, 10 outbound. */
const EPB_DIR_MASK = 0x3;
const EPB_DIR_IN = 1;
const EPB_DIR_OUT = 2;
const DIRECTION_UNKNOWN = -1;

/** Reads every frame of a pcap or pcapng file; resolves with the frame count. */
export async function forEachFrame(path: string, onFrame: FileFrameHandler): Promise<number> {
  const buf = readFileSync(path);
  if (buf.length < 4) throw new Error(`${path}: ${buf.length} bytes, not a capture file`);
  if (buf.readUInt32LE(0) === NG_SHB) return readPcapng(path, buf, onFrame);
  return readPcap(path, buf, onFrame);
}

function readPcap(path: string, buf: Buffer, onFrame: FileFrameHandler): number {
  if (buf.length < PCAP_HEADER_LEN) throw new Error(`${path}: truncated pcap header`);
  const le = buf.readUInt32LE(0) === PCAP_MAGIC_US || buf.readUInt32LE(0) === PCAP_MAGIC_NS;
  const magic = le ? buf.readUInt32LE(0) : buf.readUInt32BE(0);
  if (magic !== PCAP_MAGIC_US && magic !== PCAP_MAGIC_NS) {
    throw new Error(`${path}: not a pcap or pcapng file (magic 0x${buf.readUInt32BE(0).toString(16)})`);
  }
  const u32 = le ? (o: number) => buf.readUInt32LE(o) : (o: number) => buf.readUInt32BE(o);
  const linkType = u32(20) & 0xffff;
  if (linkType !== LINKTYPE_ETHERNET) throw new Error(`${path}: link type ${linkType}; only Ethernet (1) is supported`);
  const fraction = magic === PCAP_MAGIC_NS ? 1000 : 1;
  let off = PCAP_HEADER_LEN;
  let frames = 0;
  while (off + PCAP_RECORD_LEN <= buf.length) {
    const caplen = u32(off + 8);
    const start = off + PCAP_RECORD_LEN;
    if (start + caplen > buf.length) throw new Error(`${path}: record ${frames + 1} at byte ${off} is cut short`);
    const tsUs = u32(off) * 1e6 + Math.floor(u32(off + 4) / fraction);
    onFrame(buf.subarray(start, start + caplen), caplen, u32(off + 12), tsUs, DIRECTION_UNKNOWN, undefined);
    frames++;
    off = start + caplen;
  }
  return frames;
}

interface NgInterface {
  linkType: number;
  name: string | undefined;
  /** Timestamp units per second. */
  unitsPerSecond: number;
}

function readPcapng(path: string, buf: Buffer, onFrame: FileFrameHandler): number {
  let le = true;
  let interfaces: NgInterface[] = [];
  let off = 0;
  let frames = 0;
  while (off + 12 <= buf.length) {
    if (buf.readUInt32LE(off) === NG_SHB) {
      // The byte-order magic decides how to read this section, including its own length.
      le = buf.readUInt32LE(off + 8) === NG_BYTE_ORDER_MAGIC;
      if (!le && buf.readUInt32BE(off + 8) !== NG_BYTE_ORDER_MAGIC) throw new Error(`${path}: bad pcapng byte-order magic at ${off}`);
      interfaces = [];
    }
    const u32 = le ? (o: number) => buf.readUInt32LE(o) : (o: number) => buf.readUInt32BE(o);
    const u16 = le ? (o: number) => buf.readUInt16LE(o) : (o: number) => buf.readUInt16BE(o);
    const type = u32(off);
    const len = u32(off + 4);
    if (len < 12 || off + len > buf.length) throw new Error(`${path}: pcapng block at byte ${off} has a bad length ${len}`);
    const body = off + 8;
    const end = off + len - 4;
    if (type === NG_IDB) {
      const iface: NgInterface = { linkType: u16(body), name: undefined, unitsPerSecond: 1e6 };
      forEachOption(buf, body + 8, end, u16, (code, at, olen) => {
        if (code === IDB_IF_NAME) iface.name = buf.toString('utf8', at, at + olen).replace(/\0+$/, '');
        if (code === IDB_IF_TSRESOL && olen >= 1) {
          const r = buf[at]!;
          iface.unitsPerSecond = r & 0x80 ? 2 ** (r & 0x7f) : 10 ** r;
        }
      });
      interfaces.push(iface);
    } else if (type === NG_EPB) {
      const iface = interfaces[u32(body)];
      if (iface === undefined) throw new Error(`${path}: packet at byte ${off} names an undefined interface`);
      if (iface.linkType !== LINKTYPE_ETHERNET) throw new Error(`${path}: link type ${iface.linkType}; only Ethernet (1) is supported`);
      const ts = u32(body + 4) * 2 ** 32 + u32(body + 8);
      const caplen = u32(body + 12);
      const data = body + 20;
      let direction = DIRECTION_UNKNOWN;
      forEachOption(buf, data + ((caplen + 3) & ~3), end, u16, (code, at) => {
        if (code !== EPB_FLAGS) return;
        const dir = u32(at) & EPB_DIR_MASK;
        direction = dir === EPB_DIR_IN ? 0 : dir === EPB_DIR_OUT ? 1 : DIRECTION_UNKNOWN;
      });
      const tsUs = Math.floor((ts * 1e6) / iface.unitsPerSecond);
      onFrame(buf.subarray(data, data + caplen), caplen, u32(body + 16), tsUs, direction, iface.name);
      frames++;
    } else if (type === NG_SPB) {
      const iface = interfaces[0];
      if (iface === undefined) throw new Error(`${path}: simple packet block before any interface`);
      const wireLen = u32(body);
      const caplen = Math.min(wireLen, end - (body + 4));
      onFrame(buf.subarray(body + 4, body + 4 + caplen), caplen, wireLen, 0, DIRECTION_UNKNOWN, iface.name);
      frames++;
    }
    off += len;
  }
  return frames;
}

function forEachOption(
  buf: Buffer, start: number, end: number, u16: (o: number) => number,
  visit: (code: number, at: number, len: number) => void,
): void {
  let at = start;
  while (at + 4 <= end) {
    const code = u16(at);
    const len = u16(at + 2);
    if (code === OPT_END) return;
    visit(code, at + 4, len);
    at += 4 + ((len + 3) & ~3);
  }
}

/** Writes a classic pcap file (µs timestamps, Ethernet), buffered in large chunks. */
export class PcapWriter {
  frames = 0;
  private readonly fd: number;
  private readonly chunk = Buffer.allocUnsafe(1 << 20);
  private used = 0;

  constructor(path: string, private readonly snapLength: number) {
    this.fd = openSync(path, 'w', 0o644);
    const header = Buffer.alloc(PCAP_HEADER_LEN);
    header.writeUInt32LE(PCAP_MAGIC_US, 0);
    header.writeUInt16LE(2, 4);
    header.writeUInt16LE(4, 6);
    header.writeUInt32LE(snapLength, 16);
    header.writeUInt32LE(LINKTYPE_ETHERNET, 20);
    writeSync(this.fd, header);
  }

  write(buf: Buffer, caplen: number, wireLen: number, tsUs: number): void {
    const len = Math.min(caplen, this.snapLength);
    if (this.used + PCAP_RECORD_LEN + len > this.chunk.length) this.flush();
    const c = this.chunk;
    const at = this.used;
    c.writeUInt32LE(Math.floor(tsUs / 1e6), at);
    c.writeUInt32LE(tsUs % 1e6, at + 4);
    c.writeUInt32LE(len, at + 8);
    c.writeUInt32LE(wireLen, at + 12);
    buf.copy(c, at + PCAP_RECORD_LEN, 0, len);
    this.used = at + PCAP_RECORD_LEN + len;
    this.frames++;
  }

  async close(): Promise<void> {
    this.flush();
    closeSync(this.fd);
  }

  private flush(): void {
    if (this.used > 0) writeSync(this.fd, this.chunk, 0, this.used);
    this.used = 0;
  }
}
