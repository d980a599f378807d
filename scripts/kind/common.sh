# Shared settings for scripts/kind/*.sh (sourced, not run).
# Every build output lives OUTSIDE the clone, under $DISTCACHE_DEV_CACHE/kind, keyed by the pins in
# versions.env, so a fresh clone (CI) reuses what an earlier run built on the same machine.
KIND_SCRIPTS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$KIND_SCRIPTS/../.." && pwd)
# shellcheck source=versions.env
. "$KIND_SCRIPTS/versions.env"
. "$KIND_SCRIPTS/../devenv.sh"
KIND_CACHE=$DISTCACHE_DEV_CACHE/kind
mkdir -p "$KIND_CACHE"
BIN_CACHE=$KIND_CACHE/bin
# Go needs a HOME for its caches (CI may run with a thin environment).
: "${HOME:=$(getent passwd "$(id -u)" | cut -d: -f6)}"; export HOME
export GOTOOLCHAIN=${GOTOOLCHAIN:-local}
export GOFLAGS="${GOFLAGS:--buildvcs=false}"
export PATH=$PATH:/usr/local/go/bin:${GOPATH:-$HOME/go}/bin
NICE=(nice -n 19)
CLUSTER_NAME=${KIND_CLUSTER_NAME:-distcache}
KUBECONFIG_PATH=${DISTCACHE_DEV_KUBECONFIG:-$KIND_CACHE/kubeconfig-$CLUSTER_NAME}

log() { printf '== [%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# A short hash of the given files' contents: image tags change when their inputs do.
# DISTCACHE_DEV_KIND_SALT (unset normally) forces new tags, e.g. to measure a cold build.
inputs_stamp() { { cat "$@"; printf '%s' "${DISTCACHE_DEV_KIND_SALT:-}"; } | sha256sum | cut -c1-10; }

# docker build with the legacy builder (BuildKit would try to pull its frontend image), without
# its deprecation banner.
legacy_build() {
  DOCKER_BUILDKIT=0 "${NICE[@]}" docker build --force-rm "$@" \
    2> >(grep -v -E 'DEPRECATED|BuildKit is currently disabled|environment-variable|^[[:space:]]*$' >&2)
}

# take_lock NAME: hold $KIND_CACHE/NAME.lock until this script exits, so that two runs on one
# machine (two developers' `make test`, CI) wait for each other instead of building the same
# thing twice at once.
take_lock() {
  mkdir -p "$KIND_CACHE"
  local file=$KIND_CACHE/$1.lock
  exec {LOCK_FD}>"$file"
  if ! flock -n "$LOCK_FD"; then
    log "waiting for another run holding $file"
    flock "$LOCK_FD"
  fi
}
