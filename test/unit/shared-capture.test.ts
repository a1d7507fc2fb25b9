// The part of the one-socket capture that needs no kernel: how the socket's drops are split
// over interfaces (the dispatch program's layout is in bpf-filter.test.ts).
import { describe, expect, it } from 'vitest';
import { splitDrops } from '../../agent/capture/shared-capture.js';

describe('splitDrops', () => {
  it('splits in proportion to the frames delivered, adding up exactly', () => {
    const into = new Float64Array(4);
    splitDrops(10, Float64Array.from([300, 0, 100, 600]), [0, 1, 2, 3], into);
    expect([...into]).toEqual([3, 0, 1, 6]);
    splitDrops(7, Float64Array.from([1, 1, 1, 0]), [0, 1, 2, 3], into);
    expect(into.reduce((a, b) => a + b, 0)).toBe(17);
    expect([...into]).toEqual([6, 2, 3, 6]);
  });

  it('with nothing delivered, evenly over the covered interfaces only', () => {
    const into = new Float64Array(5);
    splitDrops(5, new Float64Array(5), [1, 3], into);
    expect([...into]).toEqual([0, 3, 0, 2, 0]);
  });

  it('one interface gets every drop (the per-interface case stays exact)', () => {
    const into = new Float64Array(1);
    splitDrops(12345, Float64Array.from([3]), [0], into);
    expect(into[0]).toBe(12345);
  });
});
