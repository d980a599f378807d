#!/usr/bin/env bash
# install-operator.sh: the DistCache CRDs, the operator's RBAC and its Deployment on the cluster
# of $KUBECONFIG (make kind-up calls it after loading the images), as its own ServiceAccount,
# from distcache/operator:<version>. When the loaded operator image changed (same tag, new
# build), the Deployment rolls.
#
# DISTCACHE_DEV_INSTALL=helm (default): `helm upgrade --install distcache charts/distcache` in
#   distcache-system (helm from scripts/helm.sh); objects an earlier plain-manifest install
#   created are taken over.
# DISTCACHE_DEV_INSTALL=manifests: `kubectl apply -f manifests/operator/`, the same objects rendered
#   from the chart by `make manifests`, without helm.
# Either way the CRDs come from charts/distcache/crds/ with kubectl apply (helm never upgrades
# a chart's crds/), and the namespace (Pod Security `restricted`) from manifests/operator/.
set -euo pipefail
. "$(dirname "$0")/common.sh"
KUBECTL=${KUBECTL:-$BIN_CACHE/kubernetes-$K8S_VERSION/kubectl}
[ -x "$KUBECTL" ] || KUBECTL=kubectl
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$REPO_ROOT/pyproject.toml" | head -1)
IMAGE=${OPERATOR_IMAGE:-distcache/operator:$VERSION}
MODE=${DISTCACHE_DEV_INSTALL:-helm}
NS=distcache-system

log "installing the DistCache CRDs, RBAC and operator ($IMAGE, with $MODE)"
"$KUBECTL" apply -f "$REPO_ROOT/charts/distcache/crds/" >&2
# kubectl wait fails at once (not waits) while a just-created CRD has no conditions yet.
for _ in $(seq 60); do
  [ "$("$KUBECTL" get crd/distcaches.distcache.io \
    -o jsonpath='{.status.conditions[?(@.type=="Established")].status}' 2>/dev/null)" = True ] && break
  sleep 1
done
"$KUBECTL" wait --for=condition=Established crd/distcaches.distcache.io --timeout=60s >&2
# The chart's Deployment selector also names the instance; a selector is immutable, so a
# Deployment created from the older hand-written manifests (selector without it) is replaced
# once, its pod gone first (never two operators at once).
sel=$("$KUBECTL" -n $NS get deployment distcache-operator --ignore-not-found \
  -o jsonpath='{.spec.selector.matchLabels}' 2>/dev/null || true)
if [ -n "$sel" ] && [[ $sel != *app.kubernetes.io/instance* ]]; then
  log "replacing the operator Deployment (its selector predates the chart)"
  "$KUBECTL" -n $NS delete deployment distcache-operator --cascade=foreground \
    --wait=true --timeout=120s >&2
fi
image_id=$(docker image inspect -f '{{.Id}}' "$IMAGE" 2>/dev/null | cut -c8-19 || true)
# The least time between the steps of a move to a new CA covers kubelet's Secret sync for
# clients outside the cache (default 90 s, for kubelets that sync every minute). The kind
# test bed's kubelet syncs every 10 s (scripts/kind/kind-config.yaml): 20 s is as safe there.
settle=""
if "$KUBECTL" config current-context 2>/dev/null | grep -q '^kind-'; then
  settle=${DISTCACHE_OPERATOR_TLS_SETTLE_SECONDS:-20}
fi

case $MODE in
  helm)
    HELM=$("$REPO_ROOT/scripts/helm.sh" --path)
    "$KUBECTL" apply -f "$REPO_ROOT/manifests/operator/00-namespace.yaml" >&2
    args=(--set "operator.image.repository=${IMAGE%:*}" --set "operator.image.tag=${IMAGE##*:}")
    # A new build under the same tag: a changed template annotation rolls the Deployment.
    [ -z "$image_id" ] || args+=(--set "operator.podAnnotations.distcache\.io/image-id=$image_id")
    [ -z "$settle" ] || args+=(--set "operator.extraEnv[0].name=DISTCACHE_OPERATOR_TLS_SETTLE_SECONDS"
                               --set-string "operator.extraEnv[0].value=$settle")
    "$HELM" upgrade --install distcache "$REPO_ROOT/charts/distcache" --namespace $NS \
      --skip-crds --take-ownership --force-conflicts "${args[@]}" \
      --wait --timeout 180s | sed '/^NOTES:/,$d' >&2  # the NOTES are for people: helm get notes
    ;;
  manifests)
    "$KUBECTL" apply -f "$REPO_ROOT/manifests/operator/" >&2
    [ -z "$settle" ] || "$KUBECTL" -n $NS set env deployment/distcache-operator \
      "DISTCACHE_OPERATOR_TLS_SETTLE_SECONDS=$settle" >&2
    if [ -n "$image_id" ]; then
      "$KUBECTL" -n $NS patch deployment distcache-operator --type merge -p \
        "{\"spec\":{\"template\":{\"metadata\":{\"annotations\":{\"distcache.io/image-id\":\"$image_id\"}}}}}" >&2
    fi
    ;;
  *) die "DISTCACHE_DEV_INSTALL must be helm or manifests, not $MODE" ;;
esac
"$KUBECTL" -n $NS rollout status deployment/distcache-operator --timeout=180s >&2
