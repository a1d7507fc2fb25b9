// What `mirrorflow lab` prints about the agent: its own metrics (not the ~120 process,
// Node.js and bucket series that share the mirrorflow_ prefix) and the data plane it chose.

/** prom-client's process defaults, and histogram buckets: there, but not what the lab is about. */
const NOT_SHOWN = /^mirrorflow_(process|nodejs)_|_bucket\{/;

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

/** Sums the samples of `name` (exact metric name) whose labels include every given pair. */
export function sumMetric(text: string, name: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][\w:]*)(\{[^}]*\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const present = m[2] ?? '';
    if (Object.entries(labels).every(([k, v]) => present.includes(`${k}="${v}"`))) sum += Number(m[3]);
  }
  return sum;
}
