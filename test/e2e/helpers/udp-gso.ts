// A UDP GSO sender and a counting receiver (python3, Debian's): the sender hands the kernel
// one 64 KB-ish buffer per sendto with UDP_SEGMENT set, so the stack builds one UDP GSO
// aggregate that stands for `segmentsPerSend` datagrams on the wire. The first 8 bytes of
// every wire datagram carry (flow tag, datagram number), so a copy of any datagram can be
// identified even after a cut.
import type { NsRole, Topology } from '../../../agent/lab/topology.js';

const SOL_UDP = 17;
const UDP_SEGMENT = 103;

const SENDER = `
import socket, struct, sys
host, port, tag, sends, per, seg, last = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
fam = socket.AF_INET6 if ':' in host else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM)
s.setsockopt(${SOL_UDP}, ${UDP_SEGMENT}, seg)
n = 0
for i in range(sends):
    parts = []
    for j in range(per):
        size = last if j == per - 1 else seg
        parts.append(struct.pack('!II', tag, n) + bytes(size - 8))
        n += 1
    s.sendto(b''.join(parts), (host, port))
print(n)
`;

const RECEIVER = `
import socket, sys
port = int(sys.argv[1])
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
s.bind(('::', port))
print('udp receiver ready', flush=True)
s.settimeout(3)
n = 0
try:
    while True:
        s.recv(65536)
        n += 1
except socket.timeout:
    pass
print('received', n, flush=True)
`;

export interface UdpGsoPlan {
  host: string;
  port: number;
  /** Written into every datagram, to tell flows apart. */
  tag: number;
  sends: number;
  segmentsPerSend: number;
  /** UDP payload bytes per wire datagram (gso_size), and of the last one of each send. */
  segmentSize: number;
  lastSize: number;
}

/** Starts the receiver in `role`; resolves once it listens. */
export async function startUdpReceiver(topo: Topology, role: NsRole, port: number) {
  const proc = topo.spawn(role, 'python3', ['-c', RECEIVER, String(port)]);
  await proc.waitForLine(/udp receiver ready/, 10_000, { stream: 'stdout' });
  return proc;
}

/** Sends the plan from `role`; resolves with the number of wire datagrams it stands for. */
export async function sendUdpGso(topo: Topology, role: NsRole, p: UdpGsoPlan): Promise<number> {
  const { stdout } = await topo.exec(role, 'python3', ['-c', SENDER, p.host, String(p.port), String(p.tag), String(p.sends),
    String(p.segmentsPerSend), String(p.segmentSize), String(p.lastSize)], { timeoutMs: 60_000 });
  return Number(stdout.trim());
}
