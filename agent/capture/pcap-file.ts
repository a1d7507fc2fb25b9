// Capture files for `mirrorflow replay` and the tests: a reader for classic pcap (either
// byte order, µs or ns timestamps) and pcapng (with per-packet direction from the EPB
// flags and the interface name from the IDB), and a buffered classic-pcap writer.
import { closeSync, openSync, readFileSync, readSync, writeSync } from 'node:fs';
import { ErrorCode, MirrorflowError, fileErrorReason } from '../errors.js';

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
const IDB_IF_TSOFFSET = 14;
const EPB_FLAGS = 2;
/** epb_flags bits 0-1: 01 inbound, 10 outbound. */
const EPB_DIR_MASK = 0x3;
const EPB_DIR_IN = 1;
const EPB_DIR_OUT = 2;
const DIRECTION_UNKNOWN = -1;

const rd32 = (buf: Buffer, at: number, le: boolean): number => (le ? buf.readUInt32LE(at) : buf.readUInt32BE(at));
const rd16 = (buf: Buffer, at: number, le: boolean): number => (le ? buf.readUInt16LE(at) : buf.readUInt16BE(at));

const cannotRead = (path: string, err: unknown) =>
  new MirrorflowError(ErrorCode.CAPTURE_FILE, `cannot read capture file ${path}: ${fileErrorReason(err)}`, { cause: err });
/** The file is there but is not a capture this reader takes (or is cut short). */
const badFile = (message: string) => new MirrorflowError(ErrorCode.CAPTURE_FILE, message);

function readCapture(path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw cannotRead(path, err);
  }
}

/** Which kind of capture file `path` is, from its first four bytes; throws when it is neither or cannot be read. */
export function captureFormat(path: string): 'pcap' | 'pcapng' {
  const head = Buffer.alloc(4);
  let got: number;
  try {
    const fd = openSync(path, 'r');
    try {
      got = readSync(fd, head, 0, 4, 0);
    } finally {
      closeSync(fd);
    }
  } catch (err) {
    throw cannotRead(path, err);
  }
  if (got < 4) throw badFile(`${path}: ${got} bytes, not a capture file`);
  if (head.readUInt32LE(0) === NG_SHB) return 'pcapng';
  const magic = head.readUInt32LE(0);
  const swapped = head.readUInt32BE(0);
  if ([PCAP_MAGIC_US, PCAP_MAGIC_NS].some((m) => m === magic || m === swapped)) return 'pcap';
  throw badFile(`${path}: not a pcap or pcapng file (magic 0x${swapped.toString(16)})`);
}

/** Reads every frame of a pcap or pcapng file; resolves with the frame count. */
export async function forEachFrame(path: string, onFrame: FileFrameHandler): Promise<number> {
  const buf = readCapture(path);
  if (buf.length < 4) throw badFile(`${path}: ${buf.length} bytes, not a capture file`);
  if (buf.readUInt32LE(0) === NG_SHB) return readPcapng(path, buf, onFrame);
  return readPcap(path, buf, onFrame);
}

function readPcap(path: string, buf: Buffer, onFrame: FileFrameHandler): number {
  if (buf.length < PCAP_HEADER_LEN) throw badFile(`${path}: truncated pcap header`);
  const le = buf.readUInt32LE(0) === PCAP_MAGIC_US || buf.readUInt32LE(0) === PCAP_MAGIC_NS;
  const magic = le ? buf.readUInt32LE(0) : buf.readUInt32BE(0);
  if (magic !== PCAP_MAGIC_US && magic !== PCAP_MAGIC_NS) {
    throw badFile(`${path}: not a pcap or pcapng file (magic 0x${buf.readUInt32BE(0).toString(16)})`);
  }
  const linkType = rd32(buf, 20, le) & 0xffff;
  if (linkType !== LINKTYPE_ETHERNET) throw badFile(`${path}: link type ${linkType}; only Ethernet (1) is supported`);
  const fraction = magic === PCAP_MAGIC_NS ? 1000 : 1;
  let off = PCAP_HEADER_LEN;
  let frames = 0;
  while (off + PCAP_RECORD_LEN <= buf.length) {
    const caplen = rd32(buf, off + 8, le);
    const start = off + PCAP_RECORD_LEN;
    if (start + caplen > buf.length) throw badFile(`${path}: record ${frames + 1} at byte ${off} is cut short`);
    const tsUs = rd32(buf, off, le) * 1e6 + Math.floor(rd32(buf, off + 4, le) / fraction);
    onFrame(buf.subarray(start, start + caplen), caplen, rd32(buf, off + 12, le), tsUs, DIRECTION_UNKNOWN, undefined);
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
  /** if_tsoffset: seconds added to every timestamp. */
  offsetUs: number;
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
      if (!le && buf.readUInt32BE(off + 8) !== NG_BYTE_ORDER_MAGIC) throw badFile(`${path}: bad pcapng byte-order magic at ${off}`);
      interfaces = [];
    }
    const type = rd32(buf, off, le);
    const len = rd32(buf, off + 4, le);
    if (len < 12 || off + len > buf.length) throw badFile(`${path}: pcapng block at byte ${off} has a bad length ${len}`);
    const body = off + 8;
    const end = off + len - 4;
    if (type === NG_IDB) {
      interfaces.push(readInterface(buf, body, end, le));
    } else if (type === NG_EPB) {
      const iface = interfaces[rd32(buf, body, le)];
      if (iface === undefined) throw badFile(`${path}: packet at byte ${off} names an undefined interface`);
      if (iface.linkType !== LINKTYPE_ETHERNET) throw badFile(`${path}: link type ${iface.linkType}; only Ethernet (1) is supported`);
      const caplen = rd32(buf, body + 12, le);
      const data = body + 20;
      let direction = DIRECTION_UNKNOWN;
      // Options, inline: epb_flags is the one we need, and this runs per frame.
      for (let at = data + ((caplen + 3) & ~3); at + 4 <= end; ) {
        const code = rd16(buf, at, le);
        if (code === OPT_END) break;
        if (code === EPB_FLAGS) {
          const dir = rd32(buf, at + 4, le) & EPB_DIR_MASK;
          direction = dir === EPB_DIR_IN ? 0 : dir === EPB_DIR_OUT ? 1 : DIRECTION_UNKNOWN;
        }
        at += 4 + ((rd16(buf, at + 2, le) + 3) & ~3);
      }
      const tsUs = iface.offsetUs + toMicros(rd32(buf, body + 4, le), rd32(buf, body + 8, le), iface.unitsPerSecond);
      onFrame(buf.subarray(data, data + caplen), caplen, rd32(buf, body + 16, le), tsUs, direction, iface.name);
      frames++;
    } else if (type === NG_SPB) {
      const iface = interfaces[0];
      if (iface === undefined) throw badFile(`${path}: simple packet block before any interface`);
      const wireLen = rd32(buf, body, le);
      const caplen = Math.min(wireLen, end - (body + 4));
      onFrame(buf.subarray(body + 4, body + 4 + caplen), caplen, wireLen, 0, DIRECTION_UNKNOWN, iface.name);
      frames++;
    }
    off += len;
  }
  return frames;
}

/** An interface description block: link type and the options we use. */
function readInterface(buf: Buffer, body: number, end: number, le: boolean): NgInterface {
  const iface: NgInterface = { linkType: rd16(buf, body, le), name: undefined, unitsPerSecond: 1e6, offsetUs: 0 };
  for (let at = body + 8; at + 4 <= end; ) {
    const code = rd16(buf, at, le);
    const olen = rd16(buf, at + 2, le);
    const v = at + 4;
    if (code === OPT_END) break;
    if (code === IDB_IF_NAME) iface.name = buf.toString('utf8', v, v + olen).replace(/\0+$/, '');
    if (code === IDB_IF_TSRESOL && olen >= 1) {
      const r = buf[v]!;
      iface.unitsPerSecond = r & 0x80 ? 2 ** (r & 0x7f) : 10 ** r;
    }
    if (code === IDB_IF_TSOFFSET && olen >= 8) {
      const hi = le ? buf.readInt32LE(v + 4) : buf.readInt32BE(v);
      const lo = le ? buf.readUInt32LE(v) : buf.readUInt32BE(v + 4);
      iface.offsetUs = (hi * 2 ** 32 + lo) * 1e6;
    }
    at = v + ((olen + 3) & ~3);
  }
  return iface;
}

/**
 * (hi·2^32 + lo) timestamp units in µs. Nanoseconds since 1970 exceed 2^53, so a plain
 * double loses the last µs: divide in 16-bit limbs, every step exact for up to 9·10^9
 * units per second (ns, and 2^-30 s, included).
 */
function toMicros(hi: number, lo: number, units: number): number {
  let cur = hi >>> 16;
  let q = Math.floor(cur / units);
  let sec = q;
  cur = (cur - q * units) * 65536 + (hi & 0xffff);
  q = Math.floor(cur / units);
  sec = sec * 65536 + q;
  cur = (cur - q * units) * 65536 + (lo >>> 16);
  q = Math.floor(cur / units);
  sec = sec * 65536 + q;
  cur = (cur - q * units) * 65536 + (lo & 0xffff);
  q = Math.floor(cur / units);
  sec = sec * 65536 + q;
  return sec * 1e6 + Math.floor(((cur - q * units) * 1e6) / units);
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
