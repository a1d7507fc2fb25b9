#!/usr/bin/env bash
# Installs the built agent on a host (`make install`), or removes it again.
#
#   scripts/install.sh [install]             agent (runtime node modules only), wrapper, man page,
#                                            bash completion, unit, docs, default config (kept if present)
#   scripts/install.sh uninstall [--purge]   remove what install put there; --purge also
#                                            removes /etc/mirrorflow and the flow logs
#
# Environment: DESTDIR (staging root for packages; systemctl is never called then),
# PREFIX (default /usr), NODE (the node binary the wrapper runs; default: the one on PATH).
# Layout: $PREFIX/lib/mirrorflow/{dist (with dist/bpf),node_modules,package.json}, $PREFIX/bin/mirrorflow,
# $PREFIX/lib/systemd/system/mirrorflow.service, /etc/mirrorflow/mirrorflow.yaml,
# $PREFIX/share/doc/mirrorflow/{README.md,docs/*.md} (as in the source tree, so links resolve),
# $PREFIX/share/man/man1/mirrorflow.1, $PREFIX/share/bash-completion/completions/mirrorflow.
# It needs only what `make install` built (dist/, node_modules/); it runs no package manager
# but `npm prune --omit=dev` on its own copy.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

DESTDIR=${DESTDIR:-}
PREFIX=${PREFIX:-/usr}
LIBDIR=$PREFIX/lib/mirrorflow
BINDIR=$PREFIX/bin
UNITDIR=$PREFIX/lib/systemd/system
DOCDIR=$PREFIX/share/doc/mirrorflow
MANDIR=$PREFIX/share/man/man1
COMPLETIONDIR=$PREFIX/share/bash-completion/completions
CONFDIR=/etc/mirrorflow
LOGDIR=/var/log/mirrorflow
STATEDIR=/var/lib/mirrorflow

say() { echo "mirrorflow: $*"; }

# The man page, unit and default config name /usr/bin/mirrorflow and /usr/share/doc/mirrorflow:
# a file with those put where PREFIX puts them.
at_prefix() { sed -e "s|/usr/share/doc/mirrorflow|$DOCDIR|g" -e "s|/usr/bin/mirrorflow|$BINDIR/mirrorflow|g" "$1"; }

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

  install -d -m 0755 "$DESTDIR$BINDIR" "$DESTDIR$UNITDIR" "$DESTDIR$DOCDIR/docs" "$DESTDIR$MANDIR" "$DESTDIR$COMPLETIONDIR"
  printf '#!/bin/sh\n# Installed by mirrorflow scripts/install.sh.\nexec %s %s/dist/agent/cli.js "$@"\n' \
    "$node" "$LIBDIR" >"$DESTDIR$BINDIR/mirrorflow.tmp"
  chmod 0755 "$DESTDIR$BINDIR/mirrorflow.tmp"
  mv "$DESTDIR$BINDIR/mirrorflow.tmp" "$DESTDIR$BINDIR/mirrorflow"
  at_prefix systemd/mirrorflow.service >"$DESTDIR$UNITDIR/mirrorflow.service" && chmod 0644 "$DESTDIR$UNITDIR/mirrorflow.service"
  # Every document, so the links between them (and the config's pointer to config.md) resolve.
  install -m 0644 README.md "$DESTDIR$DOCDIR/"
  install -m 0644 docs/*.md "$DESTDIR$DOCDIR/docs/"
  at_prefix docs/mirrorflow.1 >"$DESTDIR$MANDIR/mirrorflow.1" && chmod 0644 "$DESTDIR$MANDIR/mirrorflow.1"
  install -m 0644 scripts/mirrorflow.bash-completion "$DESTDIR$COMPLETIONDIR/mirrorflow"

  install -d -m 0700 "$DESTDIR$CONFDIR"
  if [[ -e $DESTDIR$CONFDIR/mirrorflow.yaml ]]; then
    say "kept the existing $CONFDIR/mirrorflow.yaml"
  else
    (umask 077 && at_prefix systemd/mirrorflow.yaml >"$DESTDIR$CONFDIR/mirrorflow.yaml")
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
  rm -f "$DESTDIR$BINDIR/mirrorflow" "$DESTDIR$UNITDIR/mirrorflow.service" "$DESTDIR$MANDIR/mirrorflow.1" \
    "$DESTDIR$COMPLETIONDIR/mirrorflow"
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
