#!/bin/bash
# What any capture in the sender's path costs a CPU-bound sender: trafgen sends 2M 64-byte
# frames paced at 200k pps (its ceiling on the 2-core lab) from one namespace to another
# over veth, with each setup in turn, ROUNDS times interleaved; prints the pps reached.
# Setups: none, reject (a packet socket whose filter rejects every frame: tcpdump on an
# unused port), tcpdump (-w /dev/null), ring (the agent's AF_PACKET ring, dist/ built, with
# an empty callback), ringbuf (a TC eBPF program copying 96 bytes per frame into a ring
# buffer, read every ms). Run as root: bash bench/capture-cost/run.sh
set -euo pipefail
ROUNDS=${ROUNDS:-3}
SETUPS=${SETUPS:-none reject tcpdump ring ringbuf}
FRAMES=2000000
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
a=mfcc-a-$$ b=mfcc-b-$$
cleanup() { ip netns del "$a" 2>/dev/null || true; ip netns del "$b" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

if [[ " $SETUPS " == *" ringbuf "* ]]; then
  clang -O2 -g -target bpf -I"/usr/include/$(uname -m)-linux-gnu" -c "$here/ringbuf.bpf.c" -o "$work/ringbuf.bpf.o"
  cc -O2 "$here/ringbuf.c" -o "$work/ringbuf" -lbpf
fi
ip netns add "$a"; ip netns add "$b"
ip link add va netns "$a" type veth peer name vb netns "$b"
ip -n "$a" addr add 10.77.0.1/24 dev va; ip -n "$b" addr add 10.77.0.2/24 dev vb
ip -n "$a" link set va up; ip -n "$b" link set vb up
mac() { ip -n "$1" -j link show "$2" | python3 -c 'import json,sys;print(", ".join("0x"+b for b in json.load(sys.stdin)[0]["address"].split(":")))'; }
cat > "$work/frame.trafgen" <<T
{ $(mac "$b" vb), $(mac "$a" va), const16(0x0800),
  0x45, 0x00, const16(50), const16(0), const16(0x4000), 64, 17, csumip(14, 33),
  10, 77, 0, 1, 10, 77, 0, 2, const16(40000), const16(9), const16(30), const16(0),
  fill(0x00, 22) }
T

for round in $(seq "$ROUNDS"); do
  for setup in $SETUPS; do
    pid=
    case $setup in
      none) ;;
      reject) ip netns exec "$a" tcpdump -i va -w /dev/null -B 65536 udp port 9999 2>/dev/null & pid=$! ;;
      tcpdump) ip netns exec "$a" tcpdump -i va -w /dev/null -B 65536 2>/dev/null & pid=$! ;;
      ring) ip netns exec "$a" node -e "import('$here/../../dist/agent/capture/packet-ring.js').then(({ PacketRing }) => new PacketRing({
          interfaceName: 'va', filterIn: '', filterOut: '', snapLength: 65600, bufferBytes: 32 << 20, bufferTimeoutMs: 10,
          onFrame: () => {}, onWarning: (m) => console.error(m) }))" & pid=$! ;;
      ringbuf) ip netns exec "$a" "$work/ringbuf" va "$work/ringbuf.bpf.o" & pid=$! ;;
    esac
    [ -n "$pid" ] && sleep 1
    start=$(date +%s.%N)
    ip netns exec "$a" trafgen --dev va --conf "$work/frame.trafgen" --cpus 1 --num "$FRAMES" --rate 200000pps \
      --no-cpu-stats --notouch-irq -q >/dev/null 2>&1
    end=$(date +%s.%N)
    echo "round $round $setup: $(echo "$FRAMES / ($end - $start)" | bc) pps"
    if [ -n "$pid" ]; then kill "$pid"; wait "$pid" 2>/dev/null || true; fi
  done
done
