// The Internet checksum (RFC 1071) on the hot path: the segmenter completes one per wire
// segment of an offloaded aggregate, so the loop is written for V8. Words are summed into a
// plain number without folding (a double holds the sum of 2^37 words exactly), four words per
// iteration; the carry is folded once at the end.

/**
 * Adds the 16-bit big-endian words of buf[start..end) to `acc` and returns the unfolded sum.
 * An odd last byte counts as the high byte of a word padded with zero. A region that
 * continues another must start at an even distance from that region's start.
 */
export function sumWords(buf: Uint8Array, start: number, end: number, acc: number): number {
  let s = acc;
  let i = start;
  for (const stop = end - 7; i < stop; i += 8) {
    s += ((buf[i]! << 8) | buf[i + 1]!) + ((buf[i + 2]! << 8) | buf[i + 3]!)
      + ((buf[i + 4]! << 8) | buf[i + 5]!) + ((buf[i + 6]! << 8) | buf[i + 7]!);
  }
  for (const stop = end - 1; i < stop; i += 2) s += (buf[i]! << 8) | buf[i + 1]!;
  if (i < end) s += buf[i]! << 8;
  return s;
}

/** Folds an unfolded sum (any size sumWords returns) to 16 bits with end-around carry. */
export function fold(sum: number): number {
  let s = (sum % 0x10000) + Math.floor(sum / 0x10000);
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s;
}

/** The checksum field value for an unfolded sum: the ones' complement of the folded sum. */
export function checksumOf(sum: number): number {
  return ~fold(sum) & 0xffff;
}
