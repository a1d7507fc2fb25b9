// BPF_PROG_TEST_RUN of the pool choice in mf_tunnel (bpf/pool.bpf.h) against the TypeScript
// one (agent/mirror/pool.ts) on the same frames: the member the kernel reports in cb[2]
// must be the one pickMember() names, for every health mask, and the member counters must
// count the copy there. Needs root (loading BPF programs).
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../agent/config/load.js';
import { MF_MARK_MAGIC } from '../../agent/ebpf/layout.js';
import { MirrorMaps } from '../../agent/ebpf/mirror-maps.js';
import { SKB_CB_OFFSET } from '../../agent/ebpf/libbpf.js';
import { flowHash } from '../../agent/mirror/flow-hash.js';
import { allHealthy, NO_MEMBER, pickMember } from '../../agent/mirror/pool.js';
import { buildPacket } from '../helpers/build-packet.js';
import { decode } from '../../agent/packet/decode.js';
import { parseAddress } from '../../agent/packet/address.js';
import { compileRules } from '../../agent/rules/compile.js';
import { PacketView } from '../../agent/packet/view.js';

const TC_ACT_SHOT = 2;
const TC_ACT_REDIRECT = 7;
const DEV = 'mfpool0';
const MEMBERS = ['192.0.2.11', '192.0.2.12', '192.0.2.13'];

const config = (iface: string) => parseConfig(JSON.stringify({
  filters: [{ id: 'tf', ingressRules: [{ priority: 1, action: 'accept', protocol: 'ALL', sourceCidrBlock: '0.0.0.0/0', destinationCidrBlock: '0.0.0.0/0' }], egressRules: [] }],
  sessions: [{ id: 'ts-p', priority: 1, vni: 90, filterId: 'tf', sources: [iface], targets: { pool: MEMBERS.map((address) => ({ address })) } }],
}), { localAddresses: [] });

describe('pool member choice in mf_tunnel = pickMember() (BPF_PROG_TEST_RUN)', () => {
  let maps: MirrorMaps;
  let slot = 0;
  const mark = () => (MF_MARK_MAGIC | (slot << 8)) >>> 0;
  const view = new PacketView();
  const frames = Array.from({ length: 200 }, (_, i) => buildPacket({
    src: i % 2 ? `10.2.${i >> 8}.${i & 0xff}` : `fd00::${i.toString(16)}:1`,
    dst: i % 2 ? '10.9.0.1' : 'fd00::9',
    proto: i % 3 ? 'tcp' : 'udp',
    srcPort: 40000 + i,
    dstPort: 443,
    payload: 40,
  }));
  const hashes = frames.map((f) => {
    decode(view, f, f.length, f.length);
    return flowHash(view);
  });

  beforeAll(() => {
    try { execFileSync('ip', ['link', 'del', DEV], { stdio: 'ignore' }); } catch { /* absent */ }
    execFileSync('ip', ['link', 'add', DEV, 'type', 'veth', 'peer', 'name', `${DEV}p`]);
    const ifindex = Number(readFileSync(`/sys/class/net/${DEV}/ifindex`, 'utf8'));
    maps = MirrorMaps.open();
    const rules = compileRules(config(DEV));
    slot = maps.install({
      rules,
      ifindexes: new Map([[DEV, ifindex]]),
      sessions: rules.sessions.map((s) => ({
        vni: s.vni, truncLen: 1500, vxlanIfindex: ifindex, family: s.targetFamily, remote: [0, 0, 0, 0],
        members: s.members.map((a) => parseAddress(a).words), healthy: allHealthy(s.members.length),
      })),
      segIfindex: 0,
    });
  });

  afterAll(() => {
    maps?.close();
    try { execFileSync('ip', ['link', 'del', DEV], { stdio: 'ignore' }); } catch { /* already gone */ }
  });

  it('the kernel picks the member TypeScript picks, for every health mask of a pool of three', () => {
    for (let healthy = 1; healthy < 8; healthy++) {
      maps.setPoolHealth(slot, 0, healthy);
      const kernel = frames.map((f) => {
        const run = maps.tunnel(f, mark());
        expect(run.verdict).toBe(TC_ACT_REDIRECT);
        return run.ctxOut.readInt32LE(SKB_CB_OFFSET + 8);
      });
      expect(kernel).toEqual(hashes.map((h) => pickMember(h, MEMBERS.length, healthy)));
      // Only healthy members are chosen.
      for (const m of kernel) expect((healthy >> m) & 1).toBe(1);
    }
  });

  it('copies are counted per member; with no healthy member nothing is sent and the copy is an error', () => {
    maps.setPoolHealth(slot, 0, allHealthy(3));
    const before = [0, 1, 2].map((m) => maps.memberStats(slot, 0, m).packets);
    const want = [0, 0, 0];
    for (let i = 0; i < frames.length; i++) {
      maps.tunnel(frames[i]!, mark());
      want[pickMember(hashes[i]!, 3, allHealthy(3))]!++;
    }
    expect([0, 1, 2].map((m) => maps.memberStats(slot, 0, m).packets - before[m]!)).toEqual(want);
    // Every member gets a share of 200 flows.
    for (const n of want) expect(n).toBeGreaterThan(40);

    maps.setPoolHealth(slot, 0, 0);
    const errors = maps.sessionStats(slot, 0).errors;
    const run = maps.tunnel(frames[0]!, mark());
    expect(run.verdict).toBe(TC_ACT_SHOT);
    expect(run.ctxOut.readInt32LE(SKB_CB_OFFSET + 8)).toBe(NO_MEMBER);
    expect(maps.sessionStats(slot, 0).errors).toBe(errors + 1);
  });
});
