// The validated, defaulted configuration (SPEC §1). The zod schema in schema.ts is the
// source of truth; this file names its output so other modules can import plain types.
// schema.ts checks at compile time that its output is exactly `Config` (no field more or less).

export type Protocol = 'ALL' | 'ICMP' | 'TCP' | 'UDP';
export type RuleAction = 'accept' | 'drop';
export type DataPlane = 'auto' | 'ebpf' | 'pcap';
export type TrafficType = 'All' | 'Allow' | 'Drop';

/** "start/end" parsed; -1/-1 (any) becomes { start: -1, end: -1 }. */
export interface PortRange {
  start: number;
  end: number;
}

export interface Rule {
  priority: number;
  action: RuleAction;
  protocol: Protocol;
  sourceCidrBlock: string;
  destinationCidrBlock: string;
  sourcePortRange: PortRange;
  destinationPortRange: PortRange;
}

export interface Filter {
  id: string;
  name: string;
  ingressRules: Rule[];
  egressRules: Rule[];
}

export interface Target {
  address: string;
  port: number;
}

export type HealthCheckType = 'icmp' | 'tcp' | 'none';

/** How a pool member is judged (docs/config.md "Sensor pools"). Seconds and counts. */
export interface HealthCheck {
  type: HealthCheckType;
  /** TCP port to connect to (tcp only). */
  port?: number | undefined;
  interval: number;
  /** Consecutive failed checks before a healthy member is taken out. */
  unhealthyAfter: number;
  /** Consecutive passed checks before an unhealthy member is taken back. */
  healthyAfter: number;
}

/** Several sensors; each flow goes to one healthy member (SPEC §3). Members share port and family. */
export interface TargetPool {
  pool: Target[];
  healthCheck: HealthCheck;
}

/** A mirror budget: wire packets and bits per second of copies; 0 is no limit in that dimension. */
export interface BudgetRate {
  pps: number;
  bps: number;
}

export interface Session {
  id: string;
  name: string;
  enabled: boolean;
  priority: number;
  /** Resolved: when omitted in the file, derived from the session id (stable per config). */
  vni: number;
  /** True when vni was not in the file and was derived. */
  vniDerived: boolean;
  packetLength: number;
  filterId: string;
  sources: string[];
  /** Exactly one of target and targets is set. */
  target?: Target | undefined;
  targets?: TargetPool | undefined;
  /** This session's own budget (the agent-wide one applies too). */
  budget: BudgetRate;
}

/** The sensors a session sends to: its one target, or its pool's members in order. */
export function sessionTargets(s: Pick<Session, 'target' | 'targets'>): Target[] {
  if (s.target) return [s.target];
  if (s.targets) return s.targets.pool;
  throw new Error('session has neither target nor targets (validation should have refused it)');
}

export type Sink =
  | { type: 'file'; path: string; maxBytes: number; keep: number }
  | { type: 'stdout' }
  | {
      type: 'ipfix';
      collector: string;
      /** Enterprise number of the enterprise-specific elements (docs/sinks.md). */
      enterpriseNumber: number;
      /** Seconds between template resends. */
      templateRefresh: number;
    };

export interface FlowLog {
  id: string;
  name: string;
  enabled: boolean;
  sources: string[];
  trafficType: TrafficType;
  window: number;
  sink: Sink;
}

export interface AgentSettings {
  vmId: string;
  vpcId?: string;
  vswitchId?: string;
  accountId?: string;
  dataPlane: DataPlane;
  /** All sessions together; defaults sized from the host (config/host-budget.ts). */
  mirrorBudget: BudgetRate;
  metrics: { listen: string };
  control: { socket: string };
  log: { level: 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal' };
}

export interface Config {
  agent: AgentSettings;
  filters: Filter[];
  sessions: Session[];
  flowLogs: FlowLog[];
}
