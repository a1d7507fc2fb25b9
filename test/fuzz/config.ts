// The config every fuzz run matches against (user space and BPF): drop and accept rules in
// both directions, both families, one session on eth0, a flow log on every interface.
export const FUZZ_CONFIG = `
agent: { vmId: fuzz, metrics: { listen: "" } }
filters:
  - id: tf-1
    ingressRules:
      - { priority: 1, action: drop, protocol: UDP, sourceCidrBlock: 0.0.0.0/0, destinationCidrBlock: 0.0.0.0/0, destinationPortRange: 53/53 }
      - { priority: 2, action: accept, protocol: ALL, sourceCidrBlock: 0.0.0.0/0, destinationCidrBlock: 0.0.0.0/0 }
      - { priority: 3, action: accept, protocol: ALL, sourceCidrBlock: "::/0", destinationCidrBlock: "::/0" }
    egressRules:
      - { priority: 1, action: accept, protocol: TCP, sourceCidrBlock: 10.0.0.0/8, destinationCidrBlock: 0.0.0.0/0, destinationPortRange: 1/1024 }
      - { priority: 2, action: accept, protocol: ICMP, sourceCidrBlock: "::/0", destinationCidrBlock: "::/0" }
sessions:
  - { id: ts-1, priority: 1, vni: 10, filterId: tf-1, sources: [eth0], target: { address: 192.0.2.10 } }
flowLogs:
  - { id: fl-1, sources: ["*"], window: 60, sink: { type: stdout } }
`;

