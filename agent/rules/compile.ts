// Compiles the validated config into a flat RuleSet the per-packet matcher walks without
// allocating: per (interface, direction) the enabled sessions in priority order, each with
// that direction's rules in priority order, addresses as masked 32-bit words.

import { isIP } from 'node:net';
import { parseCidr as parseCidrText, parseHostPort } from '../config/schema.js';
import { formatAddress, formatIp, wireAddress, wordsOf } from '../packet/address.js';
import { sessionTargets, type BudgetRate, type Config, type HealthCheck, type Rule } from '../config/types.js';
import { DIR_IN, DIR_OUT, type Direction } from '../packet/view.js';
import { IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP } from '../packet/offsets.js';

export interface CompiledSession {
  /** Position in RuleSet.sessions. */
  index: number;
  id: string;
  vni: number;
  packetLength: number;
  /** The first (for `target:` the only) sensor; the pool's members share its port and family. */
  targetAddress: string;
  targetPort: number;
  targetFamily: 4 | 6;
  /** Every sensor's address in pool order (one for `target:`); a flow picks one (mirror/pool.ts). */
  members: string[];
  /** How members are judged; type none (always healthy) for a single target. */
  healthCheck: HealthCheck;
  /** The session's own mirror budget (0: no limit in that dimension). */
  budget: BudgetRate;
}

const NO_CHECK: HealthCheck = { type: 'none', interval: 1, unhealthyAfter: 1, healthyAfter: 1 };

/** Any protocol (rule protocol ALL). */
export const PROTO_ANY = -1;
/** Port range start/end meaning "any port". */
export const PORT_ANY = -1;

export interface CompiledRule {
  priority: number;
  accept: boolean;
  /** IANA protocol number or PROTO_ANY. */
  protocol: number;
  family: 4 | 6;
  /** Network words (already masked) and mask words, network order, int32 so `&` compares directly. */
  srcNet: Int32Array;
  srcMask: Int32Array;
  srcPrefix: number;
  dstNet: Int32Array;
  dstMask: Int32Array;
  dstPrefix: number;
  srcPortStart: number;
  srcPortEnd: number;
  dstPortStart: number;
  dstPortEnd: number;
}

export interface SessionChain {
  /** Index into RuleSet.sessions. */
  session: number;
  /** The session's filter rules for this direction, priority ascending. */
  rules: readonly CompiledRule[];
}

/** A UDP destination the agent itself sends to (VXLAN target, IPFIX collector). */
export interface OwnOutput {
  family: 4 | 6;
  address: string;
  /** Address words in network order, int32 like CompiledRule nets. */
  words: Int32Array;
  port: number;
}

export interface RuleSet {
  /** Every source interface of any session (enabled or not) and of any enabled flow log. */
  readonly interfaces: readonly string[];
  /** Position of `name` in `interfaces`, -1 when unknown. */
  interfaceIndex(name: string): number;
  /** Enabled sessions only. */
  readonly sessions: readonly CompiledSession[];
  /** Indexed by ifIndex * 2 + direction: enabled sessions of that interface, priority ascending. */
  readonly chains: readonly (readonly SessionChain[])[];
  /** Outputs of this agent, never mirrored. */
  readonly ownOutputs: readonly OwnOutput[];
  /** agent.mirrorBudget: what all sessions together may send. */
  readonly agentBudget: BudgetRate;
}

interface ParsedCidr {
  family: 4 | 6;
  net: Int32Array;
  mask: Int32Array;
  prefix: number;
}

/** A validated "a.b.c.d/n" or "x::/n" → network and mask words (int32, for `&` compares). */
export function parseCidr(text: string): ParsedCidr {
  const cidr = parseCidrText(text);
  if (typeof cidr === 'string') throw new Error(cidr);
  const { family, prefix } = cidr;
  const net = new Int32Array(wordsOf(cidr.network.bytes));
  const mask = new Int32Array(4);
  for (let i = 0; i < 4; i++) {
    const wordBits = Math.max(0, Math.min(32, prefix - 32 * i));
    mask[i] = wordBits === 0 ? 0 : (0xffffffff << (32 - wordBits)) | 0;
  }
  return { family, net, mask, prefix };
}

function protocolNumber(protocol: Rule['protocol'], family: 4 | 6): number {
  switch (protocol) {
    case 'ALL':
      return PROTO_ANY;
    case 'ICMP':
      return family === 4 ? IPPROTO_ICMP : IPPROTO_ICMPV6;
    case 'TCP':
      return IPPROTO_TCP;
    case 'UDP':
      return IPPROTO_UDP;
  }
}

function compileRule(rule: Rule): CompiledRule {
  const src = parseCidr(rule.sourceCidrBlock);
  const dst = parseCidr(rule.destinationCidrBlock);
  if (src.family !== dst.family) {
    throw new Error(`rule ${rule.priority}: source and destination CIDR families differ`);
  }
  return {
    priority: rule.priority,
    accept: rule.action === 'accept',
    protocol: protocolNumber(rule.protocol, src.family),
    family: src.family,
    srcNet: src.net,
    srcMask: src.mask,
    srcPrefix: src.prefix,
    dstNet: dst.net,
    dstMask: dst.mask,
    dstPrefix: dst.prefix,
    srcPortStart: rule.sourcePortRange.start,
    srcPortEnd: rule.sourcePortRange.end,
    dstPortStart: rule.destinationPortRange.start,
    dstPortEnd: rule.destinationPortRange.end,
  };
}

/** An output's address as its packets carry it (IPv4-mapped literals leave over IPv4). */
function ownOutput(address: string, port: number): OwnOutput {
  const { family, bytes } = wireAddress(address);
  return { family, address, words: new Int32Array(wordsOf(bytes)), port };
}

/** Builds the RuleSet from a validated config. Throws on references validation should have caught. */
export function compileRules(config: Config): RuleSet {
  const interfaces: string[] = [];
  const ifIndexByName = new Map<string, number>();
  // Flow logs capture too: their named sources join the list ("*" means these same ones).
  const named = [
    ...config.sessions.flatMap((s) => s.sources),
    ...config.flowLogs.filter((f) => f.enabled).flatMap((f) => f.sources.filter((n) => n !== '*')),
  ];
  for (const name of named) {
    if (!ifIndexByName.has(name)) {
      ifIndexByName.set(name, interfaces.length);
      interfaces.push(name);
    }
  }

  const enabled = config.sessions.filter((s) => s.enabled).sort((a, b) => a.priority - b.priority);
  const sessions: CompiledSession[] = enabled.map((s, index) => {
    // Both planes send to the wire form: a V6ONLY socket or an IPv6 tunnel key cannot reach ::ffff:a.b.c.d.
    const targets = sessionTargets(s).map((t) => ({ address: wireAddress(t.address), port: t.port }));
    return {
      index,
      id: s.id,
      vni: s.vni,
      packetLength: s.packetLength,
      targetAddress: formatIp(targets[0]!.address),
      targetPort: targets[0]!.port,
      targetFamily: targets[0]!.address.family,
      members: targets.map((t) => formatIp(t.address)),
      healthCheck: s.targets?.healthCheck ?? NO_CHECK,
      budget: s.budget,
    };
  });

  const byPriority = (a: CompiledRule, b: CompiledRule): number => a.priority - b.priority;
  const filterRules = new Map<string, [CompiledRule[], CompiledRule[]]>();
  for (const filter of config.filters) {
    const rules: [CompiledRule[], CompiledRule[]] = [[], []];
    rules[DIR_IN] = filter.ingressRules.map(compileRule).sort(byPriority);
    rules[DIR_OUT] = filter.egressRules.map(compileRule).sort(byPriority);
    filterRules.set(filter.id, rules);
  }

  const chains: SessionChain[][] = interfaces.flatMap(() => [[], []]);
  enabled.forEach((session, index) => {
    const rules = filterRules.get(session.filterId);
    if (!rules) throw new Error(`session ${session.id}: unknown filter ${session.filterId}`);
    for (const name of new Set(session.sources)) {
      const ifIndex = ifIndexByName.get(name)!;
      for (const dir of [DIR_IN, DIR_OUT] as Direction[]) {
        chains[ifIndex * 2 + dir]!.push({ session: index, rules: rules[dir] });
      }
    }
  });

  const ownOutputs: OwnOutput[] = [];
  const seen = new Set<string>();
  const addOwn = (address: string, port: number): void => {
    const out = ownOutput(address, port);
    const key = `${formatAddress(out.family, out.words)}|${port}`;
    if (!seen.has(key)) {
      seen.add(key);
      ownOutputs.push(out);
    }
  };
  for (const s of config.sessions) for (const t of sessionTargets(s)) addOwn(t.address, t.port);
  for (const fl of config.flowLogs) {
    if (fl.sink.type === 'ipfix') {
      const collector = parseHostPort(fl.sink.collector);
      if (typeof collector === 'string') throw new Error(`flow log ${fl.id}: ${collector}`);
      // A collector given by host name is excluded once the exporter resolves it, not here.
      if (isIP(collector.host) !== 0) addOwn(collector.host, collector.port);
    }
  }

  return {
    interfaces,
    interfaceIndex: (name: string) => ifIndexByName.get(name) ?? -1,
    sessions,
    chains,
    ownOutputs,
    agentBudget: config.agent.mirrorBudget,
  };
}
