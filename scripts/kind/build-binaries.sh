#!/usr/bin/env bash
# build-binaries.sh [all|kind|kubernetes|etcd|coredns|crictl|pause]: build the offline kind
# test bed's binaries from the Go module proxy into $DISTCACHE_DEV_CACHE/kind/bin/<name>-<version>/.
# A directory with a .done file is complete and never rebuilt; a pin change in versions.env
# names a new directory. Cold: ~17 min on 2 cores (Go caches ~8.5 GB, kept in ~/.cache/go-build
# and ~/go/pkg/mod); warm: seconds.
set -euo pipefail
. "$(dirname "$0")/common.sh"
command -v go >/dev/null || die "Go toolchain missing (go >= 1.24 needed on PATH)"
mkdir -p "$BIN_CACHE"
take_lock binaries
WORK=$KIND_CACHE/work
mkdir -p "$WORK"

done_file() { echo "$BIN_CACHE/$1/.done"; }
is_done() { [ -e "$(done_file "$1")" ]; }
mark_done() { go version > "$(done_file "$1")"; date -u +%FT%TZ >> "$(done_file "$1")"; }

# wrapper_module DIR MODULE VERSION MAINPKG...: a throwaway module that requires MODULE@VERSION
# and imports its main packages, so `go build` works even where MODULE's go.mod has replace
# directives (which `go install pkg@version` refuses).
wrapper_module() {
  local dir=$1 mod=$2 ver=$3; shift 3
  rm -rf "$dir"; mkdir -p "$dir"
  printf 'module distcache.local/build\n\ngo 1.24\n\nrequire %s %s\n' "$mod" "$ver" > "$dir/go.mod"
  { echo '//go:build tools'; echo; echo 'package build'; echo; echo 'import ('
    for p in "$@"; do echo "	_ \"$p\""; done; echo ')'; } > "$dir/tools.go"
}

build_kind() {
  local name=kind-$KIND_VERSION out=$BIN_CACHE/kind-$KIND_VERSION
  is_done "$name" && { log "$name cached"; return; }
  log "building kind $KIND_VERSION"
  mkdir -p "$out"
  GOBIN=$out "${NICE[@]}" go install "sigs.k8s.io/kind@$KIND_VERSION"
  mark_done "$name"
}

build_kubernetes() {
  local name=kubernetes-$K8S_VERSION out=$BIN_CACHE/kubernetes-$K8S_VERSION dir=$WORK/kubernetes
  is_done "$name" && { log "$name cached"; return; }
  log "building Kubernetes $K8S_VERSION (kubeadm kubelet kubectl kube-apiserver kube-controller-manager kube-scheduler kube-proxy)"
  local json gomod commit
  json=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION")
  gomod=$(sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p' <<<"$json")
  commit=$(sed -n 's/^[[:space:]]*"Hash": "\([0-9a-f]\{40\}\)",\{0,1\}$/\1/p' <<<"$json" | head -1)
  [ -n "$commit" ] || commit=0000000000000000000000000000000000000000
  local cmds=(kubeadm kubelet kubectl kube-apiserver kube-controller-manager kube-scheduler kube-proxy)
  wrapper_module "$dir" k8s.io/kubernetes "$K8S_VERSION" "${cmds[@]/#/k8s.io/kubernetes/cmd/}"
  # Every staging module k8s.io/kubernetes requires at v0.0.0 is published as v0.<minor>.<patch>.
  local staging_ver=v0.${K8S_VERSION#v1.}
  { echo; echo 'replace ('
    awk -v v="$staging_ver" '$1 ~ /^k8s\.io\// && $2 == "v0.0.0" { print "\t" $1 " => " $1 " " v }' "$gomod" | sort -u
    echo ')'; } >> "$dir/go.mod"
  (cd "$dir" && "${NICE[@]}" go mod tidy)
  local minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  local date; date=$(date -u +%FT%TZ)
  local ld="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ld+=" -X $pkg.gitTreeState=clean -X $pkg.gitCommit=$commit -X $pkg.buildDate=$date"
  done
  mkdir -p "$out"
  (cd "$dir" && CGO_ENABLED=0 "${NICE[@]}" go build -trimpath -ldflags "$ld" -o "$out/" \
     "${cmds[@]/#/k8s.io/kubernetes/cmd/}")
  "$out/kubeadm" version -o short | grep -qx "$K8S_VERSION" || die "kubeadm reports $("$out/kubeadm" version -o short)"
  # pause, from the same module's sources (static C, no Go).
  local src; src=$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p' <<<"$json")
  gcc -Os -static -DVERSION="v$PAUSE_IMAGE_TAG-distcache" -o "$out/pause" "$src/build/pause/linux/pause.c"
  strip "$out/pause" || true
  mark_done "$name"
}

build_etcd() {
  local name=etcd-$ETCD_VERSION out=$BIN_CACHE/etcd-$ETCD_VERSION dir=$WORK/etcd
  is_done "$name" && { log "$name cached"; return; }
  log "building etcd $ETCD_VERSION"
  wrapper_module "$dir" go.etcd.io/etcd/server/v3 "$ETCD_VERSION" go.etcd.io/etcd/server/v3
  (cd "$dir" && "${NICE[@]}" go mod tidy)
  mkdir -p "$out"
  (cd "$dir" && CGO_ENABLED=0 "${NICE[@]}" go build -trimpath -ldflags "-s -w" -o "$out/etcd" go.etcd.io/etcd/server/v3)
  # sed, not head: head exits after one line and the binary's next write dies of SIGPIPE,
  # which pipefail turns into a failed build (it did, on a cold machine, for CoreDNS).
  "$out/etcd" --version | sed -n 1p
  mark_done "$name"
}

build_coredns() {
  local name=coredns-$COREDNS_VERSION out=$BIN_CACHE/coredns-$COREDNS_VERSION dir=$WORK/coredns
  is_done "$name" && { log "$name cached"; return; }
  log "building CoreDNS $COREDNS_VERSION"
  wrapper_module "$dir" github.com/coredns/coredns "$COREDNS_VERSION" github.com/coredns/coredns
  (cd "$dir" && "${NICE[@]}" go mod tidy)
  mkdir -p "$out"
  (cd "$dir" && CGO_ENABLED=0 "${NICE[@]}" go build -trimpath -ldflags "-s -w" -o "$out/coredns" github.com/coredns/coredns)
  "$out/coredns" -version | sed -n 1p
  mark_done "$name"
}

build_crictl() {
  local name=crictl-$CRICTL_VERSION out=$BIN_CACHE/crictl-$CRICTL_VERSION dir=$WORK/crictl
  is_done "$name" && { log "$name cached"; return; }
  log "building crictl $CRICTL_VERSION"
  wrapper_module "$dir" sigs.k8s.io/cri-tools "$CRICTL_VERSION" sigs.k8s.io/cri-tools/cmd/crictl
  (cd "$dir" && "${NICE[@]}" go mod tidy)
  mkdir -p "$out"
  (cd "$dir" && CGO_ENABLED=0 "${NICE[@]}" go build -trimpath \
     -ldflags "-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=$CRICTL_VERSION" -o "$out/crictl" sigs.k8s.io/cri-tools/cmd/crictl)
  mark_done "$name"
}

what=${1:-all}
case $what in
  all) build_kind; build_kubernetes; build_etcd; build_crictl; build_coredns ;;
  kind|kubernetes|etcd|coredns|crictl) "build_$what" ;;
  *) die "unknown target $what" ;;
esac
log "binaries ready in $BIN_CACHE"
