// What BPF_PROG_TEST_RUN will not run: a TC frame shorter than an Ethernet header, or an
// untagged IPv4/IPv6 frame shorter than its IP header (the kernel answers EINVAL before the
// program runs). Such frames are checked against the TypeScript engine only; VLAN-tagged
// twins of them do reach the C parser.
const ETH_HLEN = 14;
const ETHERTYPE_IPV4 = 0x0800;
const ETHERTYPE_IPV6 = 0x86dd;

export function kernelRefusesTestRun(frame: Buffer): boolean {
  if (frame.length < ETH_HLEN) return true;
  const type = frame.readUInt16BE(12);
  return (type === ETHERTYPE_IPV4 && frame.length < ETH_HLEN + 20) || (type === ETHERTYPE_IPV6 && frame.length < ETH_HLEN + 40);
}
