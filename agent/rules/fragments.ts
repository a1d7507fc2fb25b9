// Remembers the mirror decision of first fragments so later fragments (which carry no ports)
// follow it (SPEC §2). Fixed size, open addressing with a short probe, no allocation per
// packet: when every probed slot is live, the one closest to expiry is replaced.

import type { PacketView } from '../packet/view.js';

export const FRAG_SLOTS = 4096;
/** Slots inspected per lookup/insert before replacing one. */
export const FRAG_PROBE = 8;
/** A first fragment's decision is kept this long (microseconds), like a reassembly timeout. */
export const FRAG_TTL_US = 30_000_000;
/** lookup() result when no live entry exists. */
export const FRAG_MISS = 0x7fffffff;

/** Key words per slot: src 4, dst 4, protocol, fragment id, (ifIndex << 1 | direction). */
const KEY_WORDS = 11;
const MASK = FRAG_SLOTS - 1;

export class FragmentTable {
  private readonly keys = new Uint32Array(FRAG_SLOTS * KEY_WORDS);
  private readonly decisions = new Int32Array(FRAG_SLOTS);
  /** Expiry time in µs since the epoch; 0 = empty. Float64 because epoch µs exceed 2^32. */
  private readonly expires = new Float64Array(FRAG_SLOTS);

  /** Decision stored for this packet's fragment key, or FRAG_MISS. */
  lookup(view: PacketView, ifIndex: number): number {
    const start = this.hash(view, ifIndex);
    for (let i = 0; i < FRAG_PROBE; i++) {
      const slot = (start + i) & MASK;
      if (this.expires[slot]! > view.tsUs && this.sameKey(slot, view, ifIndex)) return this.decisions[slot]!;
    }
    return FRAG_MISS;
  }

  /** Records the decision of a first fragment (replacing an older entry with the same key). */
  store(view: PacketView, ifIndex: number, decision: number): void {
    const start = this.hash(view, ifIndex);
    let victim = start;
    let victimExpiry = Infinity;
    for (let i = 0; i < FRAG_PROBE; i++) {
      const slot = (start + i) & MASK;
      const expiry = this.expires[slot]!;
      if (expiry > view.tsUs && this.sameKey(slot, view, ifIndex)) {
        victim = slot;
        break;
      }
      if (expiry < victimExpiry) {
        victim = slot;
        victimExpiry = expiry;
      }
    }
    const base = victim * KEY_WORDS;
    const keys = this.keys;
    for (let w = 0; w < 4; w++) {
      keys[base + w] = view.src[w]!;
      keys[base + 4 + w] = view.dst[w]!;
    }
    keys[base + 8] = view.protocol;
    keys[base + 9] = view.fragId;
    keys[base + 10] = (ifIndex << 1) | view.direction;
    this.decisions[victim] = decision;
    this.expires[victim] = view.tsUs + FRAG_TTL_US;
  }

  private sameKey(slot: number, view: PacketView, ifIndex: number): boolean {
    const base = slot * KEY_WORDS;
    const keys = this.keys;
    const src = view.src;
    const dst = view.dst;
    return keys[base + 9] === view.fragId &&
      keys[base] === src[0] && keys[base + 4] === dst[0] &&
      keys[base + 1] === src[1] && keys[base + 2] === src[2] && keys[base + 3] === src[3] &&
      keys[base + 5] === dst[1] && keys[base + 6] === dst[2] && keys[base + 7] === dst[3] &&
      keys[base + 8] === view.protocol && keys[base + 10] === ((ifIndex << 1) | view.direction);
  }

  private hash(view: PacketView, ifIndex: number): number {
    const src = view.src;
    const dst = view.dst;
    // FNV-1a style mixing over the key words.
    let h = 0x811c9dc5 ^ view.fragId;
    h = Math.imul(h ^ src[0]!, 0x01000193);
    h = Math.imul(h ^ dst[0]!, 0x01000193);
    h = Math.imul(h ^ src[3]!, 0x01000193);
    h = Math.imul(h ^ dst[3]!, 0x01000193);
    h = Math.imul(h ^ ((view.protocol << 8) | (ifIndex << 1) | view.direction), 0x01000193);
    h ^= h >>> 15;
    return h & MASK;
  }
}
