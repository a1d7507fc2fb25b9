#!/usr/bin/env bash
# Writes dist/build-info.json: the git commit this tree was built from, which
# `mirrorflow --version` and the mirrorflow_build_info metric report next to the package
# version. Without git (a tarball, a container build context) the file says "unknown".
# The file is rewritten only when its content changes, so make does not rebuild needlessly.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

commit=unknown
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  commit=$(git rev-parse --short=12 HEAD)
  # Uncommitted changes to tracked files make the build something the commit does not name.
  git diff --quiet HEAD -- 2>/dev/null || commit+=-dirty
fi
mkdir -p dist
text="{\"commit\":\"$commit\"}"
[[ -f dist/build-info.json && $(<dist/build-info.json) == "$text" ]] || printf '%s\n' "$text" >dist/build-info.json
