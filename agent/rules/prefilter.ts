// Builds the libpcap filter expression installed in the kernel for one interface and
// direction. It must let through a SUPERSET of what matchPacket() can accept there (the
// exact decision stays in JavaScript); its job is to keep uninteresting traffic out of
// user space. Tests check the superset property with tcpdump on the shared vectors.

import type { Direction } from '../packet/view.js';
import {
  IPPROTO_AH,
  IPPROTO_DSTOPTS,
  IPPROTO_FRAGMENT,
  IPPROTO_HOPOPTS,
  IPPROTO_ICMP,
  IPPROTO_ICMPV6,
  IPPROTO_ROUTING,
  IPPROTO_TCP,
  IPPROTO_UDP,
} from '../packet/offsets.js';
import { formatAddress } from '../packet/address.js';
import { PORT_ANY, PROTO_ANY, type CompiledRule, type RuleSet } from './compile.js';

/** Matches (almost) nothing: frames of at most 1 byte. */
export const PREFILTER_NOTHING = 'less 1';

const PROTO_KEYWORD: Record<number, string> = {
  [IPPROTO_TCP]: 'tcp',
  [IPPROTO_UDP]: 'udp',
  [IPPROTO_ICMP]: 'icmp',
  [IPPROTO_ICMPV6]: 'icmp6',
};

/**
 * libpcap's `ip6 proto`/`tcp`/`port` look only at the fixed header's next-header field, so
 * an IPv6 packet whose first next header is an extension header (including a fragment
 * header) is let through whenever the rule's addresses match.
 */
const IPV6_HAS_EXT = `(${[IPPROTO_HOPOPTS, IPPROTO_ROUTING, IPPROTO_FRAGMENT, IPPROTO_DSTOPTS, IPPROTO_AH]
  .map((n) => `ip6[6] == ${n}`).join(' or ')})`;
/** IPv4 fragment after the first: libpcap port tests never match it. */
const IPV4_LATER_FRAGMENT = '(ip[6:2] & 0x1fff != 0)';

function net(dir: 'src' | 'dst', family: 4 | 6, words: Int32Array, prefix: number): string | undefined {
  if (prefix === 0) return undefined;
  return `${dir} net ${formatAddress(family, words)}/${prefix}`;
}

function ports(dir: 'src' | 'dst', start: number, end: number): string | undefined {
  if (start === PORT_ANY) return undefined;
  return start === end ? `${dir} port ${start}` : `${dir} portrange ${start}-${end}`;
}

function ruleClause(rule: CompiledRule): string {
  const parts = [rule.family === 4 ? 'ip' : 'ip6'];
  const src = net('src', rule.family, rule.srcNet, rule.srcPrefix);
  const dst = net('dst', rule.family, rule.dstNet, rule.dstPrefix);
  if (src) parts.push(src);
  if (dst) parts.push(dst);
  const l4: string[] = [];
  if (rule.protocol !== PROTO_ANY) {
    l4.push(PROTO_KEYWORD[rule.protocol] ?? `${rule.family === 4 ? 'ip' : 'ip6'} proto ${rule.protocol}`);
  }
  const sp = ports('src', rule.srcPortStart, rule.srcPortEnd);
  const dp = ports('dst', rule.dstPortStart, rule.dstPortEnd);
  if (sp) l4.push(sp);
  if (dp) l4.push(dp);
  if (l4.length > 0) {
    const l4Test = l4.join(' and ');
    if (rule.family === 6) {
      parts.push(`((${l4Test}) or ${IPV6_HAS_EXT})`);
    } else if (sp || dp) {
      // The protocol byte is in every fragment; the ports only in the first.
      const proto = rule.protocol === PROTO_ANY ? '' : ` and ip proto ${rule.protocol}`;
      parts.push(`((${l4Test}) or (${IPV4_LATER_FRAGMENT}${proto}))`);
    } else {
      parts.push(l4Test);
    }
  }
  return `(${parts.join(' and ')})`;
}

function ownOutputsClause(rules: RuleSet): string | undefined {
  if (rules.ownOutputs.length === 0) return undefined;
  return rules.ownOutputs
    .map((o) => `not (udp and dst host ${formatAddress(o.family, o.words)} and dst port ${o.port})`)
    .join(' and ');
}

/**
 * A libpcap expression for `ifName` in `direction` that passes every frame matchPacket()
 * could accept there and drops ARP, non-IP and the agent's own output. VLAN-tagged frames
 * always pass (decided in JavaScript). With opts.allIp every IP frame passes (flow logs).
 * Nothing to accept and not allIp → PREFILTER_NOTHING.
 */
export function prefilterExpression(
  rules: RuleSet,
  ifName: string,
  direction: Direction,
  opts: { allIp: boolean },
): string {
  let accept: string;
  if (opts.allIp) {
    accept = '(ip or ip6)';
  } else {
    const ifIndex = rules.interfaceIndex(ifName);
    const chain = ifIndex < 0 ? [] : rules.chains[ifIndex * 2 + direction] ?? [];
    const clauses = chain.flatMap((entry) => entry.rules.filter((r) => r.accept).map(ruleClause));
    if (clauses.length === 0) return PREFILTER_NOTHING;
    accept = `(${[...new Set(clauses)].join(' or ')})`;
  }
  const own = ownOutputsClause(rules);
  const untagged = own ? `(${accept} and ${own})` : accept;
  // `vlan` shifts the offsets of every test parsed after it, so it must come last.
  return `${untagged} or vlan`;
}
