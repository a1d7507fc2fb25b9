// Hostile traffic through the whole user-space path: decode → match → mirror output → TCP
// analysis → flow tables. One million seeded random and mutated frames (test/fuzz/frames.ts):
// nothing may throw, decode must never look past caplen, every frame is counted exactly once,
// and mutations with a known answer (too many VLAN tags, bad IHL or lengths, wrong checksums)
// must get it. A failure prints the seed: FUZZ_SEED=<seed> npx vitest run test/unit/fuzz.test.ts
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../agent/config/load.js';
import { compileRules } from '../../agent/rules/compile.js';
import { FragmentTable } from '../../agent/rules/fragments.js';
import { matchPacket, EXCLUDED_ARP, EXCLUDED_NON_IP } from '../../agent/rules/match.js';
import { MirrorPipeline } from '../../agent/pipeline.js';
import { FlowStage } from '../../agent/flow/stage.js';
import { decode } from '../../agent/packet/decode.js';
import { DECODE_ARP, DECODE_MALFORMED, DECODE_NON_IP, DECODE_OK, DIR_IN, DIR_OUT, PacketView } from '../../agent/packet/view.js';
import type { MirrorOutput } from '../../agent/mirror/output.js';
import { FrameMutator, MAX_FRAME, MUTATIONS, describeSeed, seedFrames, viewDiff } from '../fuzz/frames.js';
import { Prng, seedFromEnv } from '../fuzz/prng.js';
import { FUZZ_CONFIG } from '../fuzz/config.js';

const FRAMES = 1_000_000;
const SEED = seedFromEnv(0x6d66);
/** Every DROP_EVERY-th copy the fake output refuses (as a full send queue would). */
const DROP_EVERY = 7;
const MAX_FLOWS = 4096;

/** The reasons decode() gives; the fuzz run must reach each of them. */
const REASONS = [
  'eth-truncated', 'vlan-too-many-tags', 'vlan-truncated', 'ip-truncated', 'ipv4-bad-version', 'ipv4-bad-ihl',
  'ipv4-bad-total-length', 'ipv6-bad-version', 'ipv6-bad-payload-length', 'ipv6-ext-truncated', 'ipv6-hbh-not-first',
  'l4-truncated', 'tcp-bad-data-offset',
];

/** A MirrorOutput that checks what the live sender would copy and refuses every DROP_EVERY-th copy. */
class FakeOutput implements MirrorOutput {
  packets = 0;
  bytes = 0;
  truncated = 0;
  sendErrors = 0;
  dropped = 0;
  readonly budgetDrops = 0;
  calls = 0;
  send(view: PacketView, vni: number, packetLength: number): boolean {
    // The sender copies view.buf[0, min(caplen, limit)): it must all be there.
    if (view.caplen > view.buf.length || view.caplen < 0) throw new Error(`caplen ${view.caplen} outside a ${view.buf.length}-byte buffer`);
    if (vni !== 10 || packetLength <= 0) throw new Error(`session fields wrong: vni ${vni}, packetLength ${packetLength}`);
    if (++this.calls % DROP_EVERY === 0) {
      this.dropped++;
      return false;
    }
    this.packets++;
    this.bytes += view.caplen;
    return true;
  }
  async close(): Promise<void> {}
}

describe('fuzz: hostile frames through the user-space path', () => {
  it('a frame cut at any length decodes as the whole frame or as malformed, never as something else', () => {
    const cut = new PacketView();
    for (const seed of seedFrames().map(describeSeed)) {
      const len = seed.frame.length;
      let firstOk = -1;
      for (let c = 0; c <= len; c++) {
        const frame = Buffer.from(seed.frame.subarray(0, c));
        // Cut by the snap length: the wire had the whole frame.
        const snap = decode(cut, frame, c, len);
        if (snap === seed.status) {
          if (firstOk < 0) firstOk = c;
          expect(viewDiff(seed.view, cut), `seed ${seed.frame.toString('hex')} cut at ${c}`).toBe('');
        } else {
          expect(snap, `cut at ${c} after a good cut at ${firstOk}`).toBe(DECODE_MALFORMED);
          expect(firstOk, `cut at ${c}: malformed after a good cut at ${firstOk}`).toBe(-1);
        }
        // Short on the wire too: an IP packet missing bytes its length field claims is malformed.
        const short = decode(cut, frame, c, c);
        if (seed.view.ipVersion !== 0 && c < len) {
          expect(short, `wire-short IP frame cut at ${c}`).toBe(DECODE_MALFORMED);
          expect(cut.malformedReason).toMatch(/truncated|length/);
        }
      }
      expect(firstOk, 'the whole frame decodes').toBeGreaterThan(0);
      expect(firstOk).toBeLessThanOrEqual(len);
    }
  });

  it(`a million frames: nothing thrown, nothing read past caplen, known verdicts kept, every frame counted once (seed ${SEED})`, () => {
    const config = parseConfig(FUZZ_CONFIG, { localAddresses: [] });
    const rules = compileRules(config);
    const fragments = new FragmentTable();
    const output = new FakeOutput();
    let records = 0;
    const flow = new FlowStage({
      config, interfaces: rules.interfaces, emit: (_, r) => (records += r.length), maxFlows: MAX_FLOWS, maxConnections: MAX_FLOWS,
    });
    const pipeline = new MirrorPipeline(rules, [output], flow);
    const rng = new Prng(SEED);
    const mutator = new FrameMutator(rng);
    const seedVerdicts = mutator.seeds.map((s) => ([DIR_IN, DIR_OUT] as const).map((d) => {
      s.view.direction = d;
      return matchPacket(rules, fragments, 0, s.view);
    }));
    const scratch = mutator.out;
    // The same bytes followed by 0xff: a decoder that reads past caplen sees them here and
    // `undefined` (which bit operations turn into 0) in the exact-length frame, and differs.
    const padded = Buffer.alloc(MAX_FRAME + 64, 0xff);
    const exact = new PacketView();
    const beyond = new PacketView();
    const byStatus = new Float64Array(4);
    const bad = { known: 0 };
    let t = 1_700_000_000_000_000;
    const started = performance.now();
    for (let n = 0; n < FRAMES; n++) {
      mutator.mutate();
      const len = mutator.len;
      const wire = mutator.wireLen;
      const frame = scratch.subarray(0, len);
      const dir = rng.below(2) === 0 ? DIR_IN : DIR_OUT;
      t += 1 + rng.below(1000);
      let failure = '';
      try {
        const status = decode(exact, frame, len, wire);
        scratch.copy(padded, 0, 0, len);
        const statusBeyond = decode(beyond, padded, len, wire);
        padded.fill(0xff, 0, len);
        const diff = viewDiff(exact, beyond);
        if (status !== statusBeyond || diff !== '') failure = `decode depends on bytes past caplen (${diff || `status ${status} vs ${statusBeyond}`})`;
        if (status === DECODE_OK) byStatus[0]! += 1;
        else if (status === DECODE_NON_IP) byStatus[1]! += 1;
        else if (status === DECODE_ARP) byStatus[2]! += 1;
        else if (status >= DECODE_MALFORMED) byStatus[3]! += 1;
        else failure = `unknown decode status ${status}`;
        if (status < DECODE_MALFORMED && exact.l4Offset > len) failure = `l4Offset ${exact.l4Offset} past caplen ${len}`;
        if (mutator.expectReason !== '' && exact.malformedReason !== mutator.expectReason) {
          failure = `expected malformed ${mutator.expectReason}, got status ${status} ${exact.malformedReason}`;
        }
        if (mutator.expectSeed >= 0) {
          const seed = mutator.seeds[mutator.expectSeed]!;
          const d = viewDiff(seed.view, exact, mutator.l3Shift, mutator.l3Shift / 4);
          if (status !== seed.status || d !== '') failure = `expected the seed's decode, got status ${status} (${d})`;
          // Fragments follow their first fragment's stored decision: history, not this frame.
          exact.direction = dir;
          if (!exact.isFragment && matchPacket(rules, fragments, 0, exact) !== seedVerdicts[mutator.expectSeed]![dir]) failure = 'match verdict differs from the seed';
          bad.known++;
        }
        pipeline.handleFrame(0, frame, len, wire, t, dir);
      } catch (err) {
        failure = `threw ${(err as Error).stack}`;
      }
      if (failure !== '') {
        throw new Error(`FUZZ_SEED=${SEED}, frame ${n}, mutation ${MUTATIONS[mutator.kind]} (${frame.toString('hex')}, wire ${wire}): ${failure}`);
      }
    }
    flow.flushAll();
    const elapsedMs = performance.now() - started;

    const captured = pipeline.captured[0]! + pipeline.captured[1]!;
    const malformed = [...pipeline.malformed.values()].reduce((a, b) => a + b, 0);
    const notMirrored = pipeline.notMirrored.reduce((a, b) => a + b, 0);
    expect(captured).toBe(FRAMES);
    expect(byStatus.reduce((a, b) => a + b, 0)).toBe(FRAMES);
    expect(malformed).toBe(byStatus[3]);
    expect(pipeline.notMirrored[-EXCLUDED_ARP]).toBe(byStatus[2]);
    expect(pipeline.notMirrored[-EXCLUDED_NON_IP]).toBe(byStatus[1]);
    // Mirrored, refused by the output (counted there), not mirrored with a reason, or malformed.
    expect(output.calls).toBe(output.packets + output.dropped);
    expect(output.packets + output.dropped + notMirrored + malformed).toBe(FRAMES);
    expect(output.dropped).toBeGreaterThan(0);
    // The run reached every kind of damage and every reason decode knows.
    for (let k = 0; k < MUTATIONS.length; k++) expect(mutator.counts[k], MUTATIONS[k]).toBeGreaterThan(FRAMES / 20);
    expect([...pipeline.malformed.keys()].sort()).toEqual(expect.arrayContaining(REASONS));
    for (const s of byStatus) expect(s).toBeGreaterThan(FRAMES / 100);
    expect(bad.known).toBeGreaterThan(FRAMES / 10);
    // State stays within its limits, and the flow logs still produced records.
    expect(flow.tcp.active).toBeLessThanOrEqual(MAX_FLOWS);
    expect(flow.aggregators[0]!.activeFlows).toBeLessThanOrEqual(MAX_FLOWS);
    expect(records).toBeGreaterThan(0);
    console.log(`fuzz: ${FRAMES} frames in ${Math.round(elapsedMs)} ms (seed ${SEED}); decode ok ${byStatus[0]}, non-ip ${byStatus[1]}, arp ${byStatus[2]}, malformed ${byStatus[3]}`);
  }, 120_000);
});
