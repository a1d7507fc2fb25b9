// The agent's once-a-second look at its source interfaces: a down/up is logged and counted
// (capture sockets and TC filters survive it); a deletion, re-creation or late appearance is
// reported so the agent rebuilds the generation with the running config.
import type { Logger } from '../log.js';
import type { Sample } from '../metrics/metrics.js';
import { interfaceState, sameLife } from './interface-state.js';

export class InterfaceWatch {
  /** Source interface changes (down/up, deleted, re-created, appeared) that rebuilt capture or attachment. */
  private readonly changes = new Map<string, number>();
  /** The error code of the last failed check (logged once per code). */
  private lastError: string | undefined;

  constructor(private readonly log: Logger) {}

  /** interfaceState() of each interface, as a generation records it when it is built. */
  static async states(names: readonly string[]): Promise<Map<string, string>> {
    const states = new Map<string, string>();
    for (const name of names) states.set(name, await interfaceState(name));
    return states;
  }

  /**
   * Compares `known` (updated in place for a down/up) with the interfaces now. Returns the
   * first interface that started a new life (deleted, re-created, appeared), counted and
   * logged, or undefined when capture can stay as it is.
   */
  async check(known: Map<string, string>): Promise<string | undefined> {
    for (const [name, before] of known) {
      let now: string;
      try {
        now = await interfaceState(name);
      } catch (err) {
        this.noteError(err);
        return undefined;
      }
      if (now === before) continue;
      if (sameLife(before, now)) {
        // Down and up on the same interface: the capture ring's socket and the TC programs
        // stay bound to it and go on at link up; rebuilding would only lose frames in the
        // handover.
        known.set(name, now);
        this.log.warn({ interface: name }, 'source interface changed (down/up); capture and mirroring carry on');
        this.count(name);
        continue;
      }
      return name;
    }
    return undefined;
  }

  /** A new life of `name` is being taken up (the caller rebuilds the generation). */
  rebuilding(name: string): void {
    this.log.warn({ interface: name }, 'source interface changed (deleted, re-created, down/up or appeared); reopening capture');
    this.count(name);
  }

  /** mirrorflow_interface_changes_total */
  samples(): Sample[] {
    return [...this.changes].map(([name, n]) => [{ interface: name }, n] as const);
  }

  /** Interfaces the config no longer has leave the metric. */
  retain(keep: (name: string) => boolean): void {
    for (const name of this.changes.keys()) if (!keep(name)) this.changes.delete(name);
  }

  private count(name: string): void {
    this.changes.set(name, (this.changes.get(name) ?? 0) + 1);
  }

  /** Logs a failing check once per kind of failure, not every second. */
  private noteError(err: unknown): void {
    const code = (err as NodeJS.ErrnoException).code ?? String(err);
    if (code === this.lastError) return;
    this.lastError = code;
    this.log.warn({ err }, 'cannot check source interfaces; keeping capture as it is');
  }
}
