#!/usr/bin/env bash
# Installs the built agent on a host (`make install`), or removes it again.
#
#   scripts/install.sh [install]             agent, wrapper, unit, default config (kept if present)
#   scripts/install.sh uninstall [--purge]   remove what install put there; --purge also
#                                            removes /etc/mirrorflow and the flow logs
#
# Environment: DESTDIR (staging root for packages; systemctl is never called then),
# PREFIX (default /usr), NODE (the node binary the wrapper runs; default: the one on PATH).
# Layout: $PREFIX/lib/mirrorflow/{dist (with dist/bpf),node_modules,package.json}, $PREFIX/bin/mirrorflow,
# $PREFIX/lib/systemd/system/mirrorflow.service, /etc/mirrorflow/mirrorflow.yaml,
# $PREFIX/share/doc/mirrorflow/.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

DESTDIR=${DESTDIR:-}
PREFIX=${PREFIX:-/usr}
LIBDIR=$PREFIX/lib/mirrorflow
BINDIR=$PREFIX/bin
UNITDIR=$PREFIX/lib/systemd/system
DOCDIR=$PREFIX/share/doc/mirrorflow
CONFDIR=/etc/mirrorflow
LOGDIR=/var/log/mirrorflow
STATEDIR=/var/lib/mirrorflow

say() { echo "mirrorflow: $*"; }

# systemctl only on a live host install: not into a staging root, not without systemd as init.
systemd_live() { [[ -z $DESTDIR && -d /run/systemd/system ]] && command -v systemctl >/dev/null; }

install_agent() {
  [[ -f dist/agent/cli.js ]] || { echo "mirrorflow: dist/agent/cli.js is missing; run 'make build' first" >&2; exit 1; }
  local node=${NODE:-$(command -v node || true)}
  [[ -n $node ]] || { echo "mirrorflow: no node on PATH; set NODE=/path/to/node" >&2; exit 1; }

  # Stage the runtime tree next to the target, then swap it in, so a running agent keeps
  # a complete tree until the restart.
  local target=$DESTDIR$LIBDIR
  local stage
  mkdir -p "$(dirname "$target")"
  stage=$(mktemp -d "$target.new.XXXXXX")
  trap 'rm -rf "$stage"' EXIT
  cp -a dist package.json package-lock.json node_modules "$stage/"
  # Keeps the native modules exactly as built; only drops what is needed to build and test.
  (cd "$stage" && npm prune --omit=dev --no-audit --no-fund --loglevel=error)
  rm -f "$stage/node_modules/.mirrorflow-stamp"
  find "$stage/node_modules" -mindepth 1 -type d -empty -delete
  # The eBPF objects stay in dist/bpf; the kernel header they were compiled against does not.
  find "$stage/dist" \( -name '*.map' -o -name 'vmlinux.h' \) -delete
  chmod 0755 "$stage"
  rm -rf "$target.old"
  [[ -e $target ]] && mv "$target" "$target.old"
  mv "$stage" "$target"
  trap - EXIT
  rm -rf "$target.old"

  install -d -m 0755 "$DESTDIR$BINDIR" "$DESTDIR$UNITDIR" "$DESTDIR$DOCDIR"
  printf '#!/bin/sh\n# Installed by mirrorflow scripts/install.sh.\nexec %s %s/dist/agent/cli.js "$@"\n' \
    "$node" "$LIBDIR" >"$DESTDIR$BINDIR/mirrorflow.tmp"
  chmod 0755 "$DESTDIR$BINDIR/mirrorflow.tmp"
  mv "$DESTDIR$BINDIR/mirrorflow.tmp" "$DESTDIR$BINDIR/mirrorflow"
  install -m 0644 systemd/mirrorflow.service "$DESTDIR$UNITDIR/mirrorflow.service"
  install -m 0644 docs/operations.md "$DESTDIR$DOCDIR/operations.md"

  install -d -m 0700 "$DESTDIR$CONFDIR"
  if [[ -e $DESTDIR$CONFDIR/mirrorflow.yaml ]]; then
    say "kept the existing $CONFDIR/mirrorflow.yaml"
  else
    install -m 0600 systemd/mirrorflow.yaml "$DESTDIR$CONFDIR/mirrorflow.yaml"
  fi

  if systemd_live; then
    systemctl daemon-reload
    say "installed; edit $CONFDIR/mirrorflow.yaml, then: systemctl enable --now mirrorflow"
  else
    say "installed under ${DESTDIR:-/}"
  fi
}

uninstall_agent() {
  local purge=${1:-}
  if systemd_live && systemctl list-unit-files mirrorflow.service >/dev/null 2>&1; then
    systemctl disable --now mirrorflow.service 2>/dev/null || true
  fi
  rm -rf "$DESTDIR$LIBDIR" "$DESTDIR$DOCDIR"
  rm -f "$DESTDIR$BINDIR/mirrorflow" "$DESTDIR$UNITDIR/mirrorflow.service"
  if [[ $purge == --purge ]]; then
    rm -rf "$DESTDIR$CONFDIR" "$DESTDIR$LOGDIR" "$DESTDIR$STATEDIR"
  else
    say "kept $CONFDIR and $LOGDIR (uninstall --purge removes them)"
  fi
  if systemd_live; then systemctl daemon-reload; fi
  say "removed"
}

case ${1:-install} in
  install) install_agent ;;
  uninstall) uninstall_agent "${2:-}" ;;
  *) echo "usage: $0 [install | uninstall [--purge]]" >&2; exit 2 ;;
esac
