// `mirrorflow lab` as a newcomer runs it (root, the compiled agent): it passes, says which
// data plane the agent used, shows the agent's own metrics without the ~120 process and
// Node.js series, and explains the "[TCP Previous segment not captured]" a cut copy shows.
import { beforeAll, describe, expect, it } from 'vitest';
import { runLab } from '../../agent/lab/lab.js';
import { agentMetricLines, readyDataPlane, segmentGapNote } from '../../agent/lab/report.js';
import { AGENT_CLI, ensureBuilt } from './helpers/build.js';

describe('mirrorflow lab output', () => {
  beforeAll(() => ensureBuilt(), 60_000);

  it('passes, names the data plane, shows the agent\'s metrics only, and explains cut TCP copies', async () => {
    const lines: string[] = [];
    const result = await runLab({ agentCommand: [process.execPath, AGENT_CLI], print: (l) => lines.push(l) });
    const out = lines.join('\n');
    expect(result.problems).toEqual([]);
    expect(result.ok).toBe(true);
    expect(out).toMatch(/^lab: agent ready \(pid \d+\) in mf-src-\w+, data plane (ebpf|pcap) \(/m);

    const metrics = out.slice(out.indexOf('lab: agent metrics'), out.indexOf('lab: flow log records'));
    expect(metrics).toMatch(/^ {2}mirrorflow_mirror_packets_total\{session="ts-lab"\} \d+$/m);
    expect(metrics).not.toMatch(/mirrorflow_(process|nodejs)_|_bucket\{/);
    expect(Number(/\((\d+) process, Node\.js and histogram bucket series not shown\)/.exec(metrics)?.[1])).toBeGreaterThan(50);

    // Whenever dst's tshark flags a gap, the lab says why; never otherwise.
    const gaps = lines.filter((l) => l.startsWith('  ') && l.includes('[TCP Previous segment not captured]')).length;
    if (gaps > 0) expect(out).toContain(`lab: ${gaps} of ${result.counts.underlay} copies show [TCP Previous segment not captured]`);
    else expect(out).not.toContain('copies show [TCP Previous segment not captured]');
  }, 120_000);

  it('report helpers: metric selection, data plane, and the note only for gaps', () => {
    const text = ['# HELP x', 'mirrorflow_process_cpu_seconds_total 1', 'mirrorflow_nodejs_heap_size_total_bytes 2',
      'mirrorflow_tcp_rtt_seconds_bucket{le="0.1",side="client"} 3', 'mirrorflow_tcp_rtt_seconds_count{side="client"} 3', 'mirrorflow_sessions_active 1'].join('\n');
    expect(agentMetricLines(text)).toEqual({ shown: ['mirrorflow_tcp_rtt_seconds_count{side="client"} 3', 'mirrorflow_sessions_active 1'], hidden: 3 });
    expect(readyDataPlane('{"level":30,"dataPlane":"pcap","msg":"agent ready"}')).toBe('pcap');
    expect(readyDataPlane('not json')).toBe('unknown');
    expect(segmentGapNote(['8080 → 4711 [ACK] Seq=1', '4711 → 8080 [ACK] Ack=2'], 0)).toBeUndefined();
    expect(segmentGapNote(['[TCP Previous segment not captured] 8080 → 4711 [ACK]', 'x'], 1)).toMatch(/^1 of 2 copies show .*cut to min\(packetLength, path MTU - 50\)/s);
  });
});
