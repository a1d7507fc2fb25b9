// The pcap plane's output for a session with a sensor pool: one VxlanSender per member; each
// copy goes to the healthy member its flow's symmetric hash picks (pool.ts), so both
// directions and every segment of a connection reach the same sensor. With no healthy
// member a copy is dropped, counted.
import type { PacketView } from '../packet/view.js';
import type { Logger } from '../log.js';
import type { HealthCheck } from '../config/types.js';
import type { MirrorOutput, TargetCounters } from './output.js';
import type { SessionBudget } from './budget.js';
import { flowHash } from './flow-hash.js';
import { PoolHealth } from './health.js';
import { pickMember } from './pool.js';
import { VxlanSender } from './sender.js';

export interface SenderPoolOptions {
  session: string;
  members: readonly string[];
  port: number;
  family: 4 | 6;
  pathMtu: number;
  check: HealthCheck;
  logger: Logger;
  /** The session's mirror budget, one for all members (a copy is charged to whichever member sends it). */
  budget?: SessionBudget;
}

export class SenderPool implements MirrorOutput {
  /** Copies that found no healthy member. */
  private noMember = 0;

  private constructor(
    private readonly senders: VxlanSender[],
    private readonly opts: SenderPoolOptions,
    private readonly health: PoolHealth,
  ) {}

  static async open(opts: SenderPoolOptions): Promise<SenderPool> {
    const senders: VxlanSender[] = [];
    try {
      for (const address of opts.members) {
        senders.push(await VxlanSender.open({ address, port: opts.port, family: opts.family, pathMtu: opts.pathMtu, logger: opts.logger, budget: opts.budget }));
      }
    } catch (err) {
      await Promise.all(senders.map((s) => s.close()));
      throw err;
    }
    const health = new PoolHealth({
      session: opts.session, members: opts.members, port: opts.port, family: opts.family, check: opts.check, log: opts.logger,
      // The mask is read per copy: nothing to push.
      onChange: () => undefined,
    });
    health.start();
    return new SenderPool(senders, opts, health);
  }

  send(view: PacketView, vni: number, packetLength: number): boolean {
    const member = pickMember(flowHash(view), this.senders.length, this.health.healthy);
    if (member < 0) {
      this.noMember++;
      return false;
    }
    return this.senders[member]!.send(view, vni, packetLength);
  }

  private sum(read: (s: VxlanSender) => number): number {
    let n = 0;
    for (const s of this.senders) n += read(s);
    return n;
  }

  get packets(): number {
    return this.sum((s) => s.packets);
  }

  get bytes(): number {
    return this.sum((s) => s.bytes);
  }

  get truncated(): number {
    return this.sum((s) => s.truncated);
  }

  get sendErrors(): number {
    return this.sum((s) => s.sendErrors);
  }

  /** The members share one budget: its count, not their sum. */
  get budgetDrops(): number {
    return this.opts.budget?.shed ?? 0;
  }

  /** Back-pressure drops, and copies no healthy member could take. */
  get dropped(): number {
    return this.sum((s) => s.dropped) + this.noMember;
  }

  setPathMtu(mtu: number): void {
    for (const s of this.senders) s.setPathMtu(mtu);
  }

  targets(): TargetCounters[] {
    return this.senders.map((s, i) => ({
      target: `${this.opts.members[i]}:${this.opts.port}`,
      packets: s.packets,
      healthy: this.health.isHealthy(i),
    }));
  }

  async close(): Promise<void> {
    this.health.stop();
    await Promise.all(this.senders.map((s) => s.close()));
  }
}
