// One AF_PACKET socket for many interfaces (agent/capture/shared-capture.ts) against the
// kernel: three veth pairs between two namespaces of the test's own, UDP on each; every
// frame of a covered interface must be delivered under its own index, counted against the
// veth's own kernel counters, cut to that interface's snap length; an uncovered interface
// delivers nothing; a paused capture takes over from a running one without losing or
// repeating a frame.
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run } from '../../agent/exec.js';
import { HEADER_SNAP_LENGTH, MIRROR_SNAP_LENGTH } from '../../agent/capture/packet-ring.js';
import { SharedCapture, type CapturedInterface } from '../../agent/capture/shared-capture.js';
import { DIR_IN, DIR_OUT } from '../../agent/packet/view.js';
import { inNetns } from './helpers/netns.js';
import { sendUdp, startUdp } from './helpers/udp-pairs.js';

const suffix = randomBytes(2).toString('hex');
const nsA = `mf-sca-${suffix}`;
const nsB = `mf-scb-${suffix}`;
const PAIRS = 3;
const PINGS = 150;
const PING_BYTES = 1400;
const aIf = (k: number) => `sca${k}-${suffix}`;
const bIf = (k: number) => `scb${k}-${suffix}`;
const addrA = (k: number) => `198.19.${k}.1`;
const addrB = (k: number) => `198.19.${k}.2`;

const ifindex = new Map<string, number>();
/** Frames delivered per index and direction, and the largest caplen seen per index. */
const frames = Array.from({ length: PAIRS }, () => [0, 0]);
const maxCaplen = new Array<number>(PAIRS).fill(0);
let capture: SharedCapture;

async function stats(k: number): Promise<{ rx: number; tx: number }> {
  const read = async (f: string) => Number((await run('ip', ['netns', 'exec', nsA, 'cat', `/sys/class/net/${aIf(k)}/statistics/${f}`])).stdout.trim());
  return { rx: await read('rx_packets'), tx: await read('tx_packets') };
}

/** PINGS datagrams to pair k's far end: out on aIf(k), and the peer's ICMP unreachables in. */
const ping = (k: number) => sendUdp(nsA, [addrB(k)], PINGS, PING_BYTES);

function covered(k: number, index: number, snapLength: number): CapturedInterface {
  return { ifindex: ifindex.get(aIf(k))!, index, filterIn: '', filterOut: '', snapLength };
}

/** Waits until the delivered counts stop changing (the last block retired), then returns them. */
async function settled(): Promise<number[][]> {
  let last = JSON.stringify(frames);
  for (let i = 0; i < 50; i++) {
    await new Promise((r) => setTimeout(r, 100));
    if (JSON.stringify(frames) === last) return frames.map((f) => [...f]);
    last = JSON.stringify(frames);
  }
  throw new Error('capture did not settle');
}

beforeAll(async () => {
  await run('ip', ['netns', 'add', nsA]);
  await run('ip', ['netns', 'add', nsB]);
  const lines: string[] = [];
  for (let k = 0; k < PAIRS; k++) lines.push(`link add ${aIf(k)} type veth peer name ${bIf(k)} netns ${nsB}`);
  await run('ip', ['-n', nsA, '-batch', '-'], { input: `${lines.join('\n')}\n` });
  for (const ns of [nsA, nsB]) await run('ip', ['netns', 'exec', ns, 'sysctl', '-q', '-w', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1']);
  for (let k = 0; k < PAIRS; k++) {
    await run('ip', ['-n', nsA, 'addr', 'add', `${addrA(k)}/30`, 'dev', aIf(k)]);
    await run('ip', ['-n', nsB, 'addr', 'add', `${addrB(k)}/30`, 'dev', bIf(k)]);
    await run('ip', ['-n', nsA, 'link', 'set', aIf(k), 'up']);
    await run('ip', ['-n', nsB, 'link', 'set', bIf(k), 'up']);
    const mac = async (ns: string, dev: string) => (JSON.parse((await run('ip', ['-n', ns, '-j', 'link', 'show', dev])).stdout) as Array<{ address: string }>)[0]!.address;
    // Static neighbours: nothing but the pings crosses a pair.
    await run('ip', ['-n', nsA, 'neigh', 'replace', addrB(k), 'lladdr', await mac(nsB, bIf(k)), 'dev', aIf(k), 'nud', 'permanent']);
    await run('ip', ['-n', nsB, 'neigh', 'replace', addrA(k), 'lladdr', await mac(nsA, aIf(k)), 'dev', bIf(k), 'nud', 'permanent']);
    const { stdout } = await run('ip', ['netns', 'exec', nsA, 'cat', `/sys/class/net/${aIf(k)}/ifindex`]);
    ifindex.set(aIf(k), Number(stdout.trim()));
  }
  capture = inNetns(nsA, () => new SharedCapture({
    // Pair 0 mirrored (whole frames), pair 1 flow logs only (headers), pair 2 not covered.
    interfaces: [covered(0, 0, MIRROR_SNAP_LENGTH), covered(1, 1, HEADER_SNAP_LENGTH)],
    maxSnapLength: MIRROR_SNAP_LENGTH,
    bufferBytes: 8 << 20,
    bufferTimeoutMs: 10,
    onFrame: (index, _buf, caplen, _wire, _ts, direction) => {
      frames[index]![direction]! += 1;
      if (caplen > maxCaplen[index]!) maxCaplen[index] = caplen;
    },
    onWarning: (msg) => {
      throw new Error(`unexpected capture warning: ${msg}`);
    },
  }));
});

afterAll(async () => {
  capture?.close();
  await run('ip', ['netns', 'del', nsA]).catch(() => undefined);
  await run('ip', ['netns', 'del', nsB]).catch(() => undefined);
});

describe('SharedCapture', () => {
  it('delivers every frame of each covered interface under its index, cut to its snap length, and nothing of others', async () => {
    const before = await Promise.all([0, 1, 2].map(stats));
    await Promise.all([0, 1, 2].map(ping));
    const got = await settled();
    const after = await Promise.all([0, 1, 2].map(stats));
    for (const k of [0, 1]) {
      expect(got[k]![DIR_OUT], `out on ${aIf(k)}`).toBe(after[k]!.tx - before[k]!.tx);
      expect(got[k]![DIR_IN], `in on ${aIf(k)}`).toBe(after[k]!.rx - before[k]!.rx);
      expect(after[k]!.tx - before[k]!.tx).toBeGreaterThanOrEqual(PINGS);
    }
    // Ethernet + IPv4 + UDP + payload, whole on the mirrored interface; headers only on the other.
    expect(maxCaplen[0]).toBe(14 + 20 + 8 + PING_BYTES);
    expect(maxCaplen[1]).toBe(HEADER_SNAP_LENGTH);
    // Pair 2 carried traffic too, and none of it was delivered.
    expect(after[2]!.tx - before[2]!.tx).toBeGreaterThanOrEqual(PINGS);
    expect(got[2]).toEqual([0, 0]);
    expect(capture.stats().dropped).toBe(0);
    expect(capture.ringBytes).toBeLessThanOrEqual(8 << 20);
  });

  it('a paused capture takes over from a running one: a kept interface\'s frames once each, a new one\'s all', async () => {
    capture.close();
    const counts = [Array.from({ length: PAIRS }, () => 0), Array.from({ length: PAIRS }, () => 0)];
    const open = (which: number, interfaces: CapturedInterface[], paused: boolean) => inNetns(nsA, () => new SharedCapture({
      interfaces, maxSnapLength: MIRROR_SNAP_LENGTH, bufferBytes: 4 << 20, bufferTimeoutMs: 10, paused,
      onFrame: (index) => {
        counts[which]![index]! += 1;
      },
      onWarning: (msg) => {
        throw new Error(`unexpected capture warning: ${msg}`);
      },
    }));
    const before = await Promise.all([0, 1, 2].map(stats));
    const old = open(0, [covered(1, 1, HEADER_SNAP_LENGTH)], false);
    const steady = startUdp(nsA, [addrB(1)], 100, 2);
    await new Promise((r) => setTimeout(r, 300));
    const next = open(1, [covered(1, 1, HEADER_SNAP_LENGTH), covered(2, 2, HEADER_SNAP_LENGTH)], true);
    const fresh = sendUdp(nsA, [addrB(2)], PINGS, 100);
    await new Promise((r) => setTimeout(r, 200));
    await old.drain();
    old.close();
    next.resume(old);
    await fresh;
    await steady.stop('SIGTERM');
    let after = await Promise.all([0, 1, 2].map(stats));
    for (let i = 0; i < 50; i++) {
      await new Promise((r) => setTimeout(r, 100));
      const now = await Promise.all([0, 1, 2].map(stats));
      if (JSON.stringify(now) === JSON.stringify(after)) break;
      after = now;
    }
    await next.drain();
    next.close();
    const kernel = (k: number) => after[k]!.rx - before[k]!.rx + after[k]!.tx - before[k]!.tx;
    expect(counts[0]![1]! + counts[1]![1]!).toBe(kernel(1));
    expect(counts[0]![1]).toBeGreaterThan(0);
    expect(counts[1]![1]).toBeGreaterThan(0);
    expect(counts[0]![2]).toBe(0);
    expect(counts[1]![2]).toBe(kernel(2));
  });
});
