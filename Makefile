# mirrorflow — every entry point a user or CI needs. `make lab` and `make test` install
# what is missing (Debian packages, npm modules) before they build.
SHELL := /bin/bash
NODE_STAMP := node_modules/.mirrorflow-stamp

.PHONY: all deps bpf build compile test lab bench clean install uninstall soak
PREFIX ?= /usr

all: build

# Build and test tools (tshark, iperf3, trafgen, promtool, ...).
deps: $(NODE_STAMP)
	@scripts/install-deps.sh

# npm ci again whenever the lock file changes; native modules (raw-socket, koffi) are
# built by their install scripts, approved in package.json "allowScripts". The dev
# modules (tsc) build the tree; scripts/install.sh installs the runtime ones only.
$(NODE_STAMP): package.json package-lock.json
	@scripts/install-deps.sh --build
	npm ci --no-audit --no-fund
	@touch $@

# The eBPF data plane: every bpf/*.bpf.c becomes dist/bpf/*.bpf.o (clang -target bpf),
# against the running kernel's BTF (dist/bpf/vmlinux.h, generated, not kept in git).
BPF_SRC := $(wildcard bpf/*.bpf.c)
BPF_OBJ := $(patsubst bpf/%.bpf.c,dist/bpf/%.bpf.o,$(BPF_SRC))
BPF_ARCH := $(subst x86_64,x86,$(subst aarch64,arm64,$(shell uname -m)))
BPF_CFLAGS := -O2 -g -Wall -Werror -target bpf -D__TARGET_ARCH_$(BPF_ARCH) -Idist/bpf

dist/bpf/vmlinux.h:
	@mkdir -p dist/bpf
	bpftool btf dump file /sys/kernel/btf/vmlinux format c > $@.tmp && mv $@.tmp $@

dist/bpf/%.bpf.o: bpf/%.bpf.c $(wildcard bpf/*.h) dist/bpf/vmlinux.h
	clang $(BPF_CFLAGS) -c $< -o $@

bpf: $(BPF_OBJ)

build: deps compile

# The agent itself: what `make install` needs, without the test tools.
compile: $(NODE_STAMP) $(BPF_OBJ)
	npx tsc -p tsconfig.json
	@scripts/build-info.sh

# The tests and the bench are type-checked too (strict, as the agent), before anything runs.
test: build
	npx tsc -p test/tsconfig.json
	npx tsc -p bench/tsconfig.json --noEmit
	npx vitest run

lab: build
	node dist/agent/cli.js lab

# The eBPF rule evaluation in BPF_PROG_TEST_RUN; zero-loss rates per plane and frame size
# against the anchors, the sender's throughput and the agent's memory with 10..100k flows,
# checked against issue 6's targets (BENCH_QUICK=1: a few minutes); then the per-packet
# micro-benchmarks; then `flows query` against jq over FLOWS_BENCH_RECORDS flow log
# records (default 1 million; issue 18's figure is 10 million, about 4 GB and half an hour of jq).
bench: build
	npx tsc -p bench/tsconfig.json
	node dist/bench/ebpf-rules.js
	node dist/bench/kernel-flows.js
	node dist/bench/run.js
	npx vitest bench --run bench/micro
	node dist/bench/flows-query.js

# Issue 7's overload soak: twice the zero-loss rate for a minute (make test runs 10 s), and
# issue 13's daemon soak: 200 reloads, 50 link flaps, 100 control edits under a sequenced
# stream (make test runs 30, 10, 20).
soak: build
	OVERLOAD_SECONDS=60 npx vitest run test/e2e/faults.e2e.test.ts -t overload
	SOAK_RELOADS=200 SOAK_FLAPS=50 SOAK_EDITS=100 npx vitest run test/e2e/soak.e2e.test.ts

clean:
	rm -rf dist node_modules

# Installs the agent with its runtime node modules only (npm prune --omit=dev on the
# installed copy), man page, bash completion, docs, systemd unit and a default config
# (kept if present); DESTDIR stages it for a package. Builds first, with the build tools
# only (never the test tools of `make deps`).
install: compile
	DESTDIR=$(DESTDIR) PREFIX=$(PREFIX) scripts/install.sh install

uninstall:
	DESTDIR=$(DESTDIR) PREFIX=$(PREFIX) scripts/install.sh uninstall
