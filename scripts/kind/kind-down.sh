#!/usr/bin/env bash
# kind-down.sh: delete the kind cluster (images and build caches stay; dockerd keeps running).
set -euo pipefail
. "$(dirname "$0")/common.sh"
KIND=$BIN_CACHE/kind-$KIND_VERSION/kind
if [ ! -x "$KIND" ]; then log "kind not built: no cluster to delete"; exit 0; fi
if ! docker info >/dev/null 2>&1; then log "Docker engine not running: no cluster to delete"; exit 0; fi
"$KIND" delete cluster --name "$CLUSTER_NAME" --kubeconfig "$KUBECONFIG_PATH"
rm -f "$KUBECONFIG_PATH"
