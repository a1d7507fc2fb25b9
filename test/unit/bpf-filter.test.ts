// The capture's kernel filter: libpcap called through koffi must give the same classic BPF
// as tcpdump's own compiler (`tcpdump -ddd`, an independent caller of libpcap), and the
// per-direction program must hold each direction's code unchanged behind the branch.
import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { BPF_INSN_LEN, MAX_FILTER_SNAP, compileFilter, directionalProgram, interfaceDispatch } from '../../agent/capture/bpf-filter.js';

/** tcpdump -ddd: the instruction count, then "code jt jf k" per line, as our 8-byte sock_filter entries. */
function tcpdumpProgram(expr: string, snap: number): Buffer {
  const out = execFileSync('tcpdump', ['-i', 'lo', '-s', String(snap), '-ddd', expr], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  const [count, ...lines] = out.trim().split('\n');
  const prog = Buffer.alloc(Number(count) * BPF_INSN_LEN);
  lines.forEach((line, i) => {
    const [code, jt, jf, k] = line.split(' ').map(Number) as [number, number, number, number];
    prog.writeUInt16LE(code, i * BPF_INSN_LEN);
    prog[i * BPF_INSN_LEN + 2] = jt;
    prog[i * BPF_INSN_LEN + 3] = jf;
    prog.writeUInt32LE(k >>> 0, i * BPF_INSN_LEN + 4);
  });
  return prog;
}

const insnAt = (prog: Buffer, i: number) => ({
  code: prog.readUInt16LE(i * BPF_INSN_LEN),
  jt: prog[i * BPF_INSN_LEN + 2],
  jf: prog[i * BPF_INSN_LEN + 3],
  k: prog.readInt32LE(i * BPF_INSN_LEN + 4),
});

describe('compileFilter', () => {
  // Not `vlan`: on a live Linux handle (tcpdump's) libpcap tests the kernel's VLAN metadata
  // too; without one (ours) it tests the data only, which is why directionalProgram exists.
  for (const expr of ['tcp', 'ip and dst net 198.18.0.0/15 and (dst port 80 or (ip[6:2] & 0x1fff != 0))', 'ip6 and (tcp or ip6[6] == 44)', 'less 1', '']) {
    it(`compiles ${JSON.stringify(expr)} as tcpdump does`, () => {
      expect(compileFilter(expr, 256).equals(tcpdumpProgram(expr, 256))).toBe(true);
    });
  }

  it('accepts the snap length it is given (what the kernel copies)', () => {
    const prog = compileFilter('', MAX_FILTER_SNAP);
    expect(prog.length).toBe(BPF_INSN_LEN);
    expect(insnAt(prog, 0)).toEqual({ code: 0x06, jt: 0, jf: 0, k: MAX_FILTER_SNAP });
  });

  it('names the expression libpcap refuses, and refuses snap lengths it cannot return', () => {
    expect(() => compileFilter('tcp and nonsense', 256)).toThrow(/capture filter "tcp and nonsense": syntax error/);
    expect(() => compileFilter('tcp', 0)).toThrow(/snap length 0 outside/);
    expect(() => compileFilter('tcp', MAX_FILTER_SNAP + 1)).toThrow(/outside/);
  });
});

describe('directionalProgram', () => {
  it('accepts kernel-tagged VLAN frames, then branches on the packet type to each direction’s own program', () => {
    const out = compileFilter('udp or vlan', 256);
    const inb = compileFilter('tcp or vlan', 256);
    const prog = directionalProgram('tcp or vlan', 'udp or vlan', 256);
    const head = 6;
    expect(prog.length).toBe((head * BPF_INSN_LEN) + out.length + inb.length);
    // ld [vlan_tag_present]; jeq #0 → skip; ret #256
    expect(insnAt(prog, 0)).toEqual({ code: 0x20, jt: 0, jf: 0, k: -0x1000 + 48 });
    expect(insnAt(prog, 1)).toEqual({ code: 0x15, jt: 1, jf: 0, k: 0 });
    expect(insnAt(prog, 2)).toEqual({ code: 0x06, jt: 0, jf: 0, k: 256 });
    // ldh [pkttype]; jeq #PACKET_OUTGOING → outbound program; else ja over it
    expect(insnAt(prog, 3)).toEqual({ code: 0x28, jt: 0, jf: 0, k: -0x1000 + 4 });
    expect(insnAt(prog, 4)).toEqual({ code: 0x15, jt: 1, jf: 0, k: 4 });
    expect(insnAt(prog, 5)).toEqual({ code: 0x05, jt: 0, jf: 0, k: out.length / BPF_INSN_LEN });
    expect(prog.subarray(head * BPF_INSN_LEN, head * BPF_INSN_LEN + out.length).equals(out)).toBe(true);
    expect(prog.subarray(head * BPF_INSN_LEN + out.length).equals(inb)).toBe(true);
  });
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
