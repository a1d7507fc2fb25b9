// Integer hashing for flow keys (no strings, no allocation): FNV-1a steps over 32-bit
// words, then murmur3's finaliser so nearby keys land far apart.

export const FNV_OFFSET = 0x811c9dc5;

/** One FNV-1a step over a 32-bit word. */
export function fnvStep(h: number, word: number): number {
  return Math.imul(h ^ word, 0x01000193);
}

/** murmur3 fmix32: the final avalanche; returns an unsigned 32-bit value. */
export function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}
