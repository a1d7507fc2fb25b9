// A UDP sender for loss/duplication checks across reloads and restarts: one datagram per
// millisecond carrying a sequence number, and on SIGUSR2 a marker of another length on the
// same flow, whose arrival proves everything before it arrived (one socket, in order).
import { forEachFrame } from '../../../agent/capture/pcap-file.js';

/** Length of the marker datagram's payload. */
export const MARKER_LEN = 99;
/** Inner Ethernet 14 + IPv4 20 + UDP 8: where the sequence number sits in a mirrored frame. */
export const SEQ_OFFSET = 42;

/** `node -e` source of the sender; prints "sent N" every 100th datagram and "last N" on SIGUSR2. */
export const sequencedSender = (host: string, port: number): string => `
const s = require('node:dgram').createSocket('udp4');
// A send refused while a link is down (ENETUNREACH) must not end the stream.
s.on('error', () => {});
let seq = 0;
const buf = Buffer.alloc(64);
const timer = setInterval(() => { buf.writeUInt32BE(seq, 0); s.send(buf, ${port}, '${host}'); if (seq % 100 === 0) console.log('sent ' + seq); seq++; }, 1);
process.on('SIGUSR2', () => {
  clearInterval(timer);
  console.log('last ' + (seq - 1));
  s.send(Buffer.alloc(${MARKER_LEN}), ${port}, '${host}', () => process.exit(0));
});`;

/** Sequence numbers of the mirrored datagrams in a decapsulated capture, in file order. */
export async function sequencesIn(file: string): Promise<number[]> {
  const seqs: number[] = [];
  await forEachFrame(file, (buf, caplen) => {
    if (caplen >= SEQ_OFFSET + 4 && caplen < SEQ_OFFSET + MARKER_LEN) seqs.push(buf.readUInt32BE(SEQ_OFFSET));
  });
  return seqs;
}

/** Sequence numbers in first..last missing from, or repeated in, `seqs`. */
export function gapsAndRepeats(seqs: readonly number[], first: number, last: number): { missing: number[]; dup: number[] } {
  const seen = new Map<number, number>();
  for (const s of seqs) seen.set(s, (seen.get(s) ?? 0) + 1);
  const missing: number[] = [];
  const dup: number[] = [];
  for (let s = first; s <= last; s++) {
    const n = seen.get(s) ?? 0;
    if (n === 0) missing.push(s);
    if (n > 1) dup.push(s);
  }
  return { missing, dup };
}
