/* Mirror budget in the kernel (docs/config.md "Mirror budget"): before a clone, the
 * session's bucket and the agent-wide one must both have room for the copy's wire packets
 * and bytes; otherwise the copy is shed (counted, never cloned) and the original goes on
 * untouched. The same rule as agent/mirror/budget.ts.
 *
 * Each bucket is a GCRA (virtual scheduling): one u64 per dimension, the time its debt runs
 * out (tat). A copy of cost c fits when max(tat, now) + c - now <= depth; taking it moves
 * tat to max(tat, now) + c. Times are bpf_ktime_get_ns() << MF_BUDGET_SHIFT; differences
 * are compared signed, so the wrap of the shifted clock (every 2^56 ns, 2.3 years) is
 * harmless.
 *
 * Concurrency: the buckets are shared by all CPUs (mf_buckets is a plain array). The check
 * and the charge are not one atomic step: CPUs that check at the same instant may each
 * pass, so a burst can exceed the depth by at most one copy per other CPU. A busy bucket is
 * charged with an atomic add (BPF_XADD), so no charge is lost and the long-run rate is
 * exact; only a bucket that was full (tat in the past) is set with a plain store, where two
 * CPUs racing lose at most one copy's charge each. One shared cache line per bucket is the
 * cost (a locked add per mirrored packet); a per-CPU bucket would avoid it but split the
 * budget across CPUs. */
#ifndef MF_BUDGET_BPF_H
#define MF_BUDGET_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "mirrorflow.h"
#include "maps.bpf.h"

static __always_inline __u64 mf_later(__u64 tat, __u64 now)
{
	return (__s64)(tat - now) > 0 ? tat : now;
}

/* 1 when `cost` fits in the dimension whose debt runs out at tat. A cost of 0 (no limit)
 * always fits, whatever debt an earlier budget left in the bucket. */
static __always_inline int mf_fits(__u64 tat, __u64 now, __u64 cost, __u64 depth)
{
	if (!cost)
		return 1;
	return (__s64)(mf_later(tat, now) + cost - now) <= (__s64)depth;
}

static __always_inline void mf_charge(__u64 *tat, __u64 now, __u64 cost)
{
	__u64 seen = *(volatile __u64 *)tat;

	if (!cost)
		return;
	if ((__s64)(seen - now) <= 0)
		*(volatile __u64 *)tat = now + cost;
	else
		__sync_fetch_and_add(tat, cost);
}

static __always_inline int mf_bucket_fits(const struct mf_bucket *b, const struct mf_budget *limit,
					  __u64 now, __u64 packets, __u64 bytes)
{
	return mf_fits(b->packet_tat, now, packets * limit->packet_cost, limit->packet_depth) &&
	       mf_fits(b->byte_tat, now, bytes * limit->byte_cost, limit->byte_depth);
}

static __always_inline void mf_bucket_charge(struct mf_bucket *b, const struct mf_budget *limit,
					     __u64 now, __u64 packets, __u64 bytes)
{
	mf_charge(&b->packet_tat, now, packets * limit->packet_cost);
	mf_charge(&b->byte_tat, now, bytes * limit->byte_cost);
}

/* 1 when a copy of `packets` wire packets and `bytes` bytes may be sent through `session`
 * (both buckets charged), 0 when it must be shed (nothing charged). */
static __always_inline int mf_budget_admit(__u32 slot_idx, __u32 session, const struct mf_slot *slot,
					   const struct mf_budget *limit, __u64 packets, __u64 bytes)
{
	__u32 agent_idx = MF_AGENT_BUCKET, idx = slot_idx * MF_MAX_SESSIONS + session;
	struct mf_bucket *own, *all;
	__u64 now;

	/* Neither budget limits anything: every cost is 0, so every bucket fits and none is
	 * charged; the answer needs no bucket and no clock read (one helper call per copy). */
	if (!(limit->packet_cost | limit->byte_cost | slot->agent_budget.packet_cost | slot->agent_budget.byte_cost))
		return 1;
	own = bpf_map_lookup_elem(&mf_buckets, &idx);
	all = bpf_map_lookup_elem(&mf_buckets, &agent_idx);
	if (!own || !all)
		return 0;
	now = bpf_ktime_get_ns() << MF_BUDGET_SHIFT;
	if (!mf_bucket_fits(own, limit, now, packets, bytes) ||
	    !mf_bucket_fits(all, &slot->agent_budget, now, packets, bytes))
		return 0;
	mf_bucket_charge(own, limit, now, packets, bytes);
	mf_bucket_charge(all, &slot->agent_budget, now, packets, bytes);
	return 1;
}

#endif
