/* Every map of the mirror programs, in one place. User space (agent/ebpf/) looks them up
 * by these names. */
#ifndef MF_MAPS_BPF_H
#define MF_MAPS_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "mirrorflow.h"

/* Which slot of mf_slots / mf_chains is live. Flipped last on every rule update. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct mf_state);
} mf_state SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MF_SLOTS);
	__type(key, __u32);
	__type(value, struct mf_slot);
} mf_slots SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MF_MAX_IFACES * 2 * MF_SLOTS);
	__type(key, struct mf_chain_key);
	__type(value, struct mf_chain);
} mf_chains SEC(".maps");

/* Decisions of first fragments, so later fragments (no ports) follow them (SPEC §2). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MF_FRAG_SLOTS);
	__type(key, struct mf_frag_key);
	__type(value, struct mf_frag_val);
} mf_frags SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MF_SLOTS * MF_MAX_SESSIONS);
	__type(key, __u32);
	__type(value, struct mf_session_stats);
} mf_session_stats SEC(".maps");

/* Mirror budget state, shared by every CPU (a per-CPU bucket would split the budget by the
 * number of CPUs and give a flow pinned to one CPU a fraction of it). See budget.bpf.h. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MF_AGENT_BUCKET + 1);
	__type(key, __u32);
	__type(value, struct mf_bucket);
} mf_buckets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MF_SLOTS * MF_MAX_SESSIONS);
	__type(key, __u32);
	__type(value, struct mf_pool);
} mf_pools SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MF_SLOTS * MF_MAX_SESSIONS * MF_MAX_POOL);
	__type(key, __u32);
	__type(value, struct mf_member_stats);
} mf_member_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, MF_MAX_IFACES * 2);
	__type(key, struct mf_iface_key);
	__type(value, struct mf_iface_stats);
} mf_iface_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MF_MAX_IFACES);
	__type(key, struct mf_reject_iface);
	__type(value, __u8);
} mf_reject_ifaces SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MF_REJECT_FLOWS);
	__type(key, struct mf_flow_key);
	__type(value, struct mf_reject_val);
} mf_rejects SEC(".maps");

/* Flow logs from the kernel (flowlog.bpf.h) on the interfaces whose chains carry
 * MF_CHAIN_FLOW_LOG: their flows since the last drain (a full table counts mf_iface_stats.flow_skipped:
 * nothing counted is lost, and a flow is never evicted with its counts) ... */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, MF_FLOW_ENTRIES);
	__type(key, struct mf_flow_key);
	__type(value, struct mf_flow_val);
} mf_flows SEC(".maps");

/* ... and the TCP state of their connections, which outlives drains (least recently seen
 * evicted first, as agent/flow/tcp.ts does). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MF_TCP_CONNS);
	__type(key, struct mf_conn_key);
	__type(value, struct mf_tcp_conn);
} mf_tcp_conns SEC(".maps");

#endif
