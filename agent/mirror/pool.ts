// Which pool member a flow goes to (SPEC §3): rendezvous (highest random weight) hashing of
// the symmetric flow hash against each member's index. Every member gets a score for the
// flow; the healthy member with the highest score wins (the lower index on a tie). Taking a
// member out changes only the winner of the flows it was winning, and its return takes
// back exactly those. Must be in sync with bpf/pool.bpf.h (the eBPF plane picks in the
// kernel); test/ebpf/pool.test.ts runs both on the same frames.
import { fmix32 } from '../packet/hash.js';

/** Members of one pool (bpf/mirrorflow.h MF_MAX_POOL; config LIMITS.poolMax). */
export const MAX_POOL = 16;
/** No healthy member: the copy is not sent (counted). */
export const NO_MEMBER = -1;
/** Per-member salt: the golden ratio times (index + 1), so member 0 is not salted by 0. */
const MEMBER_SALT = 0x9e3779b9;

/** The weight of member `index` for a flow with symmetric hash `hash` (unsigned 32-bit). */
export function memberScore(hash: number, index: number): number {
  return fmix32((hash ^ Math.imul(index + 1, MEMBER_SALT)) >>> 0);
}

/**
 * The member of a pool of `size` that the flow goes to among those whose bit is set in
 * `healthy` (bit i = member i); NO_MEMBER when none is.
 */
export function pickMember(hash: number, size: number, healthy: number): number {
  let best = NO_MEMBER;
  let bestScore = -1;
  for (let i = 0; i < size; i++) {
    if (((healthy >>> i) & 1) === 0) continue;
    const score = memberScore(hash, i);
    if (score > bestScore) {
      best = i;
      bestScore = score;
    }
  }
  return best;
}

/** The mask with every member of a pool of `size` healthy. */
export const allHealthy = (size: number): number => (size >= 32 ? 0xffffffff : (1 << size) - 1) >>> 0;
