// The kernel filter of a capture socket: libpcap's filter syntax (what agent/rules/prefilter.ts
// writes) compiled to classic BPF by libpcap itself, without a live handle
// (pcap_open_dead), then attached with SO_ATTACH_FILTER by the capture.
//
// On Linux, libpcap compiles `inbound`/`outbound` to a load of the packet type
// (SKF_AD_OFF + SKF_AD_PKTTYPE, compared with PACKET_OUTGOING), which the kernel evaluates on
// our own AF_PACKET socket exactly as on libpcap's. A filter's accept returns the snap length
// given here: that is how many bytes of each frame the kernel copies into the ring.
import koffi from 'koffi';

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
    throw new Error(`capture filter: snap length ${snapLength} outside 1..${MAX_FILTER_SNAP}`);
  }
  const handle = pcap.openDead(DLT_EN10MB, snapLength);
  if (handle === null) throw new Error('capture filter: pcap_open_dead failed');
  const program = Buffer.alloc(BPF_PROGRAM_LEN);
  try {
    if (pcap.compile(handle, program, expression, 1, PCAP_NETMASK_UNKNOWN) !== 0) {
      throw new Error(`capture filter ${JSON.stringify(expression)}: ${pcap.geterr(handle) as string}`);
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

/** The kernel-side filter: each direction's expression, told apart by the packet type. */
export function directionalFilter(filterIn: string, filterOut: string): string {
  const side = (keyword: string, expression: string): string =>
    expression.trim() === '' ? keyword : `(${keyword} and (${expression}))`;
  return `${side('outbound', filterOut)} or ${side('inbound', filterIn)}`;
}
