#!/usr/bin/env bash
# Installs what mirrorflow needs on Debian, and nothing that is already there. Safe to run
# repeatedly.
#   scripts/install-deps.sh          build, test and lab (`make test`, `make lab`)
#   scripts/install-deps.sh --build  only what building needs (`make install`): no test tools
set -euo pipefail

packages=(
  libpcap0.8        # the capture compiles its kernel filters with libpcap (koffi)
  clang llvm        # eBPF programs (bpf/)
  libbpf-dev bpftool
  g++ make python3  # node-gyp builds the native modules
  iproute2 ethtool  # ip, tc and ethtool, which the agent runs; namespaces, veths, offloads in the lab and tests
)
if [[ ${1:-} != --build ]]; then
  packages+=(
    tcpdump tshark    # independent decoders of what reaches the destination
    iperf3 netsniff-ng  # traffic generators (iperf3, trafgen)
    systemd           # systemd-analyze verify of the unit
    prometheus        # promtool check metrics
    iptables          # induced loss (statistic match) and host drops in tests
    groff-base man-db # the man page renders without warnings
    nfdump pmacct softflowd postgresql  # IPFIX collectors, a reference exporter and the database the collector e2e reads
    chromium          # renders the `flows report` page in its test (headless)
    jq                # what `make bench` compares `flows query` against
  )
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "install-deps: missing Debian packages: ${missing[*]} (run as root to install them)" >&2
    exit 1
  fi
  echo "install-deps: installing ${missing[*]}"
  apt-get update -q
  # Collectors and PostgreSQL must not start as services listening on the network: the
  # tests start their own on loopback. A policy-rc.d that is already there is left alone.
  policy=/usr/sbin/policy-rc.d
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod 755 "$policy"
    trap 'rm -f "$policy"' EXIT
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
