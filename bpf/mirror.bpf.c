// SPDX-License-Identifier: GPL-2.0
/* TC programs of the eBPF data plane.
 *   mf_ingress / mf_egress (clsact of each source interface): parse, decide (SPEC §2), and
 *     for an accepted packet clone it into the agent's segmenting veth (mf-seg), unless the
 *     session's or the agent-wide mirror budget has no room (budget.bpf.h: the copy is shed
 *     and counted). The original always goes on unchanged (TC_ACT_UNSPEC: the next filter,
 *     if any, still runs).
 *   The clone may be an aggregate (TSO/GSO on transmit, GRO on receive, UDP GSO, BIG TCP).
 *     mf-seg has no segmentation or checksum offloads, so the kernel's own GSO code cuts it
 *     into the wire segments it stands for, with complete checksums, on its way out of
 *     mf-seg; each segment arrives on the veth peer (mf-seg-rx).
 *   mf_tunnel (clsact ingress of mf-seg-rx): once per wire segment, sets the tunnel key
 *     (VNI, remote: the session's target or the healthy pool member its flow hashes to)
 *     and the symmetric inner flow hash the UDP source port comes from,
 *     truncates the segment (SPEC §3), counts the copy, and redirects it to the session's
 *     external-mode VXLAN device, which encapsulates it.
 * The session travels from one to the other in skb->mark, which mf_ingress/mf_egress set
 * only around the clone and restore at once (the mark survives segmentation and the veth
 * hop within one network namespace). skb->cb[0] reports the decision (read back by
 * BPF_PROG_TEST_RUN in the parity tests).
 *   On the interfaces a flow log covers, mf_ingress/mf_egress also count every IP packet
 *     into the flow map with its TCP analysis (flowlog.bpf.h): flow logs without capture.
 *   mf_kfree_skb (tp_btf/kfree_skb): counts packets the host's packet filter dropped on the
 *     source interfaces, for REJECT flow records (reject.bpf.h). Loaded only when a flow
 *     log needs it. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "mirrorflow.h"
#include "maps.bpf.h"
#include "parse.bpf.h"
#include "match.bpf.h"
#include "reject.bpf.h"
#include "flow_hash.bpf.h"
#include "pool.bpf.h"
#include "budget.bpf.h"
#include "flowlog.bpf.h"

/* linux/pkt_cls.h, which cannot be included next to vmlinux.h */
#define TC_ACT_UNSPEC (-1)
#define TC_ACT_OK 0
#define TC_ACT_SHOT 2

/* A new mf_iface_stats entry; a read-only global, not 88 bytes of the BPF stack. */
static const struct mf_iface_stats mf_iface_stats_new;

static __always_inline void mf_count(struct __sk_buff *skb, __u32 dir, int decision)
{
	struct mf_iface_key key = { .ifindex = skb->ifindex, .dir = dir };
	__u32 idx = decision >= 0 ? 0 : (__u32)(-decision);
	struct mf_iface_stats *st = bpf_map_lookup_elem(&mf_iface_stats, &key);

	if (!st) {
		bpf_map_update_elem(&mf_iface_stats, &key, &mf_iface_stats_new, BPF_NOEXIST);
		st = bpf_map_lookup_elem(&mf_iface_stats, &key);
		if (!st)
			return;
	}
	/* Wire packets, as the pcap plane counts them: a GSO/GRO aggregate is gso_segs of them
	 * (0 on an skb that was never aggregated). Bytes are the skb's, one set of headers. */
	__u32 segs = skb->gso_segs ? skb->gso_segs : 1;

	st->packets += segs;
	st->bytes += skb->len;
	if (idx < MF_REASONS)
		st->decisions[idx] += segs;
}

static __always_inline struct mf_session_stats *mf_stats(__u32 slot_idx, __u32 session)
{
	__u32 idx = slot_idx * MF_MAX_SESSIONS + session;

	return bpf_map_lookup_elem(&mf_session_stats, &idx);
}

/* Copies are counted where they are final, in mf_tunnel (one per wire segment, after the
 * cut); here only a clone the kernel refused is counted, as an error, and a copy over the
 * budget as shed. The budget is charged in wire packets: the clone of an aggregate becomes
 * gso_segs segments in mf-seg, each cut to trunc_len (its bytes: skb->len, or the cut of
 * every segment when that is less; the headers each segment repeats are not in skb->len).
 * cb[2] reports 1 for a shed copy to BPF_PROG_TEST_RUN. */
static __always_inline int mf_mirror(struct __sk_buff *skb, __u32 slot_idx,
				     const struct mf_slot *slot, __u64 session)
{
	const struct mf_session *s;
	struct mf_session_stats *st;
	__u64 segs = skb->gso_segs > 1 ? skb->gso_segs : 1, bytes = skb->len;
	__u32 mark;
	long err;

	/* Chains only hold indexes below MF_MAX_SESSIONS; the mask is the verifier's bound. */
	session &= MF_MAX_SESSIONS - 1;
	s = &slot->sessions[session];
	if (!s->vxlan_ifindex || !slot->seg_ifindex)
		return 0;
	if (bytes > segs * s->trunc_len)
		bytes = segs * s->trunc_len;
	if (!mf_budget_admit(slot_idx, (__u32)session, slot, &s->budget, segs, bytes)) {
		skb->cb[2] = 1;
		st = mf_stats(slot_idx, session);
		if (st)
			st->shed += segs;
		return 0;
	}
	mark = skb->mark;
	skb->mark = MF_MARK_MAGIC | slot_idx << 8 | session;
	err = bpf_clone_redirect(skb, slot->seg_ifindex, 0);
	skb->mark = mark;
	if (err) {
		st = mf_stats(slot_idx, session);
		if (st)
			st->errors++;
		return 0;
	}
	return 1;
}

static __always_inline int mf_handle(struct __sk_buff *skb, __u32 dir)
{
	__u32 zero = 0, slot_idx;
	const struct mf_state *state = bpf_map_lookup_elem(&mf_state, &zero);
	const struct mf_slot *slot;
	const struct mf_chain *c;
	struct mf_chain_ref chain = {};
	struct mf_pkt p = {};
	__u32 cloned_to = 0;
	int decision, decoded;

	if (!state)
		return TC_ACT_UNSPEC;
	slot_idx = state->active_slot & 1;
	slot = bpf_map_lookup_elem(&mf_slots, &slot_idx);
	if (!slot)
		return TC_ACT_UNSPEC;
	decoded = mf_parse(skb, &p);
	decision = mf_decide(skb->ifindex, dir, slot_idx, slot, &p, decoded, &chain);
	skb->cb[0] = (__u32)decision;
	skb->cb[2] = 0;
	mf_count(skb, dir, decision);
	if (decision >= 0 && mf_mirror(skb, slot_idx, slot, (__u64)decision))
		cloned_to = (__u32)decision + 1;
	/* Every decoded IP packet of a flow-logged interface counts in the flow logs, mirrored
	 * or not, but the agent's own outputs, which the pcap plane's capture filter leaves out
	 * too (rules/prefilter.ts). The flag is in the chain the rule walk has mostly read. */
	if (decoded != MF_DECODE_OK || decision == MF_EXCLUDED_OWN)
		return TC_ACT_UNSPEC;
	c = mf_chain_get(&chain, skb->ifindex, dir, slot_idx);
	if (c && (c->flags & MF_CHAIN_FLOW_LOG))
		mf_flow(skb, dir, &p, cloned_to, skb->gso_segs > 1 ? skb->gso_segs : 1);
	return TC_ACT_UNSPEC;
}

SEC("tc")
int mf_ingress(struct __sk_buff *skb)
{
	return mf_handle(skb, MF_DIR_IN);
}

SEC("tc")
int mf_egress(struct __sk_buff *skb)
{
	return mf_handle(skb, MF_DIR_OUT);
}

/* One wire segment of a clone, on the ingress of mf-seg-rx. Returns TC_ACT_REDIRECT to the
 * session's VXLAN device, or TC_ACT_SHOT for anything that is not one of our clones. */
SEC("tc")
int mf_tunnel(struct __sk_buff *skb)
{
	struct bpf_tunnel_key key = {};
	struct mf_member_stats *ms = NULL;
	const struct mf_session *s;
	struct mf_session_stats *st;
	const struct mf_slot *slot;
	const struct mf_pool *pool;
	const __u32 *remote;
	struct mf_pkt p = {};
	__u32 mark = skb->mark, slot_idx, session, hash, idx;
	__u64 flags = 0;
	int member = 0;

	/* Only our clones are routed here; anything else is not ours to send. */
	if ((mark & MF_MARK_MAGIC_MASK) != MF_MARK_MAGIC)
		return TC_ACT_SHOT;
	slot_idx = (mark >> 8) & 1;
	session = mark & (MF_MAX_SESSIONS - 1);
	slot = bpf_map_lookup_elem(&mf_slots, &slot_idx);
	if (!slot || (mark & 0xff) >= MF_MAX_SESSIONS)
		return TC_ACT_SHOT;
	s = &slot->sessions[session];
	st = mf_stats(slot_idx, session);
	/* The outer source port (vxlan: udp_flow_src_port from skb->hash) and the pool member
	 * both come from the symmetric hash of the inner 5-tuple, read before the cut can
	 * shorten the headers. Set on the copy only; the original's hash is the socket's,
	 * untouched. cb[1] reports it, cb[2] the member, to BPF_PROG_TEST_RUN. */
	mf_parse(skb, &p);
	hash = mf_flow_hash(&p);
	remote = s->remote;
	idx = slot_idx * MF_MAX_SESSIONS + session;
	pool = bpf_map_lookup_elem(&mf_pools, &idx);
	if (pool && pool->n_members) {
		member = mf_pool_pick(pool, hash);
		skb->cb[2] = (__u32)member;
		/* No healthy sensor: the copy is counted as an error, not sent to a dead one. */
		if (member < 0)
			goto fail;
		member &= MF_MAX_POOL - 1;
		remote = pool->remote[member];
		idx = idx * MF_MAX_POOL + member;
		ms = bpf_map_lookup_elem(&mf_member_stats, &idx);
	}
	key.tunnel_id = s->vni;
	key.tunnel_ttl = 64;
	if (s->family == 6) {
		key.remote_ipv6[0] = bpf_ntohl(remote[0]);
		key.remote_ipv6[1] = bpf_ntohl(remote[1]);
		key.remote_ipv6[2] = bpf_ntohl(remote[2]);
		key.remote_ipv6[3] = bpf_ntohl(remote[3]);
		flags = BPF_F_TUNINFO_IPV6;
	} else {
		key.remote_ipv4 = bpf_ntohl(remote[0]);
	}
	if (bpf_skb_set_tunnel_key(skb, &key, sizeof(key), flags))
		goto fail;
	bpf_set_hash(skb, hash);
	skb->cb[1] = hash;
	if (skb->len > s->trunc_len) {
		if (bpf_skb_change_tail(skb, s->trunc_len, 0))
			goto fail;
		if (st)
			st->truncated++;
	}
	/* The outer packet's route lookup must not see our marker. */
	skb->mark = 0;
	if (st) {
		st->packets++;
		st->bytes += skb->len;
	}
	if (ms) {
		ms->packets++;
		ms->bytes += skb->len;
	}
	return bpf_redirect(s->vxlan_ifindex, 0);
fail:
	if (st)
		st->errors++;
	return TC_ACT_SHOT;
}

char LICENSE[] SEC("license") = "GPL";
