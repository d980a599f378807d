#!/usr/bin/env bash
# helm.sh [ARGS...]: run the project's pinned helm, building it first when it is missing.
#
# helm comes from the Go module proxy (`go install helm.sh/helm/v4/cmd/helm@$HELM_VERSION`),
# like the kind test bed's binaries, into $DISTCACHE_DEV_CACHE/bin/helm-$HELM_VERSION/helm
# (scripts/gotool.sh). Cold: a few minutes on 2 cores; warm: nothing to do.
#   scripts/helm.sh --path     print the binary's path (building it if needed), run nothing
#   scripts/helm.sh lint charts/distcache
set -euo pipefail
HELM_VERSION=${HELM_VERSION:-v4.3.2}
. "$(dirname "${BASH_SOURCE[0]}")/gotool.sh"

gotool_ensure helm "$HELM_VERSION" helm.sh/helm/v4/cmd/helm \
  helm.sh/helm/v4/internal/version.version 1.24
if [ "${1:-}" = --path ]; then echo "$GOTOOL"; exit 0; fi
exec "$GOTOOL" "$@"
