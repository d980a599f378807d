#!/usr/bin/env bash
# kube-score.sh [ARGS...]: run the project's pinned kube-score, building it first when missing.
#
# kube-score lints Kubernetes objects against common practice (probes, resources, a matching
# NetworkPolicy, anti-affinity, ...); the chart tier runs it on what the operator builds
# (tests/unit/chart/test_kube_score.py). It comes from the Go module proxy
# (`go install github.com/zegl/kube-score/cmd/kube-score@$KUBE_SCORE_VERSION`), as helm does,
# into $DISTCACHE_DEV_CACHE/bin/kube-score-$KUBE_SCORE_VERSION/kube-score (scripts/gotool.sh).
# Cold: a minute or two on 2 cores; warm: nothing to do.
#   scripts/kube-score.sh --path             print the binary's path (building it if needed)
#   scripts/kube-score.sh score objects.yaml
set -euo pipefail
KUBE_SCORE_VERSION=${KUBE_SCORE_VERSION:-v1.20.0}
. "$(dirname "${BASH_SOURCE[0]}")/gotool.sh"

# -mod=mod: the module is built from its own go.mod/go.sum, never a workspace's.
gotool_ensure kube-score "$KUBE_SCORE_VERSION" github.com/zegl/kube-score/cmd/kube-score \
  main.version 1.23 "-buildvcs=false -mod=mod"
if [ "${1:-}" = --path ]; then echo "$GOTOOL"; exit 0; fi
exec "$GOTOOL" "$@"
