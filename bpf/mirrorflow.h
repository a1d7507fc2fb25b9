/* The one contract between the eBPF programs and the TypeScript loader: structs, limits
 * and decision codes. agent/ebpf/layout.ts writes and reads these structs byte for byte
 * from its KERNEL_STRUCTS table, agent/limits.ts and agent/rules/match.ts carry the same
 * numbers; test/unit/kernel-contract.test.ts compares every struct member (offset, size)
 * with the compiled object's BTF and every #define below with the TypeScript constant.
 * Plain C with fixed-width types and explicit padding; the loader also checks each map's
 * key and value size when it loads the object. */
#ifndef MIRRORFLOW_H
#define MIRRORFLOW_H

/* The programs build against vmlinux.h, which has these types already. */
#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

#define MF_MAX_SESSIONS 64   /* enabled sessions in one config */
#define MF_MAX_CHAIN 3       /* sessions per source interface (SPEC §1) */
#define MF_MAX_RULES 10      /* rules per direction (SPEC §1) */
#define MF_MAX_OWN 16        /* agent outputs never mirrored (targets, IPFIX collectors) */
#define MF_MAX_IFACES 256    /* source interfaces attached at once */
#define MF_FRAG_SLOTS 4096   /* first-fragment decisions remembered */
#define MF_FRAG_TTL_NS 30000000000ULL
#define MF_REJECT_FLOWS 16384 /* dropped 5-tuples between two drains by user space */
#define MF_MAX_POOL 16       /* sensors in one session's pool (config LIMITS.poolMax) */
#define MF_FLOW_ENTRIES 131072 /* flows of flow-logged interfaces between two drains (both slots) */
#define MF_TCP_CONNS 100000  /* TCP connections tracked for retransmissions and RTT (LRU) */

/* Rule sets are double-buffered: user space fills the inactive slot, then flips. */
#define MF_SLOTS 2

#define MF_DIR_IN 0
#define MF_DIR_OUT 1

/* Decision codes: a session index (>= 0) or one of these; same values as
 * agent/rules/match.ts (checked by the contract test) so test vectors compare directly. */
#define MF_NO_MATCH (-1)
#define MF_EXCLUDED_ARP (-2)
#define MF_EXCLUDED_NON_IP (-3)
#define MF_EXCLUDED_DHCP (-4)
#define MF_EXCLUDED_OWN (-5)
#define MF_DROPPED_BY_RULE (-6)
#define MF_EXCLUDED_MALFORMED (-7)
#define MF_REASONS 8         /* mf_iface_stats.decisions index = -code; index 0 counts accepted */

/* A clone on its way to the VXLAN device carries MF_MARK_MAGIC | slot << 8 | session. */
#define MF_MARK_MAGIC 0x4d460000u
#define MF_MARK_MAGIC_MASK 0xffff0000u

#define MF_PROTO_ANY (-1)

struct mf_rule {
	__u32 src_net[4];   /* network byte order, already masked */
	__u32 src_mask[4];
	__u32 dst_net[4];
	__u32 dst_mask[4];
	__s32 protocol;     /* IANA number or MF_PROTO_ANY */
	__u16 sport_lo;     /* host byte order, inclusive */
	__u16 sport_hi;
	__u16 dport_lo;
	__u16 dport_hi;
	__u8 family;        /* 4 or 6 */
	__u8 accept;
	__u8 sport_any;
	__u8 dport_any;
};

/* mf_chain.flags: a flow log covers this interface (flowlog.bpf.h counts its packets). */
#define MF_CHAIN_FLOW_LOG 1

/* One interface and direction in one slot: the enabled sessions, priority ascending, each
 * with its filter's rules for that direction, priority ascending, and MF_CHAIN_* flags.
 * Present when there are sessions or a flow log: the entry the programs look up once per
 * packet for both. */
struct mf_chain {
	__u32 n_sessions;
	__u32 session[MF_MAX_CHAIN];
	__u32 n_rules[MF_MAX_CHAIN];
	__u32 flags;
	struct mf_rule rules[MF_MAX_CHAIN][MF_MAX_RULES];
};

struct mf_chain_key {
	__u32 ifindex;
	__u32 dir_slot;     /* direction | slot << 1 */
};

/* A mirror budget (docs/config.md "Mirror budget"): a GCRA token bucket per dimension, in
 * units of 1/256 ns (MF_BUDGET_SHIFT) so that a byte at 1 Tbit/s still costs > 0. A cost
 * of 0 is no limit in that dimension. Depth: how far ahead of now the bucket's debt may run
 * (its burst). Must be in sync with agent/mirror/budget.ts (same rule, same units). */
#define MF_BUDGET_SHIFT 8

struct mf_budget {
	__u64 packet_cost;   /* per wire packet */
	__u64 byte_cost;     /* per byte of the copies' inner frames, after the cut */
	__u64 packet_depth;
	__u64 byte_depth;
};

/* Where a bucket's debt runs out (theoretical arrival time, GCRA), in the same units as
 * bpf_ktime_get_ns() << MF_BUDGET_SHIFT. 0 (a new map entry) is a full bucket. */
struct mf_bucket {
	__u64 packet_tat;
	__u64 byte_tat;
};

/* mf_buckets: slot * MF_MAX_SESSIONS + session, then the agent-wide one. */
#define MF_AGENT_BUCKET (MF_SLOTS * MF_MAX_SESSIONS)

struct mf_session {
	__u32 vni;
	__u32 trunc_len;     /* min(packetLength, path MTU - outer headers) */
	__u32 vxlan_ifindex; /* 0: not mirrored (rule tests without a device) */
	__u32 family;        /* of the target */
	__u32 remote[4];     /* target address, network byte order */
	struct mf_budget budget;
};

/* A session's sensor pool, indexed like mf_session_stats (slot * MF_MAX_SESSIONS + session).
 * n_members 0: no pool, the copy goes to mf_session.remote. Otherwise each flow goes to the
 * healthy member pool.bpf.h picks; user space rewrites `healthy` as health checks change. */
struct mf_pool {
	__u32 n_members;
	__u32 healthy;       /* bit i: member i passes its health check */
	__u32 remote[MF_MAX_POOL][4]; /* network byte order, family of mf_session.family */
};

/* Per CPU, indexed by (slot * MF_MAX_SESSIONS + session) * MF_MAX_POOL + member. */
struct mf_member_stats {
	__u64 packets;
	__u64 bytes;
};

struct mf_own {
	__u32 addr[4];       /* network byte order */
	__u16 port;          /* host byte order */
	__u8 family;
	__u8 pad;
};

struct mf_slot {
	__u32 epoch;         /* new per rule set: fragment decisions never leak across reloads */
	__u32 n_sessions;
	__u32 n_own;
	__u32 seg_ifindex;   /* mf-seg, where clones are segmented; 0: not mirrored (rule tests) */
	struct mf_own own[MF_MAX_OWN];
	struct mf_session sessions[MF_MAX_SESSIONS];
	struct mf_budget agent_budget; /* agent.mirrorBudget: all sessions together */
};

struct mf_state {
	__u32 active_slot;
	__u32 count_slot;    /* mf_flows and mf_rejects entries being written; user space drains the other */
};

struct mf_frag_key {
	__u32 src[4];
	__u32 dst[4];
	__u32 id;
	__u32 ifindex;
	__u32 epoch;
	__u8 protocol;
	__u8 dir;
	__u16 pad;
};

struct mf_frag_val {
	__s32 decision;
	__u32 pad;
	__u64 expires_ns;
};

/* Per CPU, per source interface and direction: what the programs saw and decided. */
struct mf_iface_key {
	__u32 ifindex;
	__u32 dir;
};

struct mf_iface_stats {
	__u64 packets;       /* wire packets: a GSO/GRO aggregate counts its gso_segs */
	__u64 bytes;         /* skb->len: one set of headers per aggregate */
	__u64 decisions[MF_REASONS]; /* wire packets per decision; they sum to packets */
	__u64 flow_skipped;  /* wire packets of a flow-logged interface not counted: mf_flows was full */
};

/* Per CPU, indexed by slot * MF_MAX_SESSIONS + session. */
struct mf_session_stats {
	__u64 packets;       /* copies handed to the VXLAN device: one per wire segment */
	__u64 bytes;         /* their inner Ethernet bytes, after the cut (SPEC §5) */
	__u64 truncated;     /* copies cut */
	__u64 errors;        /* clone or tunnel-key failures */
	__u64 shed;          /* wire packets not cloned: over the session's or the agent's budget */
};

/* One direction of one 5-tuple on one interface: the key of mf_flows (what the TC programs
 * saw) and of mf_rejects (packets the host's packet filter dropped, skb:kfree_skb reason
 * NETFILTER_DROP). User space drains both into flow records (ACCEPT and REJECT). */
struct mf_flow_key {
	__u32 src[4];        /* network byte order */
	__u32 dst[4];
	__u32 ifindex;
	__u16 sport;         /* host byte order */
	__u16 dport;         /* ICMP/ICMPv6: type << 8 | code (sport 0) */
	__u8 protocol;
	__u8 family;         /* 4 or 6 */
	__u8 dir;
	__u8 slot;           /* mf_state.count_slot when counted */
};

struct mf_reject_val {
	__u64 packets;
	__u64 bytes;         /* IP bytes, like the flow records */
	__u64 first_ns;      /* bpf_ktime_get_ns (CLOCK_MONOTONIC) */
	__u64 last_ns;
};

/* Per CPU, per mf_flows entry: what one flow of a flow-logged interface did since the last
 * drain, counted as agent/flow/ counts a captured packet (SPEC §4: wire packets, IP bytes of
 * the wire segments) with the TCP analysis of agent/flow/tcp.ts (flowlog.bpf.h). */
struct mf_flow_val {
	__u64 packets;
	__u64 bytes;
	__u64 first_ns;      /* bpf_ktime_get_ns (CLOCK_MONOTONIC) */
	__u64 last_ns;
	__u64 mirrored;      /* wire packets cloned to a session */
	__u64 rtt_server_ns; /* SYN -> SYN-ACK, on the SYN-ACK's flow; 0: none */
	__u64 rtt_client_ns; /* SYN-ACK -> ACK, on the ACK's flow; 0: none */
	__u64 handshake_ns;  /* SYN -> ACK, on the ACK's flow (the record's rtt-us) */
	__u32 retrans;       /* segments, as agent/flow/stage.ts counts them */
	__u32 syn_retrans;
	__u32 zero_win;
	__u32 resets;
	__u32 out_of_order;
	__u32 session;       /* 1 + the session of the last mirrored packet; 0: none */
	__u8 tcp_flags;      /* OR of FIN..URG */
	__u8 pad[7];
};

/* A TCP connection on one interface, both directions: the lower endpoint (address, then
 * port) is side 0, as agent/flow/tcp.ts keys it. */
struct mf_conn_key {
	__u32 addr[2][4];    /* network byte order */
	__u32 ifindex;
	__u16 port[2];       /* host byte order */
	__u32 family;
};

/* What agent/flow/tcp.ts keeps per direction (same names, nanoseconds). */
struct mf_tcp_dir {
	__u64 last_advance_ns;
	__u64 last_ack_ns;
	__u32 next_seq;      /* highest sequence number seen + 1; 0: none yet */
	__u32 base_seq;
	__u32 last_ack;
	__s32 last_window;   /* -1: none yet */
	__u32 dup_acks;
	__u8 has_base;
	__u8 last_segment;   /* MF_SEG_* */
	__u16 pad;
};

struct mf_tcp_conn {
	struct mf_tcp_dir side[2];
	__u64 syn_ns;
	__u64 synack_ns;
	__u64 first_rtt_ns;
	__s8 client_side;    /* side that sent the SYN, or -1 */
	__u8 handshake_done;
	__u8 pad[6];
};

/* Interfaces whose drops are recorded: the tracepoint sees every namespace, ifindexes are
 * per namespace, so the key carries the agent's network namespace inode. */
struct mf_reject_iface {
	__u32 netns;
	__u32 ifindex;
};

#endif
