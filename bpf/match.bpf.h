/* The mirror decision of SPEC §2, the same walk as agent/rules/match.ts: exclusions, then
 * the interface's sessions by priority, each session's rules by priority, first match
 * decides. Later fragments follow their first fragment's stored decision. */
#ifndef MF_MATCH_BPF_H
#define MF_MATCH_BPF_H

#include "maps.bpf.h"
#include "parse.bpf.h"

#define PORT_DHCP_SERVER 67
#define PORT_DHCP_CLIENT 68
#define PORT_DHCPV6_CLIENT 546
#define PORT_DHCPV6_SERVER 547

static __always_inline int mf_is_dhcp(const struct mf_pkt *p)
{
	if (p->ip_version == 4)
		return p->sport == PORT_DHCP_SERVER || p->sport == PORT_DHCP_CLIENT ||
		       p->dport == PORT_DHCP_SERVER || p->dport == PORT_DHCP_CLIENT;
	return p->sport == PORT_DHCPV6_CLIENT || p->sport == PORT_DHCPV6_SERVER ||
	       p->dport == PORT_DHCPV6_CLIENT || p->dport == PORT_DHCPV6_SERVER;
}

static __always_inline int mf_is_own_output(const struct mf_slot *slot, const struct mf_pkt *p)
{
	for (int i = 0; i < MF_MAX_OWN; i++) {
		const struct mf_own *o;

		if (i >= slot->n_own)
			break;
		o = &slot->own[i];
		if (o->port == p->dport && o->family == p->ip_version &&
		    o->addr[0] == p->dst[0] && o->addr[1] == p->dst[1] &&
		    o->addr[2] == p->dst[2] && o->addr[3] == p->dst[3])
			return 1;
	}
	return 0;
}

static __always_inline int mf_rule_matches(const struct mf_rule *r, const struct mf_pkt *p)
{
	if (r->family != p->ip_version)
		return 0;
	if (r->protocol != MF_PROTO_ANY && r->protocol != p->protocol)
		return 0;
	if ((p->src[0] & r->src_mask[0]) != r->src_net[0] || (p->dst[0] & r->dst_mask[0]) != r->dst_net[0])
		return 0;
	if (r->family == 6) {
		if ((p->src[1] & r->src_mask[1]) != r->src_net[1] ||
		    (p->src[2] & r->src_mask[2]) != r->src_net[2] ||
		    (p->src[3] & r->src_mask[3]) != r->src_net[3])
			return 0;
		if ((p->dst[1] & r->dst_mask[1]) != r->dst_net[1] ||
		    (p->dst[2] & r->dst_mask[2]) != r->dst_net[2] ||
		    (p->dst[3] & r->dst_mask[3]) != r->dst_net[3])
			return 0;
	}
	/* A packet without ports (later fragment) only matches rules that do not constrain them. */
	if (!r->sport_any && (!p->has_ports || p->sport < r->sport_lo || p->sport > r->sport_hi))
		return 0;
	if (!r->dport_any && (!p->has_ports || p->dport < r->dport_lo || p->dport > r->dport_hi))
		return 0;
	return 1;
}

/* The chain of one interface and direction in one slot; NULL: no sessions, no flow log. */
static __always_inline const struct mf_chain *mf_chain_of(__u32 ifindex, __u32 dir, __u32 slot_idx)
{
	struct mf_chain_key key = { .ifindex = ifindex, .dir_slot = dir | slot_idx << 1 };

	return bpf_map_lookup_elem(&mf_chains, &key);
}

/* The chain lookup, once per packet: the rule walk here and the flow log's flag in
 * mf_handle both read it. `looked` says whether c holds it yet (a DHCP or own packet, or
 * a later fragment with a stored decision, needs no walk). */
struct mf_chain_ref {
	const struct mf_chain *c;
	int looked;
};

static __always_inline const struct mf_chain *mf_chain_get(struct mf_chain_ref *ref, __u32 ifindex, __u32 dir, __u32 slot_idx)
{
	if (!ref->looked) {
		ref->c = mf_chain_of(ifindex, dir, slot_idx);
		ref->looked = 1;
	}
	return ref->c;
}

static __always_inline int mf_walk_chain(const struct mf_chain *c, const struct mf_pkt *p)
{
	if (!c)
		return MF_NO_MATCH;
	for (int s = 0; s < MF_MAX_CHAIN; s++) {
		if (s >= c->n_sessions)
			break;
		for (int i = 0; i < MF_MAX_RULES; i++) {
			const struct mf_rule *r;

			if (i >= c->n_rules[s])
				break;
			r = &c->rules[s][i];
			if (mf_rule_matches(r, p))
				return r->accept ? (int)c->session[s] : MF_DROPPED_BY_RULE;
		}
	}
	return MF_NO_MATCH;
}

static __always_inline int mf_decide_ip(__u32 ifindex, __u32 dir, __u32 slot_idx,
					const struct mf_slot *slot, const struct mf_pkt *p, struct mf_chain_ref *chain)
{
	if (p->protocol == P_UDP && p->has_ports) {
		if (mf_is_dhcp(p))
			return MF_EXCLUDED_DHCP;
		if (mf_is_own_output(slot, p))
			return MF_EXCLUDED_OWN;
	}
	return mf_walk_chain(mf_chain_get(chain, ifindex, dir, slot_idx), p);
}

static __always_inline void mf_frag_key(struct mf_frag_key *k, __u32 ifindex, __u32 dir,
					const struct mf_slot *slot, const struct mf_pkt *p)
{
	__builtin_memcpy(k->src, p->src, 16);
	__builtin_memcpy(k->dst, p->dst, 16);
	k->id = p->frag_id;
	k->ifindex = ifindex;
	k->epoch = slot->epoch;
	k->protocol = p->protocol;
	k->dir = dir;
	k->pad = 0;
}

/* Decision for a parsed frame: a session index or a negative MF_* code. */
static __always_inline int mf_decide(__u32 ifindex, __u32 dir, __u32 slot_idx, const struct mf_slot *slot,
				     const struct mf_pkt *p, int decoded, struct mf_chain_ref *chain)
{
	struct mf_frag_key key;
	struct mf_frag_val val = {};
	__u64 now;
	int decision;

	if (decoded == MF_DECODE_MALFORMED)
		return MF_EXCLUDED_MALFORMED;
	if (decoded == MF_DECODE_ARP)
		return MF_EXCLUDED_ARP;
	if (decoded == MF_DECODE_NON_IP)
		return MF_EXCLUDED_NON_IP;
	if (!p->is_fragment)
		return mf_decide_ip(ifindex, dir, slot_idx, slot, p, chain);

	mf_frag_key(&key, ifindex, dir, slot, p);
	now = bpf_ktime_get_ns();
	if (p->frag_off) {
		const struct mf_frag_val *stored = bpf_map_lookup_elem(&mf_frags, &key);

		if (stored && stored->expires_ns > now)
			return stored->decision;
		return mf_decide_ip(ifindex, dir, slot_idx, slot, p, chain);
	}
	decision = mf_decide_ip(ifindex, dir, slot_idx, slot, p, chain);
	val.decision = decision;
	val.expires_ns = now + MF_FRAG_TTL_NS;
	bpf_map_update_elem(&mf_frags, &key, &val, BPF_ANY);
	return decision;
}

#endif
