import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { BUILD_INFO } from '../version.js';
import { SKIP_REASON_CODES, matchReasonName } from '../rules/match.js';

/** One sample: label values in the order of the metric's labelNames, and the value. */
export type Sample = readonly [labels: Record<string, string>, value: number];

/**
 * What the agent reports; every function returns running totals (monotonic across
 * reloads for counters). Read only at scrape time, never on the packet path.
 */
export interface MetricsSource {
  capturePackets(): Iterable<Sample>; // interface, direction
  captureDrops(): Iterable<Sample>; // interface
  malformedPackets(): Iterable<Sample>; // reason
  unsegmentedPackets(): Iterable<Sample>; // interface, direction
  notMirroredPackets(): Iterable<Sample>; // interface, reason
  mirrorPackets(): Iterable<Sample>; // session
  mirrorBytes(): Iterable<Sample>; // session
  mirrorTruncated(): Iterable<Sample>; // session
  mirrorSendErrors(): Iterable<Sample>; // session
  mirrorDropped(): Iterable<Sample>; // session
  sessionsActive(): number;
  tcpRetransmissions(): Iterable<Sample>; // interface
  tcpSynRetransmissions(): Iterable<Sample>; // interface
  tcpZeroWindows(): Iterable<Sample>; // interface
  tcpResets(): Iterable<Sample>; // interface
  tcpOutOfOrder(): Iterable<Sample>; // interface
  flowsActive(): Iterable<Sample>; // flow_log
  flowLogRecords(): Iterable<Sample>; // flow_log, status
  flowTableEvictions(): Iterable<Sample>; // flow_log
  sinkErrors(): Iterable<Sample>; // flow_log
  sinkDropped(): Iterable<Sample>; // flow_log
  vxlanDeviceErrors(): Iterable<Sample>; // device (eBPF plane)
  configReloads(): Iterable<Sample>; // result
  interfaceChanges(): Iterable<Sample>; // interface
  controlErrors(): Iterable<Sample>; // reason
}

/** Handshake RTT from 10 µs (same rack) to 10 s (a struggling path), roughly ×2.5 per step. */
export const RTT_BUCKETS_SECONDS = [
  1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
];

/** Records one handshake RTT; bound per side so the packet path does no label lookups. */
export interface RttRecorder {
  client(seconds: number): void;
  server(seconds: number): void;
}

const PREFIX = 'mirrorflow_';

/**
 * Builds an isolated registry (never prom-client's global one, so tests and reloads stay
 * independent) whose metrics copy the source's totals when scraped.
 */
export function createRegistry(source: MetricsSource): { registry: Registry; rtt: RttRecorder } {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: PREFIX });
  // prom-client names these gauges *_total, which Prometheus reserves for counters
  // (promtool check metrics refuses them); the handle/request counts are not worth that.
  for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) {
    registry.removeSingleMetric(PREFIX + name);
  }

  const counter = (name: string, help: string, labelNames: string[], read: () => Iterable<Sample>): void => {
    new Counter({
      name: PREFIX + name, help, labelNames, registers: [registry],
      collect() {
        this.reset();
        for (const [labels, value] of read()) this.inc(labels, value);
      },
    });
  };

  counter('capture_packets_total', 'Wire packets captured on source interfaces (an offloaded aggregate counts its segments).', ['interface', 'direction'], () => source.capturePackets());
  counter('capture_drops_total', 'Frames the kernel dropped before the agent could read them.', ['interface'], () => source.captureDrops());
  counter('capture_unsegmented_total', 'Offloaded aggregates passed on as one packet (tunnel aggregates are not segmented).', ['interface', 'direction'], () => source.unsegmentedPackets());
  counter('packets_malformed_total', 'Captured frames refused by the decoder or the segmenter, by reason.', ['reason'], () => source.malformedPackets());
  counter('mirror_skipped_packets_total', `Captured wire packets not mirrored, by reason: ${SKIP_REASON_CODES.map(matchReasonName).join(', ')} (no rule matched, a drop rule, frames never mirrored, the agent's own traffic).`, ['interface', 'reason'], () => source.notMirroredPackets());
  counter('mirror_packets_total', 'VXLAN copies handed to the kernel for the target (one per wire segment).', ['session'], () => source.mirrorPackets());
  counter('mirror_bytes_total', 'Bytes of the mirrored inner Ethernet frames sent, after the cut (no VXLAN header).', ['session'], () => source.mirrorBytes());
  counter('mirror_truncated_packets_total', 'Mirrored copies cut to packetLength or the path MTU.', ['session'], () => source.mirrorTruncated());
  counter('mirror_send_errors_total', 'Mirrored packets the kernel refused to send.', ['session'], () => source.mirrorSendErrors());
  counter('mirror_backpressure_drops_total', 'Mirrored packets dropped because the socket send buffer was full.', ['session'], () => source.mirrorDropped());
  counter('vxlan_device_errors_total', 'Copies the eBPF plane\'s VXLAN device could not send (no route to the target, ICMP unreachable): its tx_errors + tx_dropped.', ['device'], () => source.vxlanDeviceErrors());
  counter('config_reloads_total', 'Config reloads (SIGHUP or control socket) by result: ok, refused (invalid config), failed (could not be applied).', ['result'], () => source.configReloads());
  counter('interface_changes_total', 'Source interface changes (down/up, deleted, re-created, appeared) after which capture or the eBPF programs were set up again.', ['interface'], () => source.interfaceChanges());
  counter('control_errors_total', 'Control socket connections that ended badly, by reason: reset, broken_pipe (the client went away early), line_too_long, idle_timeout, too_many_connections, other.', ['reason'], () => source.controlErrors());
  counter('tcp_retransmissions_total', 'TCP segments seen again (retransmissions, as tshark flags them), SYN included.', ['interface'], () => source.tcpRetransmissions());
  counter('tcp_syn_retransmissions_total', 'Retransmitted SYN and SYN-ACK segments.', ['interface'], () => source.tcpSynRetransmissions());
  counter('tcp_zero_window_total', 'TCP segments advertising a zero receive window.', ['interface'], () => source.tcpZeroWindows());
  counter('tcp_resets_total', 'TCP segments with RST set.', ['interface'], () => source.tcpResets());
  counter('tcp_out_of_order_total', 'TCP segments that arrived below the highest sequence seen without being retransmissions.', ['interface'], () => source.tcpOutOfOrder());
  counter('flow_log_records_total', 'Flow log records handed to the sink, by log-status.', ['flow_log', 'status'], () => source.flowLogRecords());
  counter('flow_table_evictions_total', 'Flows written early because the flow table was full.', ['flow_log'], () => source.flowTableEvictions());
  counter('flow_log_sink_errors_total', 'Failed sink writes (each retried).', ['flow_log'], () => source.sinkErrors());
  counter('flow_log_sink_dropped_total', 'Flow log records that did not reach the sink: queue full, still queued when it closed, or refused by the IPFIX collector on every attempt.', ['flow_log'], () => source.sinkDropped());
  new Gauge({
    name: PREFIX + 'flows_active', help: 'Flows in the flow table of each flow log.', labelNames: ['flow_log'], registers: [registry],
    collect() {
      this.reset();
      for (const [labels, value] of source.flowsActive()) this.set(labels, value);
    },
  });
  new Gauge({
    name: PREFIX + 'sessions_active', help: 'Enabled mirror sessions in the running config.', registers: [registry],
    collect() {
      this.set(source.sessionsActive());
    },
  });
  new Gauge({
    name: PREFIX + 'build_info', help: 'Always 1; the labels say which build is running (package version, git commit).',
    labelNames: ['version', 'commit'], registers: [registry],
  }).set({ version: BUILD_INFO.version, commit: BUILD_INFO.commit }, 1);
  const rtt = new Histogram({
    name: PREFIX + 'tcp_rtt_seconds',
    help: 'TCP handshake RTT seen from this host: server side SYN to SYN-ACK, client side SYN-ACK to ACK.',
    labelNames: ['side'],
    buckets: RTT_BUCKETS_SECONDS,
    registers: [registry],
  });
  const client = rtt.labels('client');
  const server = rtt.labels('server');
  return { registry, rtt: { client: (s) => client.observe(s), server: (s) => server.observe(s) } };
}
