// The agent's view of the namespace's interfaces, from the kernel's link notifications
// (link-watcher.ts), not from polling: which interfaces exist now (with their ifindex) for
// resolving sources, and a callback per burst of changes. A burst (50 pods created at once)
// arrives as one call (see QUIET_MS), so the agent rebuilds once, not per interface. It also counts the changes of covered interfaces
// (mirrorflow_interface_changes_total).
import type { Logger } from '../log.js';
import type { Sample } from '../metrics/metrics.js';
import { LinkWatcher, type LinkEvent } from './link-watcher.js';

/**
 * A burst ends when no event came for QUIET_MS, or at the latest BURST_MAX_MS after its
 * first event (`ip -batch` creating 50 veth pairs reports them over ~100 ms, ~2 ms apart):
 * one rebuild for the burst, and a lone interface is covered after QUIET_MS.
 */
const QUIET_MS = 25;
const BURST_MAX_MS = 200;

export class InterfaceWatch {
  /** Source interface changes (appeared, gone, renamed, down, up), by interface name. */
  private readonly changes = new Map<string, number>();
  private watcher: LinkWatcher | undefined;
  private pending: LinkEvent[] = [];
  private timer: NodeJS.Timeout | undefined;
  private burstStart = 0;

  constructor(private readonly log: Logger) {}

  /** Starts following the links of this network namespace; `onChanges` gets each burst once. Throws when netlink cannot be opened. */
  start(onChanges: (events: LinkEvent[]) => void): void {
    this.watcher = LinkWatcher.open({
      onEvents: (events) => {
        if (this.pending.length === 0) this.burstStart = Date.now();
        this.pending.push(...events);
        clearTimeout(this.timer);
        this.timer = setTimeout(() => {
          this.timer = undefined;
          const burst = this.pending;
          this.pending = [];
          onChanges(burst);
        }, Math.max(0, Math.min(QUIET_MS, this.burstStart + BURST_MAX_MS - Date.now())));
      },
      onWarning: (msg) => this.log.warn(msg),
    });
  }

  /** Names of the interfaces present now. */
  present(): string[] {
    return this.watcher?.names() ?? [];
  }

  /** Kernel ifindex of each of `names` that exists now (absent ones are left out). */
  ifindexes(names: readonly string[]): Map<string, number> {
    const byName = new Map([...(this.watcher?.present().values() ?? [])].map((l) => [l.name, l.ifindex]));
    return new Map(names.flatMap((name) => (byName.has(name) ? [[name, byName.get(name)!] as const] : [])));
  }

  /** One change of a covered interface. */
  count(name: string): void {
    this.changes.set(name, (this.changes.get(name) ?? 0) + 1);
  }

  /** mirrorflow_interface_changes_total */
  samples(): Sample[] {
    return [...this.changes].map(([name, n]) => [{ interface: name }, n] as const);
  }

  /** Interfaces no longer covered leave the metric. */
  retain(keep: (name: string) => boolean): void {
    for (const name of this.changes.keys()) if (!keep(name)) this.changes.delete(name);
  }

  close(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    this.watcher?.close();
    this.watcher = undefined;
  }
}
