// Reads a classic pcap file (what tcpdump -w writes) into its frames. Test-only: the files
// are small and read once, so clarity wins over speed.
import { readFile } from 'node:fs/promises';

const GLOBAL_HEADER_LEN = 24;
const RECORD_HEADER_LEN = 16;
const MAGIC_US = 0xa1b2c3d4;
const MAGIC_NS = 0xa1b23c4d;
const LINKTYPE_ETHERNET = 1;

export interface PcapFrame {
  /** The captured bytes (caplen of them). */
  data: Buffer;
  /** The frame's length on the wire. */
  wireLen: number;
}

export async function readPcap(file: string): Promise<PcapFrame[]> {
  const buf = await readFile(file);
  if (buf.length < GLOBAL_HEADER_LEN) throw new Error(`${file}: ${buf.length} bytes, not a pcap file`);
  const magicLe = buf.readUInt32LE(0);
  const le = magicLe === MAGIC_US || magicLe === MAGIC_NS;
  const magic = le ? magicLe : buf.readUInt32BE(0);
  if (magic !== MAGIC_US && magic !== MAGIC_NS) throw new Error(`${file}: bad pcap magic 0x${magicLe.toString(16)}`);
  const u32 = (off: number) => (le ? buf.readUInt32LE(off) : buf.readUInt32BE(off));
  const linkType = u32(20);
  if (linkType !== LINKTYPE_ETHERNET) throw new Error(`${file}: link type ${linkType}, want Ethernet`);
  const frames: PcapFrame[] = [];
  let off = GLOBAL_HEADER_LEN;
  while (off + RECORD_HEADER_LEN <= buf.length) {
    const capLen = u32(off + 8);
    const wireLen = u32(off + 12);
    const start = off + RECORD_HEADER_LEN;
    if (start + capLen > buf.length) throw new Error(`${file}: record at ${off} cut short`);
    frames.push({ data: buf.subarray(start, start + capLen), wireLen });
    off = start + capLen;
  }
  return frames;
}
