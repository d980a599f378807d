# gotool.sh: sourced by helm.sh and kube-score.sh. A pinned Go tool from the Go module proxy
# (`go install <package>@<version>`), built into a folder OUTSIDE the clone behind a version
# stamp, $DISTCACHE_DEV_CACHE/bin/<name>-<version>/<name> (complete when .done exists), so a
# fresh clone reuses it and a pin change builds a new folder.
#
#   gotool_ensure NAME VERSION PACKAGE VERSION_VAR MIN_GO [GOFLAGS]
#     VERSION_VAR: the Go variable the tool's own release build sets to its version with
#     -ldflags -X (`go install` sets none, and `<tool> version` would say "unknown").
#     GOFLAGS: the default when the caller's environment sets none.
#   Sets GOTOOL to the binary's path.
. "$(dirname "${BASH_SOURCE[0]}")/devenv.sh"

gotool_log() { printf '== [%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

gotool_ensure() {
  local name=$1 version=$2 package=$3 version_var=$4 min_go=$5 goflags=${6:--buildvcs=false}
  local dir=$DISTCACHE_DEV_CACHE/bin/$name-$version
  GOTOOL=$dir/$name
  [ -e "$dir/.done" ] && [ -x "$GOTOOL" ] && return
  export PATH=$PATH:/usr/local/go/bin:${GOPATH:-$HOME/go}/bin
  export GOTOOLCHAIN=${GOTOOLCHAIN:-local}
  export GOFLAGS="${GOFLAGS:-$goflags}"
  if ! command -v go >/dev/null; then
    printf 'error: %s\n' "$name $version is not built and the Go toolchain is missing (go >= $min_go on PATH builds it)" >&2
    exit 1
  fi
  mkdir -p "$dir"
  # Two runs at once (two make targets, CI) wait for each other instead of building twice.
  local lock
  exec {lock}>"$dir.lock"
  flock "$lock"
  if [ ! -e "$dir/.done" ]; then
    gotool_log "building $name $version from the Go module proxy into $dir"
    GOBIN=$dir nice -n 19 go install -trimpath -ldflags "-s -w -X $version_var=$version" \
      "$package@$version" >&2
    "$GOTOOL" version >&2
    { go version; date -u +%FT%TZ; } > "$dir/.done"
  fi
  flock -u "$lock"
}
