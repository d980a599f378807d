#!/usr/bin/env bash
# kube-score.sh [ARGS...]: run the project's pinned kube-score, building it first when missing.
#
# kube-score lints Kubernetes objects against common practice (probes, resources, a matching
# NetworkPolicy, anti-affinity, ...); the chart tier runs it on what the operator builds
# (tests/unit/chart/test_kube_score.py). It comes from the Go module proxy
# (`go install github.com/zegl/kube-score/cmd/kube-score@$KUBE_SCORE_VERSION`), as helm does
# (scripts/helm.sh), into a folder OUTSIDE the clone behind a version stamp:
#   $DISTCACHE_DEV_CACHE/bin/kube-score-$KUBE_SCORE_VERSION/kube-score  (complete when .done exists)
# so a fresh clone reuses it and a pin change builds a new folder. Cold: a minute or two on
# 2 cores; warm: nothing to do.
#   scripts/kube-score.sh --path             print the binary's path (building it if needed)
#   scripts/kube-score.sh score objects.yaml
set -euo pipefail
KUBE_SCORE_VERSION=${KUBE_SCORE_VERSION:-v1.20.0}
. "$(dirname "${BASH_SOURCE[0]}")/devenv.sh"
DIR=$DISTCACHE_DEV_CACHE/bin/kube-score-$KUBE_SCORE_VERSION
KUBE_SCORE=$DIR/kube-score

log() { printf '== [%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

ensure_kube_score() {
  [ -e "$DIR/.done" ] && [ -x "$KUBE_SCORE" ] && return
  export PATH=$PATH:/usr/local/go/bin:${GOPATH:-$HOME/go}/bin
  export GOTOOLCHAIN=${GOTOOLCHAIN:-local}
  # -mod=mod: the module is built from its own go.mod/go.sum, never a workspace's.
  export GOFLAGS="${GOFLAGS:--buildvcs=false -mod=mod}"
  command -v go >/dev/null || die "kube-score $KUBE_SCORE_VERSION is not built and the Go toolchain is missing (go >= 1.23 on PATH builds it)"
  mkdir -p "$DIR"
  # Two runs at once (two make targets, CI) wait for each other instead of building twice.
  exec {lock}>"$DIR.lock"
  flock "$lock"
  if [ ! -e "$DIR/.done" ]; then
    log "building kube-score $KUBE_SCORE_VERSION from the Go module proxy into $DIR"
    # kube-score's own version string: goreleaser sets it with -ldflags, `go install` does not.
    GOBIN=$DIR nice -n 19 go install -trimpath \
      -ldflags "-s -w -X main.version=$KUBE_SCORE_VERSION" \
      "github.com/zegl/kube-score/cmd/kube-score@$KUBE_SCORE_VERSION" >&2
    "$KUBE_SCORE" version >&2
    { go version; date -u +%FT%TZ; } > "$DIR/.done"
  fi
  flock -u "$lock"
}

ensure_kube_score
if [ "${1:-}" = --path ]; then echo "$KUBE_SCORE"; exit 0; fi
exec "$KUBE_SCORE" "$@"
