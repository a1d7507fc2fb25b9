// Per-segment costs of mirroring offloaded aggregates (vitest bench): the Internet checksum
// of one 1448-byte segment payload, building one wire segment of a 64 KB TSO aggregate
// (headers, payload copy, checksums), and the pipeline per segment (build, decode, rule
// decision amortised, copy handed to an output, flow stage).
import { bench, describe } from 'vitest';
import { checksumOf, WordSummer } from '../../agent/packet/checksum.js';
import { Segmenter } from '../../agent/packet/segment.js';
import { ethernet, ipv4, tcp } from '../../test/helpers/build-packet.js';
import { GSO_TCPV4, OffloadInfo } from '../../agent/packet/offload.js';
import { ETHERTYPE_IPV4, IPPROTO_TCP } from '../../agent/packet/offsets.js';
import { DIR_OUT, type PacketView } from '../../agent/packet/view.js';
import { parseConfig } from '../../agent/config/load.js';
import { compileRules } from '../../agent/rules/compile.js';
import { MirrorPipeline } from '../../agent/pipeline.js';
import { FlowStage } from '../../agent/flow/stage.js';
import type { MirrorOutput } from '../../agent/mirror/output.js';

const MSS = 1448;
const SEGMENTS = 45;
const payload = Buffer.alloc(MSS * SEGMENTS);
for (let i = 0; i < payload.length; i++) payload[i] = (i * 31 + 7) & 0xff;
const frame = ethernet({
  etherType: ETHERTYPE_IPV4,
  payload: ipv4({ src: '198.18.0.1', dst: '198.18.0.2', protocol: IPPROTO_TCP, dontFragment: true, payload: tcp({ srcPort: 40000, dstPort: 5201, flags: 0x18, payload }) }),
});
const offload = new OffloadInfo();
offload.gsoType = GSO_TCPV4;
offload.gsoSize = MSS;
offload.needsCsum = true;

const words = new WordSummer();

/** Byte pairs from a Uint8Array, four words per iteration, fold deferred: the first version of WordSummer. */
function bytePairSum(buf: Uint8Array, start: number, end: number): number {
  let s = 0;
  let i = start;
  for (const stop = end - 7; i < stop; i += 8) {
    s += ((buf[i]! << 8) | buf[i + 1]!) + ((buf[i + 2]! << 8) | buf[i + 3]!)
      + ((buf[i + 4]! << 8) | buf[i + 5]!) + ((buf[i + 6]! << 8) | buf[i + 7]!);
  }
  for (const stop = end - 1; i < stop; i += 2) s += (buf[i]! << 8) | buf[i + 1]!;
  return checksumOf(s);
}

/** The obvious loop, one word per iteration, folded every step: what sumWords is measured against. */
function naiveChecksum(buf: Uint8Array, start: number, end: number): number {
  let s = 0;
  for (let i = start; i < end; i += 2) {
    s += (buf[i]! << 8) | buf[i + 1]!;
    s = (s & 0xffff) + (s >>> 16);
  }
  return ~s & 0xffff;
}

const segmenter = new Segmenter();
segmenter.begin(frame, frame.length, frame.length, offload);
let k = 0;
let sink = 0;

/** Copies what the sender would copy into its arena, nothing else. */
class CopyingOutput implements MirrorOutput {
  packets = 0;
  bytes = 0;
  truncated = 0;
  sendErrors = 0;
  dropped = 0;
  private readonly arena = Buffer.alloc(9000);
  send(view: PacketView): boolean {
    view.buf.copy(this.arena, 8, 0, view.caplen);
    this.packets++;
    return true;
  }
  async close(): Promise<void> {}
}
const config = parseConfig(`
agent: { vmId: bench, metrics: { listen: "" } }
filters:
  - id: tf-1
    ingressRules: []
    egressRules: [{ priority: 1, action: accept, protocol: TCP, sourceCidrBlock: 0.0.0.0/0, destinationCidrBlock: 0.0.0.0/0 }]
sessions:
  - { id: ts-1, priority: 1, vni: 10, filterId: tf-1, sources: [eth0], target: { address: 192.0.2.1 } }
flowLogs:
  - { id: fl, sources: [eth0], window: 60, sink: { type: stdout } }
`, { localAddresses: [] });
const rules = compileRules(config);
const pipeline = new MirrorPipeline(rules, [new CopyingOutput()], new FlowStage({ config, interfaces: rules.interfaces, emit: () => undefined }));
let ts = 1_700_000_000_000_000;

describe(`offloaded aggregates, per ${MSS}-byte segment`, () => {
  bench('checksum of 1448 bytes: WordSummer (DataView, 2 x 32-bit per step) + fold', () => {
    sink ^= checksumOf(words.sum(payload, 0, MSS, 0));
  });
  bench('checksum of 1448 bytes: byte pairs, 4 words per step (reference)', () => {
    sink ^= bytePairSum(payload, 0, MSS);
  });
  bench('checksum of 1448 bytes: naive loop (reference)', () => {
    sink ^= naiveChecksum(payload, 0, MSS);
  });
  bench('Segmenter.build: headers, payload copy, IP and TCP checksums', () => {
    segmenter.build(k, true);
    k = (k + 1) % SEGMENTS;
  });
  bench(`pipeline: one ${SEGMENTS}-segment TSO aggregate, mirrored and flow-logged (time / ${SEGMENTS} = per segment)`, () => {
    pipeline.handleFrame(0, frame, frame.length, frame.length, ts += 100, DIR_OUT, offload);
  });
});
