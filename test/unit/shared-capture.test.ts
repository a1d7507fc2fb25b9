// The parts of the one-socket capture that need no kernel: the dispatch program's layout
// (each interface's jump lands on its own program, shared programs once) and how the
// socket's drops are split over interfaces.
import { describe, expect, it } from 'vitest';
import { BPF_INSN_LEN, directionalProgram, interfaceDispatch } from '../../agent/capture/bpf-filter.js';
import { splitDrops } from '../../agent/capture/shared-capture.js';

const insnAt = (prog: Buffer, i: number) => ({
  code: prog.readUInt16LE(i * BPF_INSN_LEN),
  jt: prog[i * BPF_INSN_LEN + 2],
  jf: prog[i * BPF_INSN_LEN + 3],
  k: prog.readInt32LE(i * BPF_INSN_LEN + 4),
});

describe('interfaceDispatch', () => {
  const mirrored = directionalProgram('udp', 'tcp', 65_600);
  const headers = directionalProgram('', '', 256);
  const program = interfaceDispatch([
    { ifindex: 7, program: mirrored },
    { ifindex: 9, program: headers },
    { ifindex: 12, program: headers },
  ]);
  const n = 3;
  const first = 2 + 2 * n;

  it('loads the ifindex, tests each interface and refuses the rest', () => {
    expect(insnAt(program, 0)).toEqual({ code: 0x20, jt: 0, jf: 0, k: -0x1000 + 8 });
    [7, 9, 12].forEach((ifindex, k) => expect(insnAt(program, 1 + 2 * k)).toEqual({ code: 0x15, jt: 0, jf: 1, k: ifindex }));
    expect(insnAt(program, 1 + 2 * n)).toEqual({ code: 0x06, jt: 0, jf: 0, k: 0 });
  });

  it('jumps to each interface\'s program, shared programs placed once', () => {
    expect(program.length).toBe(first * BPF_INSN_LEN + mirrored.length + headers.length);
    const target = (k: number) => 2 + 2 * k + 1 + insnAt(program, 2 + 2 * k).k;
    expect(target(0)).toBe(first);
    expect(target(1)).toBe(first + mirrored.length / BPF_INSN_LEN);
    expect(target(2)).toBe(target(1));
    expect(program.subarray(target(0) * BPF_INSN_LEN, target(1) * BPF_INSN_LEN).equals(mirrored)).toBe(true);
    expect(program.subarray(target(1) * BPF_INSN_LEN).equals(headers)).toBe(true);
  });

  it('refuses more interfaces than the kernel\'s 4096 instructions hold', () => {
    const many = Array.from({ length: 2100 }, (_, i) => ({ ifindex: i + 1, program: headers }));
    expect(() => interfaceDispatch(many)).toThrow(/2100 interfaces need \d+ BPF instructions, the kernel takes at most 4096/);
  });
});

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
