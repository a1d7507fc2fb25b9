import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';

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
  notMirroredPackets(): Iterable<Sample>; // interface, reason
  mirrorPackets(): Iterable<Sample>; // session
  mirrorBytes(): Iterable<Sample>; // session
  mirrorTruncated(): Iterable<Sample>; // session
  mirrorSendErrors(): Iterable<Sample>; // session
  mirrorDropped(): Iterable<Sample>; // session
  sessionsActive(): number;
}

const PREFIX = 'mirrorflow_';

/**
 * Builds an isolated registry (never prom-client's global one, so tests and reloads stay
 * independent) whose metrics copy the source's totals when scraped.
 */
export function createRegistry(source: MetricsSource): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: PREFIX });

  const counter = (name: string, help: string, labelNames: string[], read: () => Iterable<Sample>): void => {
    new Counter({
      name: PREFIX + name, help, labelNames, registers: [registry],
      collect() {
        this.reset();
        for (const [labels, value] of read()) this.inc(labels, value);
      },
    });
  };

  counter('capture_packets_total', 'Frames captured on source interfaces.', ['interface', 'direction'], () => source.capturePackets());
  counter('capture_drops_total', 'Frames the kernel dropped before the agent could read them.', ['interface'], () => source.captureDrops());
  counter('packets_malformed_total', 'Captured frames refused by the decoder, by reason.', ['reason'], () => source.malformedPackets());
  counter('mirror_skipped_packets_total', 'Captured frames not mirrored, by reason (no-match, drop rule, excluded).', ['interface', 'reason'], () => source.notMirroredPackets());
  counter('mirror_packets_total', 'VXLAN packets handed to the kernel for the target.', ['session'], () => source.mirrorPackets());
  counter('mirror_bytes_total', 'Bytes of VXLAN payload (header and mirrored frame) sent.', ['session'], () => source.mirrorBytes());
  counter('mirror_truncated_packets_total', 'Mirrored frames cut to packetLength or the path MTU.', ['session'], () => source.mirrorTruncated());
  counter('mirror_send_errors_total', 'Mirrored packets the kernel refused to send.', ['session'], () => source.mirrorSendErrors());
  counter('mirror_backpressure_drops_total', 'Mirrored packets dropped because the send queue was full.', ['session'], () => source.mirrorDropped());
  new Gauge({
    name: PREFIX + 'sessions_active', help: 'Enabled mirror sessions in the running config.', registers: [registry],
    collect() {
      this.set(source.sessionsActive());
    },
  });
  return registry;
}
