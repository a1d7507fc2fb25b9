# syntax=docker/dockerfile:1
# mirrorflow agent image: `docker build -t mirrorflow:0.1.0 .`
#
# The build stage compiles the TypeScript, the native module (raw-socket) and the
# eBPF objects, then lays the agent out exactly as `make install` does on a host
# (scripts/install.sh with DESTDIR). The runtime stage gets that tree, the shared
# libraries it loads and the programs it runs only: no compiler, no npm dev dependencies.
# Both stages use the same exact Node.js release (pinned tag; pin a digest, @sha256:…, in
# your registry mirror if tags there can move). test/unit/container.test.ts checks this
# file against what the agent loads and spawns, and builds the same tree without docker.

FROM node:20.20.2-bookworm AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      clang llvm libbpf-dev bpftool make g++ python3 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies first: this layer is reused until the lock file changes.
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
# The rest of the sources: .dockerignore lets only what the build needs through.
COPY . .
# eBPF objects go to dist/bpf (`make bpf`, against the build host's kernel BTF).
#
# No .git in the context: the commit `mirrorflow --version` reports comes as a build arg,
#   docker build --build-arg MIRRORFLOW_COMMIT=$(git rev-parse --short=12 HEAD) .
ARG MIRRORFLOW_COMMIT=unknown
RUN npx tsc -p tsconfig.json \
 && printf '{"commit":"%s"}\n' "$MIRRORFLOW_COMMIT" > dist/build-info.json \
 && make bpf \
 && DESTDIR=/out NODE=/usr/local/bin/node scripts/install.sh

FROM node:20.20.2-bookworm-slim
# libpcap0.8 (compiles the capture filters, through koffi), libbpf1 (the eBPF plane, through koffi), iproute2 (ip, tc:
# the eBPF plane's VXLAN devices and filters, the path MTU to each target), ethtool (the
# eBPF plane's segmenting veth pair: offloads off).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libpcap0.8 libbpf1 iproute2 ethtool \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/ /
# Runs as root, with only the capabilities the orchestrator grants (see
# deploy/kubernetes/daemonset.yaml: NET_RAW, NET_ADMIN, BPF, PERFMON; everything else
# dropped). A non-root user would need file capabilities on the node binary, which
# no_new_privs (allowPrivilegeEscalation: false) ignores, and could not pin objects in the
# root-owned /sys/fs/bpf.
USER root
ENV NODE_ENV=production
EXPOSE 9477
ENTRYPOINT ["/usr/bin/mirrorflow"]
CMD ["run", "--config", "/etc/mirrorflow/mirrorflow.yaml"]
