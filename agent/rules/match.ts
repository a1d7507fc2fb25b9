// The user-space mirror decision (SPEC §2) for one decoded packet. Hot path: walks the
// compiled chains, no allocation. The eBPF data plane implements the same semantics and
// both run test/vectors/rules.json.

import type { PacketView } from '../packet/view.js';
import {
  ETHERTYPE_ARP,
  IPPROTO_UDP,
  PORT_DHCPV6_CLIENT,
  PORT_DHCPV6_SERVER,
  PORT_DHCP_CLIENT,
  PORT_DHCP_SERVER,
} from '../packet/offsets.js';
import { FRAG_MISS, type FragmentTable } from './fragments.js';
import { PORT_ANY, PROTO_ANY, type CompiledRule, type RuleSet } from './compile.js';

/** No session's rules matched (or the interface has no sessions). */
export const NO_MATCH = -1;
export const EXCLUDED_ARP = -2;
export const EXCLUDED_NON_IP = -3;
export const EXCLUDED_DHCP = -4;
/** UDP to one of the agent's own outputs (VXLAN target, IPFIX collector). */
export const EXCLUDED_OWN = -5;
/** A drop rule decided. */
export const DROPPED_BY_RULE = -6;
/** decode() reported the frame malformed. */
export const EXCLUDED_MALFORMED = -7;

/** The `reason` values of mirror_skipped_packets_total: every outcome that does not mirror (malformed frames are counted apart). */
export const SKIP_REASON_CODES = [NO_MATCH, DROPPED_BY_RULE, EXCLUDED_ARP, EXCLUDED_NON_IP, EXCLUDED_DHCP, EXCLUDED_OWN] as const;

/** Label for a matchPacket() result, for metrics (`reason`) and test vectors. */
export function matchReasonName(code: number): string {
  if (code >= 0) return 'accept';
  switch (code) {
    case NO_MATCH:
      return 'no-match';
    case EXCLUDED_ARP:
      return 'arp';
    case EXCLUDED_NON_IP:
      return 'non-ip';
    case EXCLUDED_DHCP:
      return 'dhcp';
    case EXCLUDED_OWN:
      return 'own';
    case DROPPED_BY_RULE:
      return 'drop';
    case EXCLUDED_MALFORMED:
      return 'malformed';
    default:
      return 'unknown';
  }
}

/**
 * Index into rules.sessions of the session that mirrors the packet seen on interface
 * `ifIndex` in view.direction, or a negative code (NO_MATCH, EXCLUDED_*, DROPPED_BY_RULE).
 * Later fragments follow the decision `fragments` stored for their first fragment (state
 * of the caller's packet stream; the compiled rules stay immutable).
 */
export function matchPacket(rules: RuleSet, fragments: FragmentTable, ifIndex: number, view: PacketView): number {
  if (view.malformedReason.length !== 0) return EXCLUDED_MALFORMED;
  if (view.ipVersion === 0) return view.etherType === ETHERTYPE_ARP ? EXCLUDED_ARP : EXCLUDED_NON_IP;
  if (!view.isFragment) return decide(rules, ifIndex, view);
  if (view.fragOffset !== 0) {
    const stored = fragments.lookup(view, ifIndex);
    if (stored !== FRAG_MISS) return stored;
    return decide(rules, ifIndex, view);
  }
  const result = decide(rules, ifIndex, view);
  fragments.store(view, ifIndex, result);
  return result;
}

function decide(rules: RuleSet, ifIndex: number, view: PacketView): number {
  if (view.protocol === IPPROTO_UDP && view.hasPorts) {
    if (isDhcp(view)) return EXCLUDED_DHCP;
    if (isOwnOutput(rules, view)) return EXCLUDED_OWN;
  }
  if (ifIndex < 0) return NO_MATCH;
  const chain = rules.chains[ifIndex * 2 + view.direction];
  if (chain === undefined) return NO_MATCH;
  for (let s = 0; s < chain.length; s++) {
    const entry = chain[s]!;
    const list = entry.rules;
    for (let r = 0; r < list.length; r++) {
      const rule = list[r]!;
      if (ruleMatches(rule, view)) return rule.accept ? entry.session : DROPPED_BY_RULE;
    }
  }
  return NO_MATCH;
}

function isDhcp(view: PacketView): boolean {
  const sp = view.srcPort;
  const dp = view.dstPort;
  if (view.ipVersion === 4) {
    return sp === PORT_DHCP_SERVER || sp === PORT_DHCP_CLIENT || dp === PORT_DHCP_SERVER || dp === PORT_DHCP_CLIENT;
  }
  return sp === PORT_DHCPV6_CLIENT || sp === PORT_DHCPV6_SERVER || dp === PORT_DHCPV6_CLIENT || dp === PORT_DHCPV6_SERVER;
}

function isOwnOutput(rules: RuleSet, view: PacketView): boolean {
  const outs = rules.ownOutputs;
  const dst = view.dst;
  for (let i = 0; i < outs.length; i++) {
    const out = outs[i]!;
    const w = out.words;
    if (out.port === view.dstPort && out.family === view.ipVersion &&
        w[0] === (dst[0]! | 0) && w[1] === (dst[1]! | 0) && w[2] === (dst[2]! | 0) && w[3] === (dst[3]! | 0)) {
      return true;
    }
  }
  return false;
}

function ruleMatches(rule: CompiledRule, view: PacketView): boolean {
  if (rule.family !== view.ipVersion) return false;
  if (rule.protocol !== PROTO_ANY && rule.protocol !== view.protocol) return false;
  const src = view.src;
  const dst = view.dst;
  const sn = rule.srcNet;
  const sm = rule.srcMask;
  const dn = rule.dstNet;
  const dm = rule.dstMask;
  if ((src[0]! & sm[0]!) !== sn[0] || (dst[0]! & dm[0]!) !== dn[0]) return false;
  if (rule.family === 6) {
    if ((src[1]! & sm[1]!) !== sn[1] || (src[2]! & sm[2]!) !== sn[2] || (src[3]! & sm[3]!) !== sn[3]) return false;
    if ((dst[1]! & dm[1]!) !== dn[1] || (dst[2]! & dm[2]!) !== dn[2] || (dst[3]! & dm[3]!) !== dn[3]) return false;
  }
  // A packet without ports (later fragment) only matches rules that do not constrain them.
  if (rule.srcPortStart !== PORT_ANY &&
      (!view.hasPorts || view.srcPort < rule.srcPortStart || view.srcPort > rule.srcPortEnd)) return false;
  if (rule.dstPortStart !== PORT_ANY &&
      (!view.hasPorts || view.dstPort < rule.dstPortStart || view.dstPort > rule.dstPortEnd)) return false;
  return true;
}
