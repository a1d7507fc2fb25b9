// The control socket's `status` answer: the running config's interfaces and sessions with
// their counters, as `mirrorflow status` prints them.
import { sessionTargets, type Config } from '../config/types.js';
import type { RuleSet } from '../rules/compile.js';
import type { PlaneCounterName } from './counters.js';
import type { Sample } from './metrics.js';

export interface StatusInput {
  dataPlane: string;
  configPath: string;
  uptimeSeconds: number;
  config: Config;
  rules: RuleSet;
  /** Every sample of a counter (retired generations and live ones), read once per status. */
  samples: (name: PlaneCounterName) => Sample[];
}

export function agentStatus({ dataPlane, configPath, uptimeSeconds, config, rules, samples }: StatusInput) {
  const read = new Map<PlaneCounterName, Sample[]>();
  const total = (name: PlaneCounterName, labels: Record<string, string>): number => {
    let all = read.get(name);
    if (!all) read.set(name, (all = samples(name)));
    const match = (s: Sample) => Object.entries(labels).every(([k, v]) => s[0][k] === v);
    return all.filter(match).reduce((sum, s) => sum + s[1], 0);
  };
  return {
    dataPlane,
    configPath,
    uptimeSeconds,
    interfaces: rules.interfaces.map((name) => ({
      name,
      capturedIn: total('capturePackets', { interface: name, direction: 'in' }),
      capturedOut: total('capturePackets', { interface: name, direction: 'out' }),
      captureDrops: total('captureDrops', { interface: name }),
    })),
    sessions: config.sessions.map((s) => ({
      id: s.id,
      enabled: s.enabled,
      vni: s.vni,
      target: sessionTargets(s).map((t) => `${t.address}:${t.port}`).join(','),
      sources: s.sources,
      packets: total('mirrorPackets', { session: s.id }),
      bytes: total('mirrorBytes', { session: s.id }),
      truncated: total('mirrorTruncated', { session: s.id }),
      sendErrors: total('mirrorSendErrors', { session: s.id }),
      dropped: total('mirrorDropped', { session: s.id }),
      budgetDrops: total('mirrorBudgetDrops', { session: s.id }),
    })),
  };
}
