// A seeded PRNG for the fuzz tests: the same seed gives the same frames on every machine,
// so a failure is reproduced with FUZZ_SEED=<seed>.

/** xorshift32 (Marsaglia): fast, full period 2^32 - 1, good enough to pick mutations. */
export class Prng {
  private x: number;

  constructor(readonly seed: number) {
    this.x = seed >>> 0 || 1;
  }

  /** The next 32-bit unsigned value. */
  next(): number {
    let x = this.x;
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    this.x = x >>> 0;
    return this.x;
  }

  /** An integer in [0, n). */
  below(n: number): number {
    return this.next() % n;
  }

  byte(): number {
    return this.next() & 0xff;
  }

  pick<T>(list: readonly T[]): T {
    return list[this.below(list.length)]!;
  }
}

/** FUZZ_SEED from the environment (decimal or 0x hex), else `fallback`. */
export function seedFromEnv(fallback: number): number {
  const text = process.env.FUZZ_SEED;
  if (text === undefined || text === '') return fallback;
  const n = Number(text);
  if (!Number.isInteger(n) || n <= 0 || n > 0xffffffff) throw new Error(`FUZZ_SEED must be an integer 1..2^32-1, got ${text}`);
  return n;
}
