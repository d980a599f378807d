#!/usr/bin/env bash
# test-tiers.sh PYTHON [PYTEST_ARGS...]: `make test`. Runs pytest over tests/ (unit, http,
# cluster, ...), then the kind tier (scripts/kind/e2e-tier.sh: skipped, with the reason, where
# Docker cannot run), prints which tiers ran, and fails when any tier failed.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${1:?python}; shift
export TIER_RESULT; TIER_RESULT=$(mktemp)
t0=$(date +%s)
"$PY" -m pytest "$@"; rc1=$?
t1=$(( $(date +%s) - t0 ))
scripts/kind/e2e-tier.sh "$PY" "$@"; rc2=$?
case $rc1 in
  0) s1="passed" ;; 5) s1="no tests collected" ;; *) s1="FAILED (pytest exit $rc1)" ;;
esac
echo
echo "== test tiers =="
echo "tests/ (unit, http, cluster): $s1 in ${t1} s"
cat "$TIER_RESULT" 2>/dev/null || echo "e2e (kind): FAILED (no result)"
rm -f "$TIER_RESULT"
[ $rc1 -eq 0 ] && [ $rc2 -eq 0 ]
