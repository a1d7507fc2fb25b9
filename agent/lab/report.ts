// What `mirrorflow lab` prints beyond the packets: the agent's own metrics (not the ~80
// process and Node.js defaults that share the mirrorflow_ prefix), the data plane the agent
// chose, and why cut copies look like lost TCP segments to the destination.

/** prom-client's process defaults, and histogram buckets: there, but not what the lab is about. */
const NOT_SHOWN = /^mirrorflow_(process|nodejs)_|_bucket\{/;
const SEGMENT_GAP = 'Previous segment not captured';

/** The agent's own series of a /metrics text, and how many other series were left out. */
export function agentMetricLines(text: string): { shown: string[]; hidden: number } {
  const series = text.split('\n').filter((l) => l.startsWith('mirrorflow_'));
  const shown = series.filter((l) => !NOT_SHOWN.test(l));
  return { shown, hidden: series.length - shown.length };
}

/** The data plane the agent reported in its "agent ready" line ("ebpf", "pcap"), or "unknown". */
export function readyDataPlane(readyLine: string): string {
  try {
    return String((JSON.parse(readyLine) as { dataPlane?: unknown }).dataPlane ?? 'unknown');
  } catch {
    return 'unknown';
  }
}

/**
 * A note for the copies tshark marks "[TCP Previous segment not captured]", or undefined
 * when there are none. `infos` are tshark's Info column of every received copy.
 */
export function segmentGapNote(infos: readonly string[], truncated: number): string | undefined {
  const gaps = infos.filter((i) => i.includes(SEGMENT_GAP)).length;
  if (gaps === 0) return undefined;
  return [
    `${gaps} of ${infos.length} copies show [TCP ${SEGMENT_GAP}]. The sender's TCP handed the`,
    `kernel segments larger than one packet (TSO/GSO: the NIC or veth splits them later) and the`,
    `agent copies what it captures, cut to min(packetLength, path MTU - 50) so the copy fits the`,
    `path (SPEC §3, docs/wire-format.md; ${truncated} copies cut, mirrorflow_mirror_truncated_packets_total).`,
    `The destination sees every segment's headers but not all of its payload, so tshark reports`,
    `a gap before the next one. The connection itself lost nothing.`,
  ].join('\n');
}

/** The sum of every sample of one metric in a /metrics text. */
export function sumSeries(text: string, name: string): number {
  let sum = 0;
  for (const line of text.split('\n')) if (line.startsWith(`${name}{`) || line.startsWith(`${name} `)) sum += Number(line.split(' ').at(-1));
  return sum;
}
