/* Flow logs from the kernel (SPEC §4): on the interfaces a flow log covers (MF_CHAIN_FLOW_LOG),
 * every decoded IP packet is counted per direction and 5-tuple into mf_flows, per CPU, the
 * way agent/flow/aggregator.ts counts a captured one: wire packets (an aggregate counts its
 * gso_segs), the IP bytes of its wire segments (each repeats the IP and transport headers),
 * the OR of the TCP flags, the copies cloned to a session. TCP segments also go through
 * the analysis of agent/flow/tcp.ts (Wireshark's rules), with the per-connection state in
 * mf_tcp_conns: retransmissions, SYN retransmissions, zero windows, resets, out of order,
 * and the handshake RTT. User space drains mf_flows every tick (agent/ebpf/flow-map.ts);
 * no packet goes to user space for the flow logs.
 * The two directions of a connection may run on two CPUs at once; their state is not
 * locked (bpf_spin_lock is refused in LRU maps), so two segments analysed at the same
 * instant may see each other's half-written state. */
#ifndef MF_FLOWLOG_BPF_H
#define MF_FLOWLOG_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "mirrorflow.h"
#include "maps.bpf.h"
#include "parse.bpf.h"
#include "flow_hash.bpf.h"

#define MF_TCP_FIN 0x01
#define MF_TCP_SYN 0x02
#define MF_TCP_RST 0x04
#define MF_TCP_ACK 0x10
#define MF_TCP_FLAGS_MASK 0x3f

/* agent/flow/tcp.ts EV_* */
#define MF_EV_RETRANS 1
#define MF_EV_ZERO_WINDOW 4
#define MF_EV_RESET 8
#define MF_EV_OUT_OF_ORDER 16
#define MF_EV_SPURIOUS 128

/* What a direction's last segment was (tcp.ts SEG_*). */
#define MF_SEG_KEEP_ALIVE 1
#define MF_SEG_ZERO_WINDOW_PROBE 2
/* tshark's out-of-order threshold before the handshake RTT is known, and its fast
 * retransmission window after >= 2 duplicate ACKs. */
#define MF_OOO_THRESHOLD_NS 3000000ULL
#define MF_FAST_RETRANS_NS 20000000ULL

static __always_inline int mf_seq_lt(__u32 a, __u32 b)
{
	return (__s32)(a - b) < 0;
}

static __always_inline int mf_seq_le(__u32 a, __u32 b)
{
	return (__s32)(a - b) <= 0;
}

/* What new map entries start as; read-only globals, not stack: mf_flow's frame and its
 * callers' together must fit the 512 bytes of BPF stack. */
static const struct mf_tcp_conn mf_tcp_new = {
	.side = { { .last_window = -1 }, { .last_window = -1 } },
	.client_side = -1,
};
static const struct mf_flow_val mf_flow_new;

static __always_inline void mf_tcp_reset(struct mf_tcp_conn *c)
{
	__builtin_memcpy(c, &mf_tcp_new, sizeof(*c));
}

/* Wire segments of a TCP aggregate that start before `limit`: tcp.ts sees each segment
 * (seq + k * gso_size) on its own. */
static __always_inline __u32 mf_segs_before(__u32 seq, __u32 limit, __u32 payload, __u32 segs, __u32 gso_size)
{
	__u32 n;

	if (segs <= 1 || gso_size == 0 || mf_seq_le(seq + payload, limit))
		return segs;
	n = (limit - seq + gso_size - 1) / gso_size;
	return n < segs ? n : segs;
}

/* tcp.ts handshake(): the latest SYN counts (tshark's ts_mru_syn). */
static __always_inline void mf_tcp_handshake(struct mf_tcp_conn *c, int side, __u8 flags, __u64 now, struct mf_flow_val *v)
{
	__u8 sa = flags & (MF_TCP_SYN | MF_TCP_ACK);

	if (c->handshake_done)
		return;
	if (sa == MF_TCP_SYN) {
		c->syn_ns = now;
		c->client_side = side;
		return;
	}
	if (c->client_side < 0)
		return;
	if (sa == (MF_TCP_SYN | MF_TCP_ACK) && side != c->client_side) {
		int first = c->synack_ns == 0;

		c->synack_ns = now;
		if (first)
			v->rtt_server_ns = now - c->syn_ns ?: 1;
		return;
	}
	if ((flags & (MF_TCP_SYN | MF_TCP_ACK | MF_TCP_RST)) == MF_TCP_ACK && side == c->client_side && c->synack_ns) {
		c->handshake_done = 1;
		v->rtt_client_ns = now - c->synack_ns ?: 1;
		v->handshake_ns = now - c->syn_ns ?: 1;
		c->first_rtt_ns = v->handshake_ns;
	}
}

/* tcp.ts classify(): a segment with payload, SYN or FIN. */
static __always_inline __u32 mf_tcp_classify(const struct mf_tcp_conn *c, const struct mf_tcp_dir *fwd,
					     const struct mf_tcp_dir *rev, const struct mf_pkt *p, __u64 now)
{
	__u32 seq = p->tcp_seq, seglen = p->payload, next = fwd->next_seq;
	__u32 end = seq + seglen, rev_ack = rev->last_ack;
	__u64 threshold;

	if (seglen > 0 && rev_ack != 0 && mf_seq_le(end, rev_ack))
		return MF_EV_SPURIOUS | MF_EV_RETRANS;
	/* Starting one below nextseq with more than a byte: new data after a zero-window probe. */
	if (next == 0 || !mf_seq_lt(seq, next) || (seglen > 1 && seq == next - 1))
		return 0;
	if (rev->dup_acks >= 2 && rev_ack == seq && now - rev->last_ack_ns < MF_FAST_RETRANS_NS)
		return MF_EV_RETRANS;
	threshold = c->first_rtt_ns ? c->first_rtt_ns : MF_OOO_THRESHOLD_NS;
	if (now - fwd->last_advance_ns < threshold && next != end + ((p->tcp_flags & (MF_TCP_SYN | MF_TCP_FIN)) ? 1 : 0))
		return MF_EV_OUT_OF_ORDER;
	return MF_EV_RETRANS;
}

/* tcp.ts analyse() for one segment (or aggregate) of side `side`; counts into v as
 * agent/flow/stage.ts counts the events. */
static __always_inline void mf_tcp_analyse(struct mf_tcp_conn *c, int side, __u32 dir, const struct mf_pkt *p,
					   __u64 now, __u32 segs, __u32 gso_size, struct mf_flow_val *v)
{
	struct mf_tcp_dir *fwd = &c->side[side & 1];
	struct mf_tcp_dir *rev = &c->side[(side & 1) ^ 1];
	__u8 flags = p->tcp_flags, control = flags & (MF_TCP_SYN | MF_TCP_FIN | MF_TCP_RST), segment = 0;
	__u32 seq = p->tcp_seq, ack = p->tcp_ack, seglen = p->payload, next = fwd->next_seq, seg_end, ev = 0;
	__s32 win = p->tcp_window;
	int repeat;

	if (flags & MF_TCP_RST)
		v->resets++;
	mf_tcp_handshake(c, side, flags, now, v);
	if (!fwd->has_base) {
		fwd->base_seq = flags & MF_TCP_SYN ? seq : seq - 1;
		fwd->has_base = 1;
	}
	/* An unchanged, empty segment: the base of keep-alive, probe and duplicate ACKs. */
	repeat = seglen == 0 && control == 0 && seq == next && ack == fwd->last_ack && win == fwd->last_window;
	if (seglen == 1 && seq == next && rev->last_window == 0) {
		segment = MF_SEG_ZERO_WINDOW_PROBE;
	} else {
		if (win == 0 && control == 0)
			v->zero_win += segs;
		if (seglen <= 1 && control == 0 && seq == next - 1)
			segment = MF_SEG_KEEP_ALIVE;
		if (repeat && win != 0 && !(rev->last_segment & (win == 0 ? MF_SEG_ZERO_WINDOW_PROBE : MF_SEG_KEEP_ALIVE)))
			fwd->dup_acks++;
	}
	if (ack != fwd->last_ack)
		fwd->dup_acks = 0;
	if ((seglen > 0 || (flags & (MF_TCP_SYN | MF_TCP_FIN))) && segment != MF_SEG_KEEP_ALIVE)
		ev = mf_tcp_classify(c, fwd, rev, p, now);
	if (ev) {
		/* Spurious: below the peer's ACK; otherwise below nextseq. */
		__u32 n = mf_segs_before(seq, ev & MF_EV_SPURIOUS ? rev->last_ack : next, seglen, segs, gso_size);

		/* Seen where it was sent, a segment below nextseq is a retransmission even when the
		 * timing rule calls it out of order (stage.ts: the kernel's TcpRetransSegs counts it). */
		if ((ev & MF_EV_RETRANS) || dir == MF_DIR_OUT)
			v->retrans += n;
		if ((ev & MF_EV_RETRANS) && (flags & MF_TCP_SYN))
			v->syn_retrans++;
		if (ev & MF_EV_OUT_OF_ORDER)
			v->out_of_order += n;
	}
	/* SYN and FIN take one sequence number each; a zero-window probe does not advance. */
	seg_end = seq + seglen + (flags & MF_TCP_SYN ? 1 : 0) + (flags & MF_TCP_FIN ? 1 : 0);
	if ((next == 0 || mf_seq_lt(next, seg_end)) && segment != MF_SEG_ZERO_WINDOW_PROBE) {
		fwd->next_seq = seg_end;
		fwd->last_advance_ns = now;
	}
	fwd->last_ack = ack;
	fwd->last_ack_ns = now;
	fwd->last_window = win;
	fwd->last_segment = segment;
}

/* `ck`: the caller's key memory, reused (the BPF stack of mf_flow and its callers is 512 bytes). */
static __always_inline void mf_tcp(struct __sk_buff *skb, __u32 dir, const struct mf_pkt *p,
				   __u64 now, __u32 segs, struct mf_flow_val *v, struct mf_conn_key *ck)
{
	struct mf_tcp_conn *c;
	int side = mf_endpoint_order(p) > 0;

	__builtin_memcpy(ck->addr[0], side ? p->dst : p->src, 16);
	__builtin_memcpy(ck->addr[1], side ? p->src : p->dst, 16);
	ck->ifindex = skb->ifindex;
	ck->port[0] = side ? p->dport : p->sport;
	ck->port[1] = side ? p->sport : p->dport;
	ck->family = p->ip_version;
	c = bpf_map_lookup_elem(&mf_tcp_conns, ck);
	if (!c) {
		bpf_map_update_elem(&mf_tcp_conns, ck, &mf_tcp_new, BPF_NOEXIST);
		c = bpf_map_lookup_elem(&mf_tcp_conns, ck);
		if (!c)
			return;
	} else if ((p->tcp_flags & (MF_TCP_SYN | MF_TCP_ACK)) == MF_TCP_SYN && c->side[side].has_base &&
		   p->tcp_seq != c->side[side].base_seq) {
		/* Reused ports: a new connection in the same entry, as tshark starts a new stream. */
		mf_tcp_reset(c);
	}
	mf_tcp_analyse(c, side, dir, p, now, segs, skb->gso_size, v);
}

/* One decoded IP packet (or aggregate of `segs` wire packets) of a flow-logged interface;
 * session_plus1: 1 + the session it was cloned to, 0 when it was not. A global function:
 * the verifier checks it once on its own, not once per path of its callers (whose rule
 * walks would multiply its branches past the verifier's budget). */
__noinline int mf_flow(struct __sk_buff *skb, __u32 dir, const struct mf_pkt *p, __u32 session_plus1, __u32 segs)
{
	/* The flow's key, then the connection's (mf_tcp) or the interface's: one piece of stack. */
	union {
		struct mf_flow_key flow;
		struct mf_conn_key conn;
		struct mf_iface_key iface;
	} key = {};
	struct mf_flow_key *k = &key.flow;
	struct mf_flow_val *v;
	const struct mf_state *state;
	__u32 zero = 0;
	__u64 now;

	state = bpf_map_lookup_elem(&mf_state, &zero);
	if (!state || !p)
		return 0;
	__builtin_memcpy(k->src, p->src, 16);
	__builtin_memcpy(k->dst, p->dst, 16);
	k->ifindex = skb->ifindex;
	if (p->has_ports && (p->protocol == P_ICMP || p->protocol == P_ICMPV6)) {
		/* Keyed per type and code, as the flow records are. */
		k->dport = p->icmp;
	} else if (p->has_ports) {
		k->sport = p->sport;
		k->dport = p->dport;
	}
	k->protocol = p->protocol;
	k->family = p->ip_version;
	k->dir = dir;
	k->slot = state->count_slot & 1;
	now = bpf_ktime_get_ns();
	v = bpf_map_lookup_elem(&mf_flows, k);
	if (!v) {
		bpf_map_update_elem(&mf_flows, k, &mf_flow_new, BPF_NOEXIST);
		v = bpf_map_lookup_elem(&mf_flows, k);
		if (!v) {
			/* The table is full until the next drain: the packets are reported as skipped. */
			struct mf_iface_stats *st;

			key.iface.ifindex = skb->ifindex;
			key.iface.dir = dir;
			st = bpf_map_lookup_elem(&mf_iface_stats, &key.iface);

			if (st)
				st->flow_skipped += segs;
			return 0;
		}
	}
	if (!v->first_ns)
		v->first_ns = now;
	v->last_ns = now;
	v->packets += segs;
	v->bytes += p->ip_len + (__u64)(segs - 1) * p->hdr_len;
	if (session_plus1) {
		v->mirrored += segs;
		v->session = session_plus1;
	}
	if (p->protocol == P_TCP && p->has_ports) {
		v->tcp_flags |= p->tcp_flags & MF_TCP_FLAGS_MASK;
		__builtin_memset(&key, 0, sizeof(key));
		mf_tcp(skb, dir, p, now, segs, v, &key.conn);
	}
	return 0;
}

#endif
