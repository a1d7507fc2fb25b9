// The default agent-wide mirror budget, sized from the host (docs/config.md "Mirror
// budget"): copies may use at most PPS_PER_CPU wire packets per second per CPU and half of
// the fastest physical link, so that mirroring never takes a host's whole CPU or link.
import { readdirSync, readFileSync, existsSync } from 'node:fs';
import os from 'node:os';
import type { BudgetRate } from './types.js';

/** About a third of what one core of the user-space plane sends (~130 k copies/s, docs/benchmarks.md). */
export const PPS_PER_CPU = 50_000;
/** Assumed when no physical interface reports its speed (virtual NICs report -1). */
export const UNKNOWN_LINK_BPS = 10e9;
const SHARE_OF_LINK = 0.5;

/** Mbit/s of the fastest interface backed by a device (not lo, veth, bridges, tunnels), or undefined. */
function fastestLinkMbps(sysfs = '/sys/class/net'): number | undefined {
  let best: number | undefined;
  for (const name of readdirSync(sysfs)) {
    if (!existsSync(`${sysfs}/${name}/device`)) continue;
    let speed = NaN;
    try {
      speed = Number(readFileSync(`${sysfs}/${name}/speed`, 'utf8').trim());
    } catch {
      // a link that is down cannot tell its speed
    }
    if (Number.isInteger(speed) && speed > 0 && (best === undefined || speed > best)) best = speed;
  }
  return best;
}

export function hostMirrorBudget(): BudgetRate {
  const mbps = fastestLinkMbps();
  return {
    pps: PPS_PER_CPU * os.availableParallelism(),
    bps: Math.round((mbps === undefined ? UNKNOWN_LINK_BPS : mbps * 1e6) * SHARE_OF_LINK),
  };
}
