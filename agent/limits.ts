// The limits of one config, in one place: the config schema enforces the first three and the pool sizes
// (SPEC §1), the eBPF plane sizes its maps and structs by all of them, and bpf/mirrorflow.h
// repeats them as #defines for the C side. test/unit/kernel-contract.test.ts fails when
// the header and this module disagree.

export const LIMITS = {
  /** Rules in one direction of a filter (MF_MAX_RULES). */
  rulesPerDirection: 10,
  /** Source interfaces of one session (config only: the kernel keys by interface). */
  sourcesPerSession: 10,
  /** Enabled sessions mirroring one source interface (MF_MAX_CHAIN). */
  sessionsPerInterface: 3,
  /** Enabled sessions in one config on the eBPF plane (MF_MAX_SESSIONS). */
  enabledSessions: 64,
  /** Mirror targets plus IPFIX collectors the eBPF plane excludes (MF_MAX_OWN). */
  ownOutputs: 16,
  /** Source interfaces attached at once on the eBPF plane (MF_MAX_IFACES). */
  sourceInterfaces: 256,
  /** Sensors in one `targets.pool` (config; MF_MAX_POOL is the upper one). */
  poolMin: 2,
  poolMax: 16,
  /** Flows the eBPF plane counts for flow logs between two drains, both slots (MF_FLOW_ENTRIES). */
  kernelFlows: 131_072,
  /** TCP connections the eBPF plane tracks for retransmissions and RTT, least recently seen evicted (MF_TCP_CONNS). */
  kernelTcpConnections: 100_000,
} as const;
