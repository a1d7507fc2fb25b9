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

/* The member index, or -1 when no member is healthy. Bounded by MF_MAX_POOL for the verifier. */
static __always_inline int mf_pool_pick(const struct mf_pool *pool, __u32 hash)
{
	__u32 best_score = 0;
	int best = -1;

	for (int i = 0; i < MF_MAX_POOL; i++) {
		__u32 score;

		if ((__u32)i >= pool->n_members)
			break;
		if (!((pool->healthy >> i) & 1))
			continue;
		score = mf_fmix32(hash ^ ((__u32)(i + 1) * MF_MEMBER_SALT));
		if (best < 0 || score > best_score) {
			best = i;
			best_score = score;
		}
	}
	return best;
}

#endif
