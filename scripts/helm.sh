#!/usr/bin/env bash
# helm.sh [ARGS...]: run the project's pinned helm, building it first when it is missing.
#
# helm comes from the Go module proxy (`go install helm.sh/helm/v4/cmd/helm@$HELM_VERSION`),
# like the kind test bed's binaries, into a folder OUTSIDE the clone behind a version stamp:
#   $DISTCACHE_DEV_CACHE/bin/helm-$HELM_VERSION/helm   (complete when .done exists)
# so a fresh clone reuses it and a pin change builds a new folder. Cold: a few minutes on
# 2 cores; warm: nothing to do.
#   scripts/helm.sh --path     print the binary's path (building it if needed), run nothing
#   scripts/helm.sh lint charts/distcache
set -euo pipefail
HELM_VERSION=${HELM_VERSION:-v4.3.2}
. "$(dirname "${BASH_SOURCE[0]}")/devenv.sh"
DIR=$DISTCACHE_DEV_CACHE/bin/helm-$HELM_VERSION
HELM=$DIR/helm

log() { printf '== [%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

ensure_helm() {
  [ -e "$DIR/.done" ] && [ -x "$HELM" ] && return
  export PATH=$PATH:/usr/local/go/bin:${GOPATH:-$HOME/go}/bin
  export GOTOOLCHAIN=${GOTOOLCHAIN:-local}
  export GOFLAGS="${GOFLAGS:--buildvcs=false}"
  command -v go >/dev/null || die "helm $HELM_VERSION is not built and the Go toolchain is missing (go >= 1.24 on PATH builds it)"
  mkdir -p "$DIR"
  # Two runs at once (two make targets, CI) wait for each other instead of building twice.
  exec {lock}>"$DIR.lock"
  flock "$lock"
  if [ ! -e "$DIR/.done" ]; then
    log "building helm $HELM_VERSION from the Go module proxy into $DIR"
    # helm's own version string: its Makefile sets it with -ldflags, `go install` does not.
    GOBIN=$DIR nice -n 19 go install -trimpath \
      -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=$HELM_VERSION" \
      "helm.sh/helm/v4/cmd/helm@$HELM_VERSION" >&2
    "$HELM" version >&2
    { go version; date -u +%FT%TZ; } > "$DIR/.done"
  fi
  flock -u "$lock"
}

ensure_helm
if [ "${1:-}" = --path ]; then echo "$HELM"; exit 0; fi
exec "$HELM" "$@"
