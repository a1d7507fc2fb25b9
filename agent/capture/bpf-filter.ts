// The kernel filter of a capture socket: libpcap's filter syntax (what agent/rules/prefilter.ts
// writes) compiled to classic BPF by libpcap itself, without a live handle
// (pcap_open_dead), then attached with SO_ATTACH_FILTER by the capture.
//
// The direction is told apart in BPF by the packet type the kernel gives each frame
// (SKF_AD_PKTTYPE ancillary load, the same test libpcap generates for `inbound`/`outbound`
// on Linux). A filter's accept returns the snap length given here: that is how many bytes
// of each frame the kernel copies into the ring.
import koffi from 'koffi';
import { ErrorCode, MirrorflowError } from '../errors.js';

const libpcap = koffi.load('libpcap.so.0.8');
const pcap = {
  openDead: libpcap.func('void *pcap_open_dead(int linktype, int snaplen)'),
  compile: libpcap.func('int pcap_compile(void *p, void *program, const char *expression, int optimize, uint32_t netmask)'),
  geterr: libpcap.func('const char *pcap_geterr(void *p)'),
  freecode: libpcap.func('void pcap_freecode(void *program)'),
  close: libpcap.func('void pcap_close(void *p)'),
};

const DLT_EN10MB = 1;
const PCAP_NETMASK_UNKNOWN = 0xffffffff;
/** sizeof(struct bpf_program) on LP64: u_int bf_len, then the instruction pointer at 8. */
const BPF_PROGRAM_LEN = 16;
const BPF_PROGRAM_INSNS = 8;
/** sizeof(struct bpf_insn) = sizeof(struct sock_filter): u16 code, u8 jt, u8 jf, u32 k. */
export const BPF_INSN_LEN = 8;
/** libpcap's MAXIMUM_SNAPLEN: the largest accept value pcap_open_dead takes. */
export const MAX_FILTER_SNAP = 262_144;

/**
 * The classic BPF program (sock_filter instructions, host byte order) for `expression`
 * on Ethernet frames, accepting `snapLength` bytes of a matching frame.
 * Throws naming the expression when libpcap refuses it.
 */
export function compileFilter(expression: string, snapLength: number): Buffer {
  if (!Number.isInteger(snapLength) || snapLength < 1 || snapLength > MAX_FILTER_SNAP) {
    throw new MirrorflowError(ErrorCode.CAPTURE_FILTER, `capture filter: snap length ${snapLength} outside 1..${MAX_FILTER_SNAP}`);
  }
  const handle = pcap.openDead(DLT_EN10MB, snapLength);
  if (handle === null) throw new MirrorflowError(ErrorCode.CAPTURE_FILTER, 'capture filter: pcap_open_dead failed');
  const program = Buffer.alloc(BPF_PROGRAM_LEN);
  try {
    if (pcap.compile(handle, program, expression, 1, PCAP_NETMASK_UNKNOWN) !== 0) {
      throw new MirrorflowError(ErrorCode.CAPTURE_FILTER, `capture filter ${JSON.stringify(expression)}: ${pcap.geterr(handle) as string}`);
    }
    try {
      const count = program.readUInt32LE(0);
      const insns = koffi.decode(program, BPF_PROGRAM_INSNS, 'void *') as unknown;
      return Buffer.from(Buffer.from(koffi.view(insns, count * BPF_INSN_LEN)));
    } finally {
      pcap.freecode(program);
    }
  } finally {
    pcap.close(handle);
  }
}

// Classic BPF opcodes and ancillary loads (include/uapi/linux/filter.h, bpf_common.h).
const BPF_LD_W_ABS = 0x20;
const BPF_LD_H_ABS = 0x28;
const BPF_JMP_JA = 0x05;
const BPF_JMP_JEQ_K = 0x15;
const BPF_RET_K = 0x06;
const SKF_AD_OFF = -0x1000;
const SKF_AD_PKTTYPE = 4;
const SKF_AD_VLAN_TAG_PRESENT = 48;
const PACKET_OUTGOING = 4;
/** The kernel's limit on a classic BPF program (BPF_MAXINSNS). */
const MAX_INSNS = 4096;

function insn(code: number, jt: number, jf: number, k: number): Buffer {
  const b = Buffer.alloc(BPF_INSN_LEN);
  b.writeUInt16LE(code, 0);
  b[2] = jt;
  b[3] = jf;
  b.writeInt32LE(k, 4);
  return b;
}

/**
 * The kernel filter of a capture: `filterOut` for frames this host sent (packet type
 * PACKET_OUTGOING), `filterIn` for the others, each compiled on its own and joined by a
 * branch on the packet type. They cannot be joined as one expression: without a live
 * handle libpcap compiles `vlan` (which prefilter.ts puts in both) as a test of the data
 * that shifts every offset parsed after it, the other direction's included.
 * Frames whose VLAN tag the kernel holds outside the data (stripped on receive, or offloaded
 * on transmit) are accepted first: the tagged ones always reach JavaScript, which decides.
 * Jumps in classic BPF are relative, so the compiled programs keep working once placed.
 */
export function directionalProgram(filterIn: string, filterOut: string, snapLength: number): Buffer {
  const out = compileFilter(filterOut, snapLength);
  const inb = compileFilter(filterIn, snapLength);
  const program = Buffer.concat([
    insn(BPF_LD_W_ABS, 0, 0, SKF_AD_OFF + SKF_AD_VLAN_TAG_PRESENT),
    insn(BPF_JMP_JEQ_K, 1, 0, 0),
    insn(BPF_RET_K, 0, 0, snapLength),
    insn(BPF_LD_H_ABS, 0, 0, SKF_AD_OFF + SKF_AD_PKTTYPE),
    // Outgoing: skip the jump over the outbound program.
    insn(BPF_JMP_JEQ_K, 1, 0, PACKET_OUTGOING),
    insn(BPF_JMP_JA, 0, 0, out.length / BPF_INSN_LEN),
    out,
    inb,
  ]);
  if (program.length / BPF_INSN_LEN > MAX_INSNS) {
    throw new MirrorflowError(ErrorCode.CAPTURE_FILTER, `capture filter: ${program.length / BPF_INSN_LEN} BPF instructions, the kernel takes at most ${MAX_INSNS}`);
  }
  return program;
}
