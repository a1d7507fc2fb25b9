import type { Sample } from './metrics.js';

/**
 * Keeps counters monotonic across reloads: when a running generation of the pipeline is
 * retired its totals are folded in here, and scrapes add the live generation on top.
 */
export class Totals {
  private readonly retired = new Map<string, { labels: Record<string, string>; value: number }>();

  fold(samples: Iterable<Sample>): void {
    for (const [labels, value] of samples) {
      const key = labelKey(labels);
      const entry = this.retired.get(key);
      if (entry) entry.value += value;
      else this.retired.set(key, { labels, value });
    }
  }

  /** Forgets the series `keep` refuses (an interface or session no longer configured), so they leave /metrics. */
  retain(keep: (labels: Record<string, string>) => boolean): void {
    for (const [key, e] of this.retired) if (!keep(e.labels)) this.retired.delete(key);
  }

  with(live: Iterable<Sample>): Sample[] {
    const out = new Map<string, { labels: Record<string, string>; value: number }>();
    for (const [key, e] of this.retired) out.set(key, { labels: e.labels, value: e.value });
    for (const [labels, value] of live) {
      const key = labelKey(labels);
      const entry = out.get(key);
      if (entry) entry.value += value;
      else out.set(key, { labels, value });
    }
    return [...out.values()].map((e) => [e.labels, e.value] as const);
  }
}

function labelKey(labels: Record<string, string>): string {
  return Object.keys(labels).sort().map((k) => `${k}=${labels[k]}`).join(',');
}
