/* Which sensor of a session's pool a copy goes to (SPEC §3): rendezvous hashing of the
 * symmetric flow hash against each member's index; the healthy member with the highest
 * score wins, the lower index on a tie. The same function as agent/mirror/pool.ts
 * pickMember() (must be in sync with it: test/ebpf/pool.test.ts compares the two). */
#ifndef MF_POOL_BPF_H
#define MF_POOL_BPF_H

#include "vmlinux.h"
#include "mirrorflow.h"
#include "flow_hash.bpf.h"

#define MF_MEMBER_SALT 0x9e3779b9u

struct mf_pick {
	__u32 hash;
	__u32 healthy;
	__u32 n_members;
	__u32 pad;
	/* The winner so far as score << 8 | 0x80 | (MF_MAX_POOL - 1 - i): a higher score wins,
	 * the lower index on a tie; 0 = none yet. */
	__u64 best;
};

static long mf_pick_step(__u64 i, void *ctx)
{
	struct mf_pick *pick = ctx;
	__u64 key;

	if (i >= pick->n_members || i >= MF_MAX_POOL)
		return 1;
	if (!((pick->healthy >> i) & 1))
		return 0;
	key = (__u64)mf_fmix32(pick->hash ^ ((__u32)(i + 1) * MF_MEMBER_SALT)) << 8 | 0x80 | (MF_MAX_POOL - 1 - i);
	if (key > pick->best)
		pick->best = key;
	return 0;
}

/* The member index, or -1 when no member is healthy. bpf_loop (kernel 5.17+) bounds the
 * walk at MF_MAX_POOL and has the verifier check the step once: an unrolled or open-coded
 * loop keeps one verifier state per possible winner and score range (72k instructions
 * processed for mf_tunnel against 4k). */
static __always_inline int mf_pool_pick(const struct mf_pool *pool, __u32 hash)
{
	struct mf_pick pick = { .hash = hash, .healthy = pool->healthy, .n_members = pool->n_members };

	bpf_loop(MF_MAX_POOL, mf_pick_step, &pick, 0);
	if (!pick.best)
		return -1;
	return MF_MAX_POOL - 1 - (int)(pick.best & 0x7f);
}

#endif
