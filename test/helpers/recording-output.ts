// A MirrorOutput that keeps every copy the pipeline hands it (the frame the live sender would
// cut and send, caplen bytes), and a config that mirrors all egress IP traffic of one
// interface, for tests that look at the copies themselves.
import type { MirrorOutput } from '../../agent/mirror/output.js';
import type { PacketView } from '../../agent/packet/view.js';

export class RecordingOutput implements MirrorOutput {
  packets = 0;
  bytes = 0;
  truncated = 0;
  sendErrors = 0;
  dropped = 0;
  readonly copies: { frame: Buffer; wireLen: number }[] = [];
  send(view: PacketView): boolean {
    this.copies.push({ frame: Buffer.from(view.buf.subarray(0, view.caplen)), wireLen: view.wireLen });
    this.packets++;
    this.bytes += view.caplen;
    if (view.caplen < view.wireLen) this.truncated++;
    return true;
  }
  async close(): Promise<void> {}
}

/** Session ts-1 (VNI 10) mirrors every outbound IPv4 and IPv6 packet of `sourceIf`; optionally flow log fl-1 on it. */
export function mirrorEgressConfig(sourceIf: string, opts: { flowLog: boolean }): string {
  return `
agent: { vmId: test, metrics: { listen: "" } }
filters:
  - id: tf-1
    ingressRules: []
    egressRules:
      - { priority: 1, action: accept, protocol: ALL, sourceCidrBlock: 0.0.0.0/0, destinationCidrBlock: 0.0.0.0/0 }
      - { priority: 2, action: accept, protocol: ALL, sourceCidrBlock: "::/0", destinationCidrBlock: "::/0" }
sessions:
  - { id: ts-1, priority: 1, vni: 10, packetLength: 8500, filterId: tf-1, sources: [${sourceIf}], target: { address: 192.0.2.10 } }
${opts.flowLog ? `flowLogs:\n  - { id: fl-1, sources: [${sourceIf}], window: 60, sink: { type: stdout } }` : ''}
`;
}
