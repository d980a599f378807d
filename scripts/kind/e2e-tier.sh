#!/usr/bin/env bash
# e2e-tier.sh PYTHON [PYTEST_ARGS...]: the kind tier of `make test`.
#   preflight -> kind-up (builds what is missing) -> pytest e2e/ -> kind-down.
# Where the machine cannot run it (no Docker engine, ...), or SKIP_KIND=1, it is skipped with
# the reason and exits 0. The outcome line goes to $TIER_RESULT (if set) for the summary.
# KEEP_CLUSTER=1 leaves the cluster running afterwards.
set -uo pipefail
. "$(dirname "$0")/common.sh"
PY=${1:?python}; shift
# Its own cluster: `make test` never touches the one `make kind-up` started for a person.
export KIND_CLUSTER_NAME=${E2E_CLUSTER_NAME:-distcache-test}
result() { echo "$*"; [ -z "${TIER_RESULT:-}" ] || echo "$*" > "$TIER_RESULT"; }
t0=$(date +%s)

if [ "${SKIP_KIND:-0}" = 1 ]; then result "e2e (kind): skipped: SKIP_KIND=1"; exit 0; fi
pre=$("$KIND_SCRIPTS/preflight.sh" --start-docker 2>&1); prc=$?
echo "$pre"
if [ $prc -ne 0 ]; then
  result "e2e (kind): skipped: $(echo "$pre" | sed -n 's/^kind tier unavailable: //p')"
  exit 0
fi

take_lock e2e-tier
if [ "${CI:-}" = true ]; then
  # CI runs on a developer's machine after their session: kind clusters they left (now
  # restarted with dockerd) would only compete for the 2 cores. Stopped, not deleted.
  others=$(docker ps --filter label=io.x-k8s.kind.cluster --format '{{.Names}}' | grep -v "^$KIND_CLUSTER_NAME-" || true)
  if [ -n "$others" ]; then
    log "CI: stopping other kind clusters' nodes: $(echo $others)"
    docker stop $others >/dev/null || true
  fi
fi
# Always a fresh cluster: one left from an earlier run may predate a dockerd restart.
"$KIND_SCRIPTS/kind-down.sh" >/dev/null 2>&1
up=$("$KIND_SCRIPTS/kind-up.sh"); urc=$?
if [ $urc -ne 0 ]; then
  [ "${KEEP_CLUSTER:-0}" = 1 ] || "$KIND_SCRIPTS/kind-down.sh" >/dev/null 2>&1
  result "e2e (kind): FAILED: make kind-up failed (exit $urc)"
  exit 1
fi
t_up=$(( $(date +%s) - t0 ))
eval "$(echo "$up" | tail -1)"   # export KUBECONFIG=... PATH=...
# A real cert-manager for e2e/test_operator_certmanager.py (scripts/cert-manager.sh: Go module
# proxy, cached; cold ~4 min on 2 cores with Go's caches warm) and the Prometheus Operator's CRDs.
"$REPO_ROOT/scripts/cert-manager.sh" image >/dev/null \
  || log "cert-manager not built: e2e/test_operator_certmanager.py skips"

"$PY" -m pytest e2e -m "e2e or docker" --durations=15 "$@"; rc=$?
t_all=$(( $(date +%s) - t0 ))
if [ "${KEEP_CLUSTER:-0}" != 1 ]; then "$KIND_SCRIPTS/kind-down.sh" || rc=${rc:-1}; fi
if [ $rc -eq 0 ]; then
  result "e2e (kind): passed (cluster up in ${t_up} s, tier ${t_all} s in all)"
else
  result "e2e (kind): FAILED (pytest exit $rc; cluster up in ${t_up} s)"
fi
exit $rc
