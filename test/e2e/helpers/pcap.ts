// Frames of a capture file as copies, for tests that compare whole frames.
import { forEachFrame } from '../../../agent/capture/pcap-file.js';

export interface PcapFrame {
  /** The captured bytes (caplen of them). */
  data: Buffer;
  /** The frame's length on the wire. */
  wireLen: number;
}

export async function readPcap(file: string): Promise<PcapFrame[]> {
  const frames: PcapFrame[] = [];
  await forEachFrame(file, (buf, caplen, wireLen) => frames.push({ data: Buffer.from(buf.subarray(0, caplen)), wireLen }));
  return frames;
}
