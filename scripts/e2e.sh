#!/usr/bin/env bash
# e2e.sh PYTHON [PYTEST_ARGS...]: `make e2e`, the e2e suite (e2e/) on a Kubernetes cluster.
#
# KUBECONFIG unset: the kind tier as `make test` runs it (scripts/tiers.py kind): a fresh
#   offline kind cluster brought up by `make kind-up` (images built and loaded, the operator
#   installed with the Helm chart), pytest e2e/, the cluster deleted (KEEP_CLUSTER=1 keeps it).
# KUBECONFIG set: that cluster, left as it was found. e2e/restore.py records its namespaces,
#   CRDs, cluster roles and bindings and Helm releases; the operator is installed with the
#   Helm chart (scripts/kind/install-operator.sh) only when none runs; pytest e2e/; then every
#   one of those objects that was not there before is deleted, and the script fails if the
#   cluster still differs. The cluster must be able to run distcache/node and
#   distcache/operator images of this version (on kind: `kind load docker-image`).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${1:?python}; shift
if [ -z "${KUBECONFIG:-}" ]; then
  exec "$PY" scripts/tiers.py kind -- "$@"
fi
KUBECTL=${KUBECTL:-kubectl}
t0=$(date +%s)
snap=$(mktemp /tmp/distcache-e2e-snapshot.XXXXXX.json)
trap 'rm -f "$snap"' EXIT
echo "e2e on the cluster of KUBECONFIG=$KUBECONFIG ($("$KUBECTL" config current-context)), to be left as found"
"$PY" e2e/restore.py snapshot "$snap" || { echo "e2e: cannot read the cluster" >&2; exit 1; }
if ! "$KUBECTL" -n distcache-system get deployment distcache-operator >/dev/null 2>&1; then
  echo "no DistCache operator on the cluster: installing it with the Helm chart"
  DISTCACHE_DEV_INSTALL=helm KUBECTL=$KUBECTL scripts/kind/install-operator.sh || rc=1
fi
if [ -z "${rc:-}" ] && "$KUBECTL" config current-context | grep -q '^kind-'; then
  # A kind cluster can take images from this machine: build cert-manager (cached; cold ~4 min)
  # so e2e/test_operator_certmanager.py runs here too (it loads the image itself).
  scripts/cert-manager.sh image >/dev/null \
    || echo "cert-manager not built: e2e/test_operator_certmanager.py skips"
fi
if [ -z "${rc:-}" ]; then
  "$PY" -m pytest e2e -m "e2e or docker" --durations=15 "$@"; rc=$?
fi
echo "e2e: putting the cluster back as it was found"
"$PY" e2e/restore.py restore "$snap" || rc=${rc/#0/1}
echo "e2e: pytest exit $rc, $(( $(date +%s) - t0 )) s in all"
exit "$rc"
