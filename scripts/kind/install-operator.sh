#!/usr/bin/env bash
# install-operator.sh: the DistCache CRD, the operator's RBAC and its Deployment on the cluster
# of $KUBECONFIG (make kind-up calls it after loading the images). Plain manifests from
# manifests/ (rendered from charts/distcache by `make manifests`); the operator runs from
# distcache/operator:<version> as its own ServiceAccount.
# When the loaded operator image changed (same tag, new build), the Deployment rolls.
set -euo pipefail
. "$(dirname "$0")/common.sh"
KUBECTL=${KUBECTL:-$BIN_CACHE/kubernetes-$K8S_VERSION/kubectl}
[ -x "$KUBECTL" ] || KUBECTL=kubectl
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$REPO_ROOT/pyproject.toml" | head -1)
IMAGE=${OPERATOR_IMAGE:-distcache/operator:$VERSION}

log "installing the DistCache CRD, RBAC and operator ($IMAGE)"
"$KUBECTL" apply -f "$REPO_ROOT/manifests/crds/" >&2
"$KUBECTL" wait --for=condition=Established crd/distcaches.distcache.io --timeout=60s >&2
# manifests/operator/ is rendered from charts/distcache (make manifests), whose Deployment
# selector also names the instance; a selector is immutable, so a Deployment created from the
# older hand-written manifests (selector without it) is replaced once.
sel=$("$KUBECTL" -n distcache-system get deployment distcache-operator --ignore-not-found \
  -o jsonpath='{.spec.selector.matchLabels}' 2>/dev/null || true)
if [ -n "$sel" ] && [[ $sel != *app.kubernetes.io/instance* ]]; then
  log "replacing the operator Deployment (its selector predates the chart)"
  "$KUBECTL" -n distcache-system delete deployment distcache-operator --cascade=foreground \
    --wait=true --timeout=120s >&2  # its pod gone first: never two operators at once
fi
"$KUBECTL" apply -f "$REPO_ROOT/manifests/operator/" >&2
image_id=$(docker image inspect -f '{{.Id}}' "$IMAGE" 2>/dev/null | cut -c8-19 || true)
if [ -n "$image_id" ]; then
  # A new build under the same tag: a changed template annotation rolls the Deployment.
  "$KUBECTL" -n distcache-system patch deployment distcache-operator --type merge -p \
    "{\"spec\":{\"template\":{\"metadata\":{\"annotations\":{\"distcache.io/image-id\":\"$image_id\"}}}}}" >&2
fi
"$KUBECTL" -n distcache-system rollout status deployment/distcache-operator --timeout=180s >&2
