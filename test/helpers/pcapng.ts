// Hand-built pcapng pieces for the tests that need what tcpdump does not write (EPB
// direction flags, big-endian sections, if_tsoffset): blocks, options and the section
// header, in either byte order.

export type ByteOrder = 'LE' | 'BE';

const writeU32 = (b: Buffer, v: number, off: number, order: ByteOrder) => (order === 'LE' ? b.writeUInt32LE(v, off) : b.writeUInt32BE(v, off));
const writeU16 = (b: Buffer, v: number, off: number, order: ByteOrder) => (order === 'LE' ? b.writeUInt16LE(v, off) : b.writeUInt16BE(v, off));

/** A block: type, total length, body, total length again. */
export function pcapngBlock(type: number, body: Buffer, order: ByteOrder = 'LE'): Buffer {
  const len = 12 + body.length;
  const b = Buffer.alloc(len);
  writeU32(b, type, 0, order);
  writeU32(b, len, 4, order);
  body.copy(b, 8);
  writeU32(b, len, len - 4, order);
  return b;
}

/** An option, padded to 32 bits; code 0 with an empty value ends an option list. */
export function pcapngOption(code: number, value: Buffer, order: ByteOrder = 'LE'): Buffer {
  const o = Buffer.alloc(4 + ((value.length + 3) & ~3));
  writeU16(o, code, 0, order);
  writeU16(o, value.length, 2, order);
  value.copy(o, 4);
  return o;
}

/** The section header block (version 1.0, section length unknown). */
export function pcapngSectionHeader(order: ByteOrder = 'LE'): Buffer {
  const shb = Buffer.alloc(16);
  writeU32(shb, 0x1a2b3c4d, 0, order);
  writeU16(shb, 1, 4, order);
  if (order === 'LE') shb.writeBigInt64LE(-1n, 8);
  else shb.writeBigInt64BE(-1n, 8);
  return pcapngBlock(0x0a0d0d0a, shb, order);
}
