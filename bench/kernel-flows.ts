// The eBPF plane's flow logs in the kernel (bpf/flowlog.bpf.h), measured with
// BPF_PROG_TEST_RUN (root): what one packet costs the TC program with and without flow
// logging (the kernel's own per-run time, same frame, repeated), and for 100k and 1M flows
// the kernel memory of the flow map (bpftool's memlock) and one drain's user-space time
// (flip, batch lookup and delete, per-CPU sums). Prints a markdown table;
// BENCH_FLOW_COUNTS=100000,1000000 and BENCH_REPEAT narrow it.
import { execFileSync } from 'node:child_process';
import { COUNT_SLOT_GRACE_MS, MirrorMaps } from '../agent/ebpf/mirror-maps.js';
import { LIMITS } from '../agent/limits.js';
import { DIR_OUT } from '../agent/packet/view.js';
import { buildPacket, ethernet, ipv4, tcp } from '../test/helpers/build-packet.js';
import { ETHERTYPE_IPV4, IPPROTO_TCP } from '../agent/packet/offsets.js';

/** Test runs are not attached anywhere: any ifindex works as the flow-logged interface. */
const IFINDEX = 1;
const COUNTS = (process.env.BENCH_FLOW_COUNTS ?? '100000,1000000').split(',').map(Number);
const REPEAT = Number(process.env.BENCH_REPEAT ?? 200_000);

/** bytes_memlock of one of `maps`' maps, as bpftool reports it. */
function memlock(maps: MirrorMaps, name: string): number {
  const id = maps.kernelMapId(name);
  const shown = JSON.parse(execFileSync('bpftool', ['-j', 'map', 'show', 'id', String(id)], { encoding: 'utf8' })) as { bytes_memlock?: number };
  if (shown.bytes_memlock === undefined) throw new Error(`bpftool shows no bytes_memlock for map ${name} (id ${id})`);
  return shown.bytes_memlock;
}

/** Mean ns per run of mf_egress on `frame`, flow logging on or off. */
function perPacketNs(maps: MirrorMaps, frame: Buffer, flowLogged: boolean): number {
  maps.setFlowInterfaces(flowLogged ? [IFINDEX] : []);
  maps.decide(frame, IFINDEX, DIR_OUT); // the flow and connection entries exist from here on
  return maps.decide(frame, IFINDEX, DIR_OUT, REPEAT).durationNs;
}

const mib = (bytes: number) => (bytes / 2 ** 20).toFixed(1);

async function main(): Promise<void> {
  const lines: string[] = [];
  {
    const maps = MirrorMaps.open();
    try {
      const udp = buildPacket({ src: '198.18.0.1', dst: '198.18.0.2', proto: 'udp', srcPort: 40000, dstPort: 9, payload: 18 });
      const seg = ethernet({
        etherType: ETHERTYPE_IPV4,
        payload: ipv4({ src: '198.18.0.1', dst: '198.18.0.2', protocol: IPPROTO_TCP, payload: tcp({ srcPort: 40000, dstPort: 80, seq: 1, ack: 1, flags: 0x10, payload: Buffer.alloc(100) }) }),
      });
      lines.push(`Per packet (mf_egress, BPF_PROG_TEST_RUN × ${REPEAT}, no rule selects it):`, '', '| frame | flow log off | flow log on |', '| --- | --- | --- |');
      for (const [name, frame] of [['UDP 64 B', udp], ['TCP ACK + 100 B (same segment again: a retransmission each time)', seg]] as const) {
        lines.push(`| ${name} | ${perPacketNs(maps, frame, false)} ns | ${perPacketNs(maps, frame, true)} ns |`);
      }
    } finally {
      maps.close();
    }
  }
  lines.push('', '| flows | mf_flows memlock | mf_tcp_conns memlock | fill (test runs) | one drain (user space) |', '| --- | --- | --- | --- | --- |');
  for (const n of COUNTS) {
    const maps = MirrorMaps.open(undefined, { flows: n });
    try {
      maps.setFlowInterfaces([IFINDEX]);
      const frame = buildPacket({ src: '198.18.0.1', dst: '198.18.0.2', proto: 'udp', srcPort: 1, dstPort: 9, payload: 18 });
      const filled = performance.now();
      // Distinct 5-tuples: source address (last two bytes) and source port.
      for (let i = 0; i < n; i++) {
        frame.writeUInt16BE(i & 0xffff, 14 + 12 + 2);
        frame.writeUInt16BE(1 + (i >>> 16), 14 + 20);
        maps.decide(frame, IFINDEX, DIR_OUT);
      }
      const fillMs = performance.now() - filled;
      const slot = maps.flipCountSlot();
      await new Promise((resolve) => setTimeout(resolve, COUNT_SLOT_GRACE_MS));
      const drained = performance.now();
      const flows = await maps.takeFlows(slot);
      const drainMs = performance.now() - drained;
      if (flows.length !== n) throw new Error(`drained ${flows.length} flows of ${n}`);
      lines.push(`| ${n.toLocaleString('en')} | ${mib(memlock(maps, 'mf_flows'))} MiB | ${mib(memlock(maps, 'mf_tcp_conns'))} MiB (${LIMITS.kernelTcpConnections.toLocaleString('en')} connections) | ${(fillMs / 1000).toFixed(1)} s | ${drainMs.toFixed(0)} ms |`);
    } finally {
      maps.close();
    }
  }
  process.stdout.write(`${lines.join('\n')}\n`);
}

await main();
