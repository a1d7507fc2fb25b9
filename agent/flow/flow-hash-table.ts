// Open addressing (linear probing, backward-shift deletion) over fixed typed arrays: the
// flow table and the TCP tracker keep their per-flow state in parallel arrays indexed by
// the slot this returns. Keys are 12 int32 words, compared in place; nothing per lookup
// is allocated. The capacity is a power of two at least twice the entry limit, so probe
// runs stay short.
import { fmix32, FNV_OFFSET, fnvStep } from '../packet/hash.js';

/** Words of a key: ifIndex, direction/flags word, 4 + 4 address words, ports word, protocol. */
export const KEY_WORDS = 12;
export const EMPTY = -1;

export class FlowHashTable {
  readonly capacity: number;
  readonly keys: Int32Array;
  /** Insertion or refresh time per slot (µs), for choosing a victim when full. */
  readonly lastSeenUs: Float64Array;
  private readonly used: Uint8Array;
  private readonly mask: number;
  size = 0;

  constructor(readonly maxEntries: number) {
    let cap = 16;
    while (cap < maxEntries * 2) cap *= 2;
    this.capacity = cap;
    this.mask = cap - 1;
    this.keys = new Int32Array(cap * KEY_WORDS);
    this.lastSeenUs = new Float64Array(cap);
    this.used = new Uint8Array(cap);
  }

  /** Slot holding `key` (KEY_WORDS words at key[0..]), or EMPTY. */
  find(key: Int32Array, hash: number): number {
    const keys = this.keys;
    for (let slot = hash & this.mask, n = 0; n < this.capacity; slot = (slot + 1) & this.mask, n++) {
      if (this.used[slot] === 0) return EMPTY;
      const base = slot * KEY_WORDS;
      let i = 0;
      while (i < KEY_WORDS && keys[base + i] === key[i]) i++;
      if (i === KEY_WORDS) return slot;
    }
    return EMPTY;
  }

  /** Inserts a key known to be absent; the caller makes room first when size === maxEntries. */
  insert(key: Int32Array, hash: number, nowUs: number): number {
    let slot = hash & this.mask;
    while (this.used[slot] !== 0) slot = (slot + 1) & this.mask;
    this.used[slot] = 1;
    this.keys.set(key, slot * KEY_WORDS);
    this.lastSeenUs[slot] = nowUs;
    this.size++;
    return slot;
  }

  /** The least recently seen entry among the `scan` occupied slots from `hash` on. */
  victim(hash: number, scan: number): number {
    let best = EMPTY;
    for (let slot = hash & this.mask, seen = 0, n = 0; seen < scan && n < this.capacity; slot = (slot + 1) & this.mask, n++) {
      if (this.used[slot] === 0) continue;
      seen++;
      if (best === EMPTY || this.lastSeenUs[slot]! < this.lastSeenUs[best]!) best = slot;
    }
    return best;
  }

  /**
   * Removes the entry at `slot`. Later entries of the same probe run move back to keep every
   * key reachable; `move(from, to)` lets the owner move its parallel per-slot state too.
   */
  remove(slot: number, hashOf: (slot: number) => number, move: (from: number, to: number) => void): void {
    const mask = this.mask;
    let hole = slot;
    let next = (hole + 1) & mask;
    while (this.used[next] !== 0) {
      const home = hashOf(next) & mask;
      // Move `next` into the hole when its home is not between the hole and itself (cyclically).
      const between = hole <= next ? home > hole && home <= next : home > hole || home <= next;
      if (!between) {
        this.keys.copyWithin(hole * KEY_WORDS, next * KEY_WORDS, next * KEY_WORDS + KEY_WORDS);
        this.lastSeenUs[hole] = this.lastSeenUs[next]!;
        move(next, hole);
        hole = next;
      }
      next = (next + 1) & mask;
    }
    this.used[hole] = 0;
    this.size--;
  }

  isUsed(slot: number): boolean {
    return this.used[slot] !== 0;
  }

  clear(): void {
    this.used.fill(0);
    this.size = 0;
  }
}

/** Hash of a key (FNV-1a over the words, murmur3 finaliser). */
export function hashKey(key: Int32Array, from = 0): number {
  let h = FNV_OFFSET;
  for (let i = from; i < from + KEY_WORDS; i++) h = fnvStep(h, key[i]!);
  return fmix32(h);
}
