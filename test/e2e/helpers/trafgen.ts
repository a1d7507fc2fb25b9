// A paced flood of one 64-byte UDP/IPv4 frame from src to the peer (nothing listens on the
// port, so the peer's kernel counts each one in UdpNoPorts): trafgen, one core.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Topology } from '../../../agent/lab/topology.js';

export const FLOOD_FRAME_BYTES = 64;

export interface Flood {
  /**
   * Sends `count` frames at `pps`; resolves with trafgen's run time and what the peer
   * received. trafgen's --rate sends each second's frames as fast as it can, then waits for
   * the next second (at 10k pps: 10,000 frames in ~130 ms); `paced` spaces every frame by
   * 1/pps instead (--gap, which can only be slower: each gap is a sleep).
   */
  offer(count: number, pps: number, opts?: { paced?: boolean }): Promise<{ ms: number; delivered: number }>;
}

/** trafgen config of the frame, written to the lab's work directory. */
export async function prepareFlood(topo: Topology, udpPort: number): Promise<Flood> {
  const peerMac = (JSON.parse((await topo.exec('peer', 'ip', ['-j', 'link', 'show', 'dev', topo.peerSrcIf])).stdout) as { address: string }[])[0]!.address;
  const mac = (m: string) => m.split(':').map((b) => `0x${b}`).join(', ');
  const ip = (a: string) => a.split('.').join(', ');
  const payload = FLOOD_FRAME_BYTES - 14 - 20 - 8;
  const conf = join(topo.workDir, `flood-${udpPort}.trafgen`);
  await writeFile(conf, `{ ${mac(peerMac)}, ${mac(topo.srcMac)}, const16(0x0800),
  0x45, 0x00, const16(${FLOOD_FRAME_BYTES - 14}), const16(0), const16(0x4000), 64, 17, csumip(14, 33),
  ${ip(topo.v4.src)}, ${ip(topo.v4.peerSrc)}, const16(40000), const16(${udpPort}), const16(${payload + 8}), const16(0),
  fill(0x00, ${payload}) }`);
  const noPorts = async () => Number(/UdpNoPorts\s+(\d+)/.exec((await topo.exec('peer', 'nstat', ['-az', 'UdpNoPorts'])).stdout)?.[1]);
  return {
    offer: async (count, pps, opts = {}) => {
      const before = await noPorts();
      const started = performance.now();
      const pace = opts.paced ? ['--gap', `${Math.round(1e9 / pps)}ns`] : ['--rate', `${pps}pps`];
      await topo.exec('src', 'trafgen', ['--dev', topo.srcIf, '--conf', conf, '--cpus', '1', '--num', String(count), ...pace,
        '--no-cpu-stats', '--notouch-irq', '-q'], { timeoutMs: (count / pps) * 3000 + 30_000 });
      return { ms: performance.now() - started, delivered: (await noPorts()) - before };
    },
  };
}
