// The config `mirrorflow lab` runs the agent with (SPEC §1 file format), built for one
// topology: one filter, one session from src's only interface to dst.

import type { Topology } from './topology.js';

/** Ports the lab's traffic uses and what the sample filter does with them. */
export const LAB_PORTS = {
  /** TCP echo server in dst: mirrored both ways. */
  tcp: 8080,
  /** iperf3 server in dst for the bulk transfer: mirrored both ways. */
  bulk: 5201,
  /** UDP to dst in 4000..5999: accepted, a range that also holds 4789 (the agent's own output). */
  udpAccepted: 4000,
  udpAcceptedRange: '4000/5999',
  /** Inside the accepted range, but a drop rule of higher priority keeps it from being mirrored. */
  udpDropped: 5001,
} as const;

export const LAB_VNI = 4242;

export interface LabConfigOptions {
  vni?: number;
  /** host:port of the metrics endpoint inside src, or "" to disable it. */
  metricsListen: string;
  controlSocket: string;
  flowLogPath: string;
}

const ANY4 = '0.0.0.0/0';
const ANY_PORT = '-1/-1';

function rule(priority: number, action: 'accept' | 'drop', protocol: string, src: string, dst: string, sport = ANY_PORT, dport = ANY_PORT) {
  return {
    priority,
    action,
    protocol,
    sourceCidrBlock: src,
    destinationCidrBlock: dst,
    sourcePortRange: sport,
    destinationPortRange: dport,
  };
}

/** The sample config as a plain object (stringify it as YAML or JSON). */
export function labConfig(topo: Topology, opts: LabConfigOptions): Record<string, unknown> {
  const lab6 = topo.v6.labPrefix;
  const tcp = `${LAB_PORTS.tcp}/${LAB_PORTS.tcp}`;
  const bulk = `${LAB_PORTS.bulk}/${LAB_PORTS.bulk}`;
  const dropped = `${LAB_PORTS.udpDropped}/${LAB_PORTS.udpDropped}`;
  return {
    agent: {
      vmId: `mf-lab-${topo.suffix}`,
      vpcId: 'vpc-lab',
      vswitchId: 'vsw-lab',
      metrics: { listen: opts.metricsListen },
      control: { socket: opts.controlSocket },
      log: { level: 'info' },
    },
    filters: [
      {
        id: 'tf-lab',
        name: 'lab',
        ingressRules: [
          rule(1, 'accept', 'TCP', ANY4, ANY4, tcp),
          rule(2, 'accept', 'TCP', '::/0', '::/0', tcp),
          rule(3, 'accept', 'ICMP', ANY4, ANY4),
          rule(4, 'accept', 'ICMP', lab6, lab6),
          rule(5, 'accept', 'TCP', ANY4, ANY4, bulk),
        ],
        egressRules: [
          rule(1, 'drop', 'UDP', ANY4, ANY4, ANY_PORT, dropped),
          rule(2, 'accept', 'TCP', ANY4, ANY4, ANY_PORT, tcp),
          rule(3, 'accept', 'TCP', '::/0', '::/0', ANY_PORT, tcp),
          rule(4, 'accept', 'ICMP', ANY4, ANY4),
          rule(5, 'accept', 'ICMP', lab6, lab6),
          // Also selects the agent's own VXLAN output to the target: it must still not loop.
          rule(6, 'accept', 'UDP', ANY4, `${topo.v4.dst}/32`, ANY_PORT, LAB_PORTS.udpAcceptedRange),
          rule(7, 'accept', 'TCP', ANY4, ANY4, ANY_PORT, bulk),
        ],
      },
    ],
    sessions: [
      {
        id: 'ts-lab',
        name: 'lab-to-dst',
        enabled: true,
        priority: 1,
        vni: opts.vni ?? LAB_VNI,
        packetLength: 1500,
        filterId: 'tf-lab',
        sources: [topo.srcIf],
        target: { address: topo.v4.dst, port: 4789 },
      },
    ],
    flowLogs: [
      {
        id: 'fl-lab',
        name: 'lab',
        enabled: true,
        sources: [topo.srcIf],
        trafficType: 'All',
        window: 60,
        sink: { type: 'file', path: opts.flowLogPath, maxBytes: 10485760, keep: 1 },
      },
    ],
  };
}
