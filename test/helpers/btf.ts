// Reads the struct layouts of a compiled BPF object from its BTF (`bpftool btf dump -j`)
// and compares them with agent/ebpf/layout.ts's table, member by member.

import { run } from '../../agent/exec.js';
import type { Member, StructLayout } from '../../agent/ebpf/layout.js';

interface BtfMember {
  name: string;
  type_id: number;
  bits_offset: number;
}

interface BtfType {
  id: number;
  kind: string;
  name: string;
  size?: number;
  type_id?: number;
  nr_elems?: number;
  members?: BtfMember[];
}

/** Struct name -> layout in bytes, for the object's own structs (mf_*) and the __sk_buff the programs read. */
export type BtfStructs = Map<string, StructLayout>;

export async function readBtfStructs(objectPath: string): Promise<BtfStructs> {
  const { stdout } = await run('bpftool', ['btf', 'dump', 'file', objectPath, '-j']);
  const types = new Map<number, BtfType>();
  for (const t of (JSON.parse(stdout) as { types: BtfType[] }).types) types.set(t.id, t);
  const sizeOf = (id: number): number => {
    const t = types.get(id);
    if (t === undefined) throw new Error(`BTF type ${id} missing`);
    switch (t.kind) {
      case 'INT': case 'STRUCT': case 'UNION': case 'ENUM': case 'ENUM64': return t.size!;
      case 'PTR': return 8;
      case 'ARRAY': return t.nr_elems! * sizeOf(t.type_id!);
      case 'TYPEDEF': case 'CONST': case 'VOLATILE': case 'RESTRICT': case 'TYPE_TAG': return sizeOf(t.type_id!);
      default: throw new Error(`BTF type ${id}: no size for kind ${t.kind}`);
    }
  };
  const out: BtfStructs = new Map();
  for (const t of types.values()) {
    if (t.kind !== 'STRUCT' || !(t.name.startsWith('mf_') || t.name === '__sk_buff')) continue;
    const members: Record<string, Member> = {};
    for (const mem of t.members ?? []) {
      if (mem.bits_offset % 8 !== 0) throw new Error(`${t.name}.${mem.name}: bit field, not a byte layout`);
      members[mem.name] = { offset: mem.bits_offset / 8, size: sizeOf(mem.type_id) };
    }
    out.set(t.name, { size: t.size!, members });
  }
  return out;
}

/** Every difference between the object's struct `name` and ours, one line each; [] when they agree. */
export function layoutDifferences(name: string, btf: StructLayout | undefined, ours: StructLayout): string[] {
  if (btf === undefined) return [`${name}: not in the object's BTF`];
  const diffs: string[] = [];
  if (btf.size !== ours.size) diffs.push(`${name}: size ${btf.size} in BTF, ${ours.size} in layout.ts`);
  const names = new Set([...Object.keys(btf.members), ...Object.keys(ours.members)]);
  for (const member of names) {
    const a = btf.members[member];
    const b = ours.members[member];
    if (a === undefined) diffs.push(`${name}.${member}: only in layout.ts`);
    else if (b === undefined) diffs.push(`${name}.${member}: only in BTF`);
    else if (a.offset !== b.offset || a.size !== b.size) {
      diffs.push(`${name}.${member}: offset ${a.offset} size ${a.size} in BTF, offset ${b.offset} size ${b.size} in layout.ts`);
    }
  }
  return diffs;
}

/** `#define MF_NAME value` lines of a C header, numeric values only (1, -1, (-1), 0x4d460000u, 30ULL). */
export function headerDefines(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const match of text.matchAll(/^#define\s+(MF_\w+)\s+\(?(-?(?:0x[0-9a-fA-F]+|\d+))[uUlL]*\)?/gm)) {
    out.set(match[1]!, Number(match[2]!));
  }
  return out;
}
