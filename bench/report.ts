// The benchmark's tables (markdown, also printed) and issue 6's targets checked against
// the measured numbers.
import { DEFAULT_MAX_FLOWS } from '../agent/flow/stage.js';
import { FLOW_RATE, type RssResult, type ThroughputResult } from './host-cost.js';

/** One step: `achievedPps` is what trafgen really sent (count over its run time, start-up included). */
export interface StepResult { rate: number; offered: number; achievedPps: number; delivered: number; cpuSeconds: number }
export interface PlaneResult {
  plane: string; size: number; zeroLossPps: number; cpuSecondsPerMpkt: number | null; steps: StepResult[];
  /** Set when the agent could not run this plane here ("unavailable: <its first error>"). */
  unavailable?: string;
}

export const ANCHOR_MIRROR = 'minimal eBPF mirror';
export const ANCHOR_EMPTY = 'capture ring empty callback';
export const ANCHOR_TCPDUMP = 'tcpdump -w /dev/null';
export const ANCHOR_NONE = 'no mirror (baseline)';
export const planeName = (plane: string, flowLogs: boolean) => `mirrorflow ${plane} (${flowLogs ? '+flow logs' : 'mirror only'})`;
export const TPUT_NONE = 'no agent';
export const TPUT_ANCHOR = 'minimal eBPF mirror (anchor)';
export const tputName = (plane: string) => `mirrorflow ${plane} (+flow logs), all TCP mirrored`;
/** The agent copying exactly what the anchor copies: src's egress, no flow logs. */
export const tputSameCopies = (plane: string) => `mirrorflow ${plane}, src egress mirrored (the anchor's copies)`;

const pct = (a: number, b: number) => (b > 0 ? `${Math.round((a / b) * 100)}%` : '-');
const n = (x: number) => x.toLocaleString('en');

/**
 * The rate really carried without loss: the highest lossless step, or what trafgen reached
 * in it when that was less (on veth the sender is slowed by everything in its path,
 * TC programs and clones included, instead of losing frames).
 */
export const zeroLossRate = (r: PlaneResult) => Math.min(r.zeroLossPps, r.steps.find((st) => st.rate === r.zeroLossPps)?.achievedPps ?? 0);

export function formatRates(results: PlaneResult[], topRate: number): string {
  const anchor = (size: number, plane: string) => {
    const a = results.find((r) => r.size === size && r.plane === plane);
    return a === undefined ? 0 : zeroLossRate(a);
  };
  const rows = results.map((r) => {
    if (r.unavailable !== undefined) return `| ${r.plane} | ${r.size} | ${r.unavailable} | | | | | | |`;
    const ratio = (plane: string) => pct(zeroLossRate(r), anchor(r.size, plane));
    const step = `${r.zeroLossPps === topRate ? '≥ ' : ''}${n(r.zeroLossPps)}`;
    const cpu = r.cpuSecondsPerMpkt === null ? '-' : r.cpuSecondsPerMpkt.toFixed(2);
    return `| ${r.plane} | ${r.size} | ${n(zeroLossRate(r))} | ${step} | ${ratio(ANCHOR_MIRROR)} | ${ratio(ANCHOR_EMPTY)} | ${ratio(ANCHOR_TCPDUMP)} | ${ratio(ANCHOR_NONE)} | ${cpu} |`;
  });
  return [
    `Zero-loss rate: "step" = the highest offered rate without a single loss (steps up to ${n(topRate)} pps; "≥" = the top step passed); "zero-loss pps" = the rate trafgen really sent in that step (start-up included) when lower — the sender slows down instead of losing when the copying runs in its path. Ratios use zero-loss pps.`,
    '',
    '| plane | frame bytes | zero-loss pps | step | vs minimal eBPF mirror | vs capture ring empty | vs tcpdump | vs no mirror | CPU s per M packets |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- |',
    ...rows,
    '',
  ].join('\n');
}

export function formatThroughput(rows: ThroughputResult[]): string {
  const none = rows.find((r) => r.setup === TPUT_NONE)?.gbps ?? 0;
  const anchor = rows.find((r) => r.setup === TPUT_ANCHOR)?.gbps ?? 0;
  return [
    `Sender TCP throughput (iperf3, 5 s, src → dst, median of the runs, setups interleaved; the anchor copies src's egress; "all TCP mirrored" copies every TCP segment both ways and runs a flow log; copies counted at the destination's vxlan device, last run):`,
    '',
    '| setup | Gbit/s | runs | vs no agent | vs minimal eBPF mirror | copies delivered |',
    '| --- | --- | --- | --- | --- | --- |',
    ...rows.map((r) => (r.gbps === null
      ? `| ${r.setup} | ${r.unavailable ?? '-'} | | | | |`
      : `| ${r.setup} | ${r.gbps.toFixed(2)} | ${r.runs.map((g) => g.toFixed(2)).join(', ')} | ${pct(r.gbps, none)} | ${pct(r.gbps, anchor)} | ${r.toCopy > 0 ? `${n(r.copies)} of ${n(r.toCopy)} (${pct(r.copies, r.toCopy)})` : '-'} |`)),
    '',
  ].join('\n');
}

export function formatMemory(rows: RssResult[]): string {
  return [
    `Agent memory with active flows (flow log window 60 s so none closes, flow table limit ${n(DEFAULT_MAX_FLOWS)}; one 5-tuple per 64-byte UDP frame at ${n(FLOW_RATE)} pps):`,
    '',
    '| plane | load | 5-tuples offered | flows active | evictions | RSS MiB |',
    '| --- | --- | --- | --- | --- | --- |',
    ...rows.map((r) => `| ${r.plane} | ${r.load} | ${n(r.offeredTuples)} | ${n(r.flowsActive)} | ${n(r.evictions)} | ${r.rssMiB.toFixed(0)} |`),
    '',
  ].join('\n');
}

export interface RuleEval { ruleEvaluationNs: number }

/** Issue 6's targets, each with the numbers that decide it. */
export function formatTargets(results: PlaneResult[], tput: ThroughputResult[], memory: RssResult[], rules: RuleEval | null): string {
  const rate = (plane: string, size: number) => results.find((r) => r.plane === plane && r.size === size);
  const lines: string[] = [];
  const say = (met: boolean | null, what: string, numbers: string) => lines.push(`| ${what} | ${met === null ? 'not measured' : met ? 'met' : 'missed'} | ${numbers} |`);

  const sizes = [...new Set(results.map((r) => r.size))];
  const ebpfSizes = sizes.flatMap((size) => [true, false].map((fl) => ({ size, r: rate(planeName('ebpf', fl), size), base: rate(ANCHOR_NONE, size) })));
  const ebpfRan = ebpfSizes.filter((e) => e.r !== undefined && e.r.unavailable === undefined && e.base !== undefined);
  say(ebpfRan.length === 0 ? null : ebpfRan.every((e) => e.r!.zeroLossPps >= e.base!.zeroLossPps),
    'eBPF plane: zero loss at the highest rate the lab offers (no loss at the no-mirror baseline\'s top step; the sender\'s real rate with the plane vs without)',
    ebpfRan.map((e) => `${e.r!.plane} ${e.size} B: step ${n(e.r!.zeroLossPps)}, sent ${n(zeroLossRate(e.r!))} vs ${n(zeroLossRate(e.base!))} pps without mirroring`).join('; ') || 'unavailable');
  const anchor = tput.find((r) => r.setup === TPUT_ANCHOR)?.gbps ?? null;
  // The cost of rules and accounting over a bare clone: the same copies as the anchor.
  const ebpfTput = tput.find((r) => r.setup === tputSameCopies('ebpf'))?.gbps ?? null;
  say(anchor === null || ebpfTput === null ? null : ebpfTput >= 0.9 * anchor,
    'eBPF plane: sender throughput ≥ 90% of the minimal mirror anchor (same copies: src egress)',
    anchor === null || ebpfTput === null ? '-' : `${ebpfTput.toFixed(2)} vs ${anchor.toFixed(2)} Gbit/s (${pct(ebpfTput, anchor)})`);
  say(rules === null ? null : rules.ruleEvaluationNs <= 100, 'eBPF rule evaluation ≤ 100 ns (BPF_PROG_TEST_RUN, 10 rules × 3 sessions)',
    rules === null ? 'bench/results/ebpf-rules.json missing' : `${rules.ruleEvaluationNs} ns`);

  const pcap = rate(planeName('pcap', true), 64);
  const emptyResult = rate(ANCHOR_EMPTY, 64);
  const empty = emptyResult === undefined ? 0 : zeroLossRate(emptyResult);
  const pcapRate = pcap === undefined ? 0 : zeroLossRate(pcap);
  say(pcap === undefined ? null : pcapRate >= 0.5 * empty, 'pcap plane, 64 B, flow logs on: ≥ 50% of capture ring empty callback',
    pcap === undefined ? '-' : `${n(pcapRate)} vs ${n(empty)} pps (${pct(pcapRate, empty)})`);
  say(pcap === undefined ? null : pcapRate >= 250_000, 'pcap plane, 64 B, flow logs on: ≥ 250k pps', pcap === undefined ? '-' : `${n(pcapRate)} pps`);

  const full = memory.filter((m) => m.load === 'distinct' && m.offeredTuples === DEFAULT_MAX_FLOWS);
  say(full.length === 0 ? null : full.every((m) => m.rssMiB <= 200 && m.flowsActive >= DEFAULT_MAX_FLOWS), 'RSS ≤ 200 MiB with 100k active flows',
    full.map((m) => `${m.plane}: ${m.rssMiB.toFixed(0)} MiB at ${n(m.flowsActive)} flows`).join('; '));
  const flood = memory.filter((m) => m.load === 'random flood');
  say(flood.length === 0 ? null : flood.every((m) => m.flowsActive <= DEFAULT_MAX_FLOWS && m.evictions > 0),
    'flow table limit holds under a flood of random 5-tuples, evictions counted',
    flood.map((m) => `${m.plane}: ${n(m.flowsActive)} active, ${n(m.evictions)} evicted of ${n(m.offeredTuples)} offered, RSS ${m.rssMiB.toFixed(0)} MiB`).join('; '));
  return ['Issue 6 targets:', '', '| target | result | numbers |', '| --- | --- | --- |', ...lines, ''].join('\n');
}
