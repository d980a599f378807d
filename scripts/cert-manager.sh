#!/usr/bin/env bash
# cert-manager.sh [build|image|crds|name]: a real cert-manager controller for the e2e tier,
# built offline from the Go module proxy (nothing pulled from an image registry).
#
#   build   the controller binary and cert-manager's CRDs (deploy/crds of the same module) into
#           $DISTCACHE_DEV_CACHE/bin/cert-manager-<version>-<stamp>/ (complete when .done exists)
#   image   also the image distcache/cert-manager-controller:<version>-<stamp>: the static
#           binary alone, `docker import`ed (no base image needed); prints its name
#   crds    print the folder holding the CRDs (building if needed)
#   name    print the image name, build nothing
#
# Upstream's main package (cmd/controller) is a separate module the proxy does not serve, so
# scripts/cert-manager/main.go wires the same library code (the Certificate controllers and
# the CA and SelfSigned issuers; no ACME/Vault/Venafi, no webhook, no leader election). The
# stamp hashes that file and this script. Cold: ~10 min on 2 cores (Go caches kept in
# ~/go/pkg/mod and ~/.cache/go-build); warm: nothing to do.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/kind/common.sh"
CM_VERSION=${CM_VERSION:-v1.19.1}
STAMP=$(inputs_stamp "$HERE/cert-manager/main.go" "$HERE/cert-manager.sh")
DIR=$DISTCACHE_DEV_CACHE/bin/cert-manager-$CM_VERSION-$STAMP
IMAGE=distcache/cert-manager-controller:$CM_VERSION-$STAMP

build() {
  [ -e "$DIR/.done" ] && return
  command -v go >/dev/null || die "Go toolchain missing (go >= 1.25 on PATH builds cert-manager)"
  mkdir -p "$DIR"
  exec {lock}>"$DIR.lock"
  flock "$lock"
  if [ ! -e "$DIR/.done" ]; then
    local work=$DISTCACHE_DEV_CACHE/work/cert-manager-$CM_VERSION
    rm -rf "$work"; mkdir -p "$work"
    # The module path sits under cert-manager's so that its internal/ packages may be imported.
    printf 'module github.com/cert-manager/cert-manager/controller-binary\n\ngo 1.25.0\n\nrequire github.com/cert-manager/cert-manager %s\n' \
      "$CM_VERSION" > "$work/go.mod"
    cp "$HERE/cert-manager/main.go" "$work/"
    log "building cert-manager $CM_VERSION controller from the Go module proxy into $DIR"
    (cd "$work" && "${NICE[@]}" go mod tidy >&2)
    (cd "$work" && CGO_ENABLED=0 "${NICE[@]}" go build -trimpath -ldflags "-s -w" -o "$DIR/controller" . >&2)
    local src
    src=$(go mod download -json "github.com/cert-manager/cert-manager@$CM_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
    mkdir -p "$DIR/crds"
    cp "$src"/deploy/crds/cert-manager.io_*.yaml "$DIR/crds/"
    chmod -R u+w "$DIR/crds"
    { go version; date -u +%FT%TZ; } > "$DIR/.done"
  fi
  flock -u "$lock"
}

image() {
  build
  docker image inspect "$IMAGE" >/dev/null 2>&1 && return
  local tmp; tmp=$(mktemp -d)
  mkdir -p "$tmp/tmp"; chmod 1777 "$tmp/tmp"
  cp "$DIR/controller" "$tmp/controller"
  log "docker import -> $IMAGE"
  tar -C "$tmp" -c . | docker import --change 'ENTRYPOINT ["/controller"]' \
    --change 'USER 65532:65532' - "$IMAGE" >/dev/null
  rm -rf "$tmp"
}

case ${1:-image} in
  build) build; echo "$DIR" ;;
  image) image; echo "$IMAGE" ;;
  crds) build; echo "$DIR/crds" ;;
  name) echo "$IMAGE" ;;
  *) die "usage: $0 [build|image|crds|name]" ;;
esac
