#!/usr/bin/env bash
# images.sh [base|node|operator|client|all]: build the project's container images.
#   base      distcache/python-base:<rev>: Debian bookworm + python3 (3.11), debootstrapped and
#             `docker import`ed; for machines that cannot pull python:3.11-slim.
#   node      distcache/node:<version>      (Dockerfile, target node)
#   operator  distcache/operator:<version>  (Dockerfile, target operator)
#   client    distcache/client:<version>    (Dockerfile, target client: the node's venv and
#             redis-py, the e2e tier's Redis-protocol load pod; `all` builds it too)
# <version> is the project version in pyproject.toml. The base is python:3.11-slim when that
# image is present locally (or PYTHON_IMAGE=... names one), else the local base (built if missing).
# When containers cannot reach PyPI (a proxy with its own certificate, or no network), the
# project and its dependencies are built as wheels on the host (cached in $DISTCACHE_DEV_CACHE/wheels)
# and installed inside the build with --no-index.
set -euo pipefail
. "$(dirname "$0")/kind/common.sh"
. "$KIND_SCRIPTS/rootfs.sh"
cd "$REPO_ROOT"

BASE_REV=bookworm-r1                       # bump when the base's package list changes
LOCAL_BASE=distcache/python-base:$BASE_REV
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml | head -1)
[ -n "$VERSION" ] || die "no version in pyproject.toml"
NODE_IMAGE=${NODE_IMAGE:-distcache/node:$VERSION}
OPERATOR_IMAGE=${OPERATOR_IMAGE:-distcache/operator:$VERSION}
CLIENT_IMAGE=${CLIENT_IMAGE:-distcache/client:$VERSION}
WHEEL_CACHE=$DISTCACHE_DEV_CACHE/wheels
WHEELS=${WHEELS:-auto}

docker info >/dev/null 2>&1 || die "Docker engine not reachable (start dockerd: scripts/kind/ensure-docker.sh)"
take_lock images

build_base() {
  build_rootfs_image "$LOCAL_BASE" "python3 python3-venv passwd ca-certificates"
}

pick_base() {
  if [ -n "${PYTHON_IMAGE:-}" ]; then echo "$PYTHON_IMAGE"
  elif docker image inspect python:3.11-slim >/dev/null 2>&1; then echo python:3.11-slim
  else build_base; echo "$LOCAL_BASE"; fi
}

# Wheels for an offline install, when a container on BASE cannot reach PyPI. The extras decide
# which dependencies are included (operator: kopf + kubernetes).
prepare_wheels() {
  local base=$1
  if [ "$WHEELS" = auto ]; then
    if docker run --rm --network bridge "$base" python3 -c \
        'import urllib.request; urllib.request.urlopen("https://pypi.org/simple/pip/", timeout=5)' >/dev/null 2>&1; then
      WHEELS=no
    else
      WHEELS=yes
    fi
    log "containers reach PyPI: $([ "$WHEELS" = no ] && echo yes || echo 'no: installing from host-built wheels')"
  fi
  rm -rf .build/wheels
  [ "$WHEELS" = yes ] || return 0
  local py=$REPO_ROOT/.venv/bin/python; [ -x "$py" ] || py=python3
  local want have
  want=$(docker run --rm "$base" python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  have=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  [ "$want" = "$have" ] || die "host python $have != image python $want: host-built wheels would not fit"
  mkdir -p "$WHEEL_CACHE/py$want" .build/wheels
  # The project's own wheel always from the current sources; dependencies come from the cache.
  rm -f "$WHEEL_CACHE/py$want"/distcache-*.whl
  # redis: the client image's. async-timeout: redis-py needs it below Python 3.11.3 (Debian
  # bookworm's 3.11.2), which a newer host's pip leaves out when it evaluates the marker.
  SOURCE_DATE_EPOCH=315532800 "${NICE[@]}" "$py" -m pip wheel -q --find-links "$WHEEL_CACHE/py$want" \
    '.[operator]' 'redis>=5' 'async-timeout>=4.0.3' -w "$WHEEL_CACHE/py$want" 2> >(grep -v -e '^ ' -e '^$' >&2)
  cp -l "$WHEEL_CACHE/py$want"/*.whl .build/wheels/ 2>/dev/null || cp "$WHEEL_CACHE/py$want"/*.whl .build/wheels/
}

build_image() {   # build_image TARGET IMAGE BASE [EXTRAS]
  local target=$1 image=$2 base=$3 extras=${4:-}
  local args=(--target "$target" --build-arg "PYTHON_IMAGE=$base" --build-arg "EXTRAS=$extras"
              --label "org.opencontainers.image.version=$VERSION")
  local rev; rev=$(git rev-parse HEAD 2>/dev/null || true)
  [ -z "$rev" ] || args+=(--label "org.opencontainers.image.revision=$rev")
  [ "$WHEELS" != yes ] || args+=(--build-arg PIP_FIND_LINKS=/wheels)
  log "docker build --target $target -> $image (base $base)"
  legacy_build -q "${args[@]}" -t "$image" . >/dev/null
  docker image ls "$image" --format '   {{.Repository}}:{{.Tag}} {{.ID}} {{.Size}}' >&2
  # The builds this one replaced, now untagged (only ours: filtered by their OCI title).
  docker image prune -f --filter "label=org.opencontainers.image.title=$(basename "${image%%:*}" | sed 's/^/distcache-/')" >/dev/null 2>&1 || true
}

what=${1:-all}
case $what in
  base) build_base ;;
  node|operator|client|all)
    base=$(pick_base)
    prepare_wheels "$base"
    case $what in node|all) build_image node "$NODE_IMAGE" "$base" ;; esac
    case $what in operator|all) build_image operator "$OPERATOR_IMAGE" "$base" '[operator]' ;; esac
    case $what in client|all) build_image client "$CLIENT_IMAGE" "$base" ;; esac
    ;;
  *) die "usage: images.sh [base|node|operator|client|all]" ;;
esac
