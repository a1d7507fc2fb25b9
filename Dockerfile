# syntax=docker/dockerfile:1
# mirrorflow agent image: `docker build -t mirrorflow:0.1.0 .`
#
# The build stage compiles the TypeScript, the native module (raw-socket) and the
# eBPF objects, then lays the agent out exactly as `make install` does on a host
# (scripts/install.sh with DESTDIR). The runtime stage gets that tree and the shared
# libraries only: no compiler, no npm dev dependencies.

FROM node:20-bookworm AS build
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
RUN npx tsc -p tsconfig.json \
 && make bpf \
 && DESTDIR=/out NODE=/usr/local/bin/node scripts/install.sh

FROM node:20-bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libpcap0.8 libbpf1 \
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
