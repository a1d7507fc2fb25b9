// `mirrorflow lab` as a user runs it (root): it must end with "lab: OK", which it prints
// only when the destination decoded what the rules select and the bulk transfer, with the
// veths' default offloads, arrived whole (copies covering every byte the receiver got). It
// says which data plane the agent used and shows the agent's own metrics without the ~120
// process and Node.js series.
import { describe, expect, it } from 'vitest';
import { run } from '../../agent/exec.js';
import { agentMetricLines, readyDataPlane } from '../../agent/lab/report.js';
import { AGENT_CLI, REPO_ROOT, ensureBuilt } from './helpers/build.js';

describe('mirrorflow lab (root)', () => {
  it('ends OK, with the bulk transfer arriving whole, the data plane named and only the agent\'s metrics shown', async () => {
    await ensureBuilt();
    const { stdout } = await run(process.execPath, [AGENT_CLI, 'lab'], { cwd: REPO_ROOT, timeoutMs: 240_000 });
    expect(stdout).toMatch(/\nlab: OK\n/);
    const bulk = /receiver got (\d+) bytes; dst got (\d+) copies of its data segments, largest inner frame (\d+) B/.exec(stdout);
    expect(bulk).not.toBeNull();
    const [, received, copies, largest] = bulk!.map(Number);
    // One copy per wire segment (≤ 1448 payload bytes each), none larger than a wire frame.
    expect(copies).toBeGreaterThanOrEqual(Math.floor(received! / 1448));
    expect(largest).toBeLessThanOrEqual(1450);
    expect(stdout).toMatch(/cover all \d+ bytes the receiver got, without a hole/);
    expect(stdout).toMatch(/lab: namespaces and files removed/);

    expect(stdout).toMatch(/^lab: agent ready \(pid \d+\) in mf-src-\w+, data plane (ebpf|pcap) \(/m);
    const metrics = stdout.slice(stdout.indexOf('lab: agent metrics'), stdout.indexOf('lab: flow log records'));
    expect(metrics).toMatch(/^ {2}mirrorflow_mirror_packets_total\{session="ts-lab"\} \d+$/m);
    expect(metrics).not.toMatch(/mirrorflow_(process|nodejs)_|_bucket\{/);
    expect(Number(/\((\d+) process, Node\.js and histogram bucket series not shown\)/.exec(metrics)?.[1])).toBeGreaterThan(50);
  }, 300_000);

  it('report helpers: metric selection and data plane', () => {
    const text = ['# HELP x', 'mirrorflow_process_cpu_seconds_total 1', 'mirrorflow_nodejs_heap_size_total_bytes 2',
      'mirrorflow_tcp_rtt_seconds_bucket{le="0.1",side="client"} 3', 'mirrorflow_tcp_rtt_seconds_count{side="client"} 3', 'mirrorflow_sessions_active 1'].join('\n');
    expect(agentMetricLines(text)).toEqual({ shown: ['mirrorflow_tcp_rtt_seconds_count{side="client"} 3', 'mirrorflow_sessions_active 1'], hidden: 3 });
    expect(readyDataPlane('{"level":30,"dataPlane":"pcap","msg":"agent ready"}')).toBe('pcap');
    expect(readyDataPlane('not json')).toBe('unknown');
  });
});
