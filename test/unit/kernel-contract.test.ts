// The one contract between the eBPF programs and the TypeScript loader: struct layouts
// (agent/ebpf/layout.ts against the compiled object's BTF), limits (agent/limits.ts
// against bpf/mirrorflow.h) and decision codes (agent/rules/match.ts against the header).

import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run } from '../../agent/exec.js';
import { KERNEL_STRUCTS, MF_CHAIN_FLOW_LOG, MF_MARK_MAGIC, MF_REASONS, MF_SLOTS } from '../../agent/ebpf/layout.js';
import { SKB_CB_OFFSET, SKB_CTX_SIZE, SKB_GSO_SEGS_OFFSET, SKB_GSO_SIZE_OFFSET, SKB_IFINDEX_OFFSET, SKB_MARK_OFFSET } from '../../agent/ebpf/libbpf.js';
import { mirrorObjectPath } from '../../agent/ebpf/mirror-maps.js';
import { LIMITS } from '../../agent/limits.js';
import { DIR_IN, DIR_OUT } from '../../agent/packet/view.js';
import * as match from '../../agent/rules/match.js';
import { PROTO_ANY } from '../../agent/rules/compile.js';
import { headerDefines, layoutDifferences, readBtfStructs, type BtfStructs } from '../helpers/btf.js';

const root = fileURLToPath(new URL('../../', import.meta.url));
const headerText = readFileSync(join(root, 'bpf/mirrorflow.h'), 'utf8');
const defines = headerDefines(headerText);

function define(name: string): number {
  const value = defines.get(name);
  if (value === undefined) throw new Error(`bpf/mirrorflow.h has no #define ${name}`);
  return value;
}

describe('struct layouts: layout.ts against the BTF of dist/bpf/mirror.bpf.o', () => {
  let btf: BtfStructs;
  beforeAll(async () => {
    btf = await readBtfStructs(mirrorObjectPath());
  });

  it('has every mf_ struct of the object, and no other', () => {
    // The parser's result (bpf/parse.bpf.h) never leaves the kernel; it is in the BTF as the
    // argument of the flow-log subprogram (bpf/flowlog.bpf.h mf_flow).
    const programInternal = new Set(['mf_pkt']);
    const inObject = [...btf.keys()].filter((n) => n.startsWith('mf_') && !programInternal.has(n)).sort();
    expect(inObject).toEqual(Object.keys(KERNEL_STRUCTS).sort());
  });

  it('__sk_buff: the fields BPF_PROG_TEST_RUN writes and reads (agent/ebpf/libbpf.ts)', () => {
    const skb = btf.get('__sk_buff')!;
    expect(skb.size).toBe(SKB_CTX_SIZE);
    expect(skb.members['mark']?.offset).toBe(SKB_MARK_OFFSET);
    expect(skb.members['ifindex']?.offset).toBe(SKB_IFINDEX_OFFSET);
    expect(skb.members['cb']?.offset).toBe(SKB_CB_OFFSET);
    expect(skb.members['gso_segs']?.offset).toBe(SKB_GSO_SEGS_OFFSET);
    expect(skb.members['gso_size']?.offset).toBe(SKB_GSO_SIZE_OFFSET);
  });

  for (const [name, ours] of Object.entries(KERNEL_STRUCTS)) {
    it(`${name}: same size, members, offsets and member sizes`, () => {
      expect(layoutDifferences(name, btf.get(name), ours)).toEqual([]);
    });
  }
});

describe('the check catches a same-size reorder', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'mf-contract-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('mf_session with vni and trunc_len swapped differs at both members', async () => {
    const original = '\t__u32 vni;\n\t__u32 trunc_len;';
    expect(headerText).toContain(original);
    writeFileSync(join(dir, 'mirrorflow.h'), headerText.replace(original, '\t__u32 trunc_len;\n\t__u32 vni;'));
    writeFileSync(join(dir, 'probe.c'), '#include "vmlinux.h"\n#include "mirrorflow.h"\nstruct mf_session probe;\n');
    const object = join(dir, 'probe.o');
    await run('clang', ['-g', '-O2', '-target', 'bpf', `-I${join(root, 'dist/bpf')}`, '-c', join(dir, 'probe.c'), '-o', object]);
    const reordered = (await readBtfStructs(object)).get('mf_session');
    expect(reordered?.size).toBe(KERNEL_STRUCTS.mf_session.size);
    expect(layoutDifferences('mf_session', reordered, KERNEL_STRUCTS.mf_session)).toEqual([
      'mf_session.trunc_len: offset 0 size 4 in BTF, offset 4 size 4 in layout.ts',
      'mf_session.vni: offset 4 size 4 in BTF, offset 0 size 4 in layout.ts',
    ]);
  });
});

describe('limits: agent/limits.ts against bpf/mirrorflow.h', () => {
  it.each([
    ['MF_MAX_RULES', LIMITS.rulesPerDirection],
    ['MF_MAX_CHAIN', LIMITS.sessionsPerInterface],
    ['MF_MAX_SESSIONS', LIMITS.enabledSessions],
    ['MF_MAX_OWN', LIMITS.ownOutputs],
    ['MF_MAX_IFACES', LIMITS.sourceInterfaces],
    ['MF_MAX_POOL', LIMITS.poolMax],
    ['MF_FLOW_ENTRIES', LIMITS.kernelFlows],
    ['MF_TCP_CONNS', LIMITS.kernelTcpConnections],
    ['MF_SLOTS', MF_SLOTS],
    ['MF_REASONS', MF_REASONS],
    ['MF_MARK_MAGIC', MF_MARK_MAGIC],
    ['MF_CHAIN_FLOW_LOG', MF_CHAIN_FLOW_LOG],
    ['MF_DIR_IN', DIR_IN],
    ['MF_DIR_OUT', DIR_OUT],
    ['MF_PROTO_ANY', PROTO_ANY],
  ])('%s = %d', (name, value) => {
    expect(define(name)).toBe(value);
  });
});

describe('decision codes: agent/rules/match.ts against bpf/mirrorflow.h', () => {
  const codes = {
    MF_NO_MATCH: match.NO_MATCH,
    MF_EXCLUDED_ARP: match.EXCLUDED_ARP,
    MF_EXCLUDED_NON_IP: match.EXCLUDED_NON_IP,
    MF_EXCLUDED_DHCP: match.EXCLUDED_DHCP,
    MF_EXCLUDED_OWN: match.EXCLUDED_OWN,
    MF_DROPPED_BY_RULE: match.DROPPED_BY_RULE,
    MF_EXCLUDED_MALFORMED: match.EXCLUDED_MALFORMED,
  };

  it.each(Object.entries(codes))('%s = %d', (name, value) => {
    expect(define(name)).toBe(value);
  });

  it('the header has no decision code match.ts lacks', () => {
    const inHeader = [...defines.entries()].filter(([, v]) => v < 0).map(([n]) => n).filter((n) => n !== 'MF_PROTO_ANY');
    expect(inHeader.sort()).toEqual(Object.keys(codes).sort());
  });

  it('mf_iface_stats.decisions has one entry per code plus accepted', () => {
    expect(MF_REASONS).toBe(1 + Object.keys(codes).length);
    expect(Math.min(...Object.values(codes))).toBe(-(MF_REASONS - 1));
  });
});
