#!/usr/bin/env bash
# prometheus-operator-crds.sh: the Prometheus Operator's CRDs (ServiceMonitor, PodMonitor,
# PrometheusRule, ...) from its Go module on the proxy (example/prometheus-operator-crd/),
# copied into $DISTCACHE_DEV_CACHE/crds/prometheus-operator-<version>/ (complete when .done
# exists). Prints that folder. The e2e tier applies them to show that the operator's
# ServiceMonitor is accepted by the real schema and selects the real pods.
set -euo pipefail
PROM_OPERATOR_VERSION=${PROM_OPERATOR_VERSION:-v0.85.0}
. "$(dirname "${BASH_SOURCE[0]}")/devenv.sh"
DIR=$DISTCACHE_DEV_CACHE/crds/prometheus-operator-$PROM_OPERATOR_VERSION
if [ ! -e "$DIR/.done" ]; then
  export PATH=$PATH:/usr/local/go/bin GOTOOLCHAIN=${GOTOOLCHAIN:-local}
  command -v go >/dev/null || { echo "error: Go toolchain missing (it fetches the CRDs from the module proxy)" >&2; exit 1; }
  src=$(cd /tmp && go mod download -json "github.com/prometheus-operator/prometheus-operator@$PROM_OPERATOR_VERSION" \
        | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [ -d "$src/example/prometheus-operator-crd" ] || { echo "error: no CRDs in $src" >&2; exit 1; }
  mkdir -p "$DIR"
  cp "$src"/example/prometheus-operator-crd/monitoring.coreos.com_*.yaml "$DIR/"
  chmod -R u+w "$DIR"
  date -u +%FT%TZ > "$DIR/.done"
fi
echo "$DIR"
