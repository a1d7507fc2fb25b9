// The benchmark's anchors on the lab's src interface: `tcpdump -w /dev/null` (the user-space
// capture ceiling, loss from its own "dropped by kernel" count) and a minimal TC mirror
// (bench/anchor/minimal-mirror.bpf.c: clone every frame into an external vxlan device,
// cut to the path MTU like the agent's copies, no rules, no counters; the ceiling this
// machine allows).
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { run } from '../agent/exec.js';
import type { Topology } from '../agent/lab/topology.js';
import { OVERHEAD_IPV4 } from '../agent/mirror/vxlan.js';

const ANCHOR_SOURCE = fileURLToPath(new URL('../../bench/anchor/minimal-mirror.bpf.c', import.meta.url));
const ANCHOR_DEVICE = 'mfbench0';
/** What the agent keeps of a frame on the lab's 1500-byte path (SPEC §3: MTU − 50). */
const TRUNC = 1450;
const ARCH_INCLUDE = `/usr/include/${process.arch === 'arm64' ? 'aarch64' : 'x86_64'}-linux-gnu`;

/**
 * tcpdump's own counts over one `offer()`: frames its filter received and frames the kernel
 * dropped for want of ring space (its exit summary after SIGINT).
 */
export async function tcpdumpRun<T>(t: Topology, offer: () => Promise<T>): Promise<{ offered: T; received: number; dropped: number }> {
  const dump = t.spawn('src', 'tcpdump', ['-i', t.srcIf, '-w', '/dev/null', '-B', '65536', '-n', 'udp']);
  await dump.waitForLine(/listening on/, 20_000, { stream: 'stderr' });
  const offered = await offer();
  await dump.stop('SIGINT', 10_000);
  const out = dump.output();
  const received = Number(/(\d+) packets received by filter/.exec(out)?.[1] ?? NaN);
  const dropped = Number(/(\d+) packets dropped by kernel/.exec(out)?.[1] ?? NaN);
  return { offered, received, dropped };
}

/** Attaches the minimal mirror to src's interface (egress), copies to `target` with `vni`. */
export async function attachMinimalMirror(t: Topology, target: string, vni: number): Promise<void> {
  await t.exec('src', 'ip', ['link', 'add', ANCHOR_DEVICE, 'type', 'vxlan', 'external', 'dstport', '4789', 'srcport', '49152', '65535', 'nolearning']);
  await t.exec('src', 'ip', ['link', 'set', ANCHOR_DEVICE, 'up']);
  const ifindex = Number((await t.exec('src', 'cat', [`/sys/class/net/${ANCHOR_DEVICE}/ifindex`])).stdout);
  const remote = target.split('.').reduce((n, b) => n * 256 + Number(b), 0);
  const mtu = Number((await t.exec('src', 'cat', [`/sys/class/net/${t.srcIf}/mtu`])).stdout);
  const obj = join(t.workDir, 'minimal-mirror.bpf.o');
  await run('clang', ['-O2', '-target', 'bpf', `-I${ARCH_INCLUDE}`, `-DVXLAN_IFINDEX=${ifindex}`, `-DVNI=${vni}`, `-DREMOTE=0x${remote.toString(16)}`, `-DTRUNC=${mtu - OVERHEAD_IPV4}`, '-c', ANCHOR_SOURCE, '-o', obj]);
  for (const [dev, section] of [[t.srcIf, 'tc'], [ANCHOR_DEVICE, 'classifier']] as const) {
    await t.exec('src', 'tc', ['qdisc', 'add', 'dev', dev, 'clsact']);
    await t.exec('src', 'tc', ['filter', 'add', 'dev', dev, 'egress', 'bpf', 'da', 'obj', obj, 'sec', section]);
  }
}

export async function detachMinimalMirror(t: Topology): Promise<void> {
  await t.exec('src', 'tc', ['qdisc', 'del', 'dev', t.srcIf, 'clsact']);
  await t.exec('src', 'ip', ['link', 'del', ANCHOR_DEVICE]);
}
