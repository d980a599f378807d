#!/usr/bin/env bash
# build-node-image.sh: the kind node image, offline, as kind's own builder would make it.
# Prints the image name on stdout. Each step is skipped when its output exists:
#   1. the node base: bookworm + systemd + Debian's containerd 1.6 / runc / CNI plugins + kind
#      v0.30.0's images/base/files, containerd with restrict_oom_score_adj (no process here may
#      lower oom_score_adj), and a static ptp CNI config (kindnetd is not on the module proxy);
#      and a small bookworm with iptables/nftables/conntrack for kube-proxy;
#   2. binaries (build-binaries.sh: Kubernetes, etcd, CoreDNS, crictl, pause, kind);
#   3. component images with the exact tags `kubeadm config images list` prints, plus kind's
#      sandbox pause;
#   4. the node image: base + kubeadm/kubelet/kubectl/crictl + the component images imported
#      (pinned) into the node's containerd.
# Tag: distcache/kind-node:$K8S_VERSION-<hash of versions.env and these scripts>.
set -euo pipefail
. "$(dirname "$0")/common.sh"
. "$KIND_SCRIPTS/rootfs.sh"

STAMP=$(inputs_stamp "$KIND_SCRIPTS/versions.env" "$KIND_SCRIPTS/build-node-image.sh" "$KIND_SCRIPTS/rootfs.sh")
NODE_IMAGE=distcache/kind-node:$K8S_VERSION-$STAMP
BASE_IMAGE=distcache/kind-base:$DEBIAN_SUITE-$STAMP
PROXY_BASE=distcache/kind-proxy-base:$DEBIAN_SUITE-$STAMP
REG=registry.k8s.io

if [ "${1:-}" = --name ]; then echo "$NODE_IMAGE"; exit 0; fi
if docker image inspect "$NODE_IMAGE" >/dev/null 2>&1; then
  log "node image $NODE_IMAGE exists"; echo "$NODE_IMAGE"; exit 0
fi
docker info >/dev/null 2>&1 || die "Docker engine not reachable"
take_lock node-image
if docker image inspect "$NODE_IMAGE" >/dev/null 2>&1; then echo "$NODE_IMAGE"; exit 0; fi  # built meanwhile

# docker_build_dir IMAGE DOCKERFILE-TEXT FILE...: a throwaway context with FILEs; legacy builder
# (BuildKit would try to pull its frontend).
docker_build_dir() {
  local image=$1 dockerfile=$2; shift 2
  local ctx; ctx=$(mktemp -d "$KIND_CACHE/ctx.XXXXXX")
  cp "$@" "$ctx/"
  printf '%s\n' "$dockerfile" > "$ctx/Dockerfile"
  legacy_build -q -t "$image" "$ctx" >/dev/null
  rm -rf "$ctx"
}

# --- 1. Debian bases: node base, kube-proxy base ---------------------------------------------
KIND_SRC=$(cd "$REPO_ROOT" && go mod download -json "sigs.k8s.io/kind@$KIND_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[ -d "$KIND_SRC/images/base/files" ] || die "kind $KIND_VERSION sources not found via the Go module proxy"

node_base_customize() {
  local dir=$1 files=$KIND_SRC/images/base/files
  # kind's base files, with the modes its Dockerfile gives them.
  cp -r --no-preserve=mode,ownership "$files"/. "$dir"/
  chmod 755 "$dir"/usr/local/bin/* "$dir"/kind/bin "$dir"/kind/bin/*
  # Debian's containerd/runc/CNI plugins where kind's units and config expect them.
  for b in containerd ctr containerd-shim-runc-v2; do ln -sf "/usr/bin/$b" "$dir/usr/local/bin/$b"; done
  mkdir -p "$dir/usr/local/sbin" "$dir/opt/cni/bin" "$dir/etc/cni/net.d" "$dir/etc/kubernetes/manifests"
  ln -sf /usr/sbin/runc "$dir/usr/local/sbin/runc"
  for p in "$dir"/usr/lib/cni/*; do ln -sf "/usr/lib/cni/$(basename "$p")" "$dir/opt/cni/bin/"; done
  # No process on some VMs may lower oom_score_adj (CAP_SYS_RESOURCE outside the bounding set).
  sed -i 's/^\([[:space:]]*restrict_oom_score_adj\) = false/\1 = true/' "$dir/etc/containerd/config.toml"
  grep -q 'restrict_oom_score_adj = true' "$dir/etc/containerd/config.toml" || die "containerd config patch failed"
  # One node, no kindnetd: a static ptp network on kind's first pod subnet.
  cat > "$dir/etc/cni/net.d/10-ptp.conflist" <<'CNI'
{
  "cniVersion": "0.4.0",
  "name": "kind-ptp",
  "plugins": [
    {
      "type": "ptp",
      "ipMasq": true,
      "mtu": 1500,
      "ipam": {
        "type": "host-local",
        "dataDir": "/run/cni-ipam-state",
        "ranges": [[{ "subnet": "10.244.0.0/24" }]],
        "routes": [{ "dst": "0.0.0.0/0" }]
      }
    },
    { "type": "portmap", "capabilities": { "portMappings": true } }
  ]
}
CNI
  rootfs_chroot "$dir" sh -ec '
    ctr oci spec \
      | jq ".hooks.createContainer[.hooks.createContainer | length] |= . + {\"path\": \"/kind/bin/mount-product-files.sh\"}" \
      | jq "del(.process.rlimits)" > /etc/containerd/cri-base.json
    find /lib/systemd/system/sysinit.target.wants/ -name systemd-tmpfiles-setup.service -delete
    rm -f /lib/systemd/system/multi-user.target.wants/* /etc/systemd/system/*.wants/* \
          /lib/systemd/system/local-fs.target.wants/* /lib/systemd/system/sockets.target.wants/*udev* \
          /lib/systemd/system/sockets.target.wants/*initctl* /lib/systemd/system/basic.target.wants/*
    echo ReadKMsg=no >> /etc/systemd/journald.conf
    [ -e /sbin/init ] || ln -s /lib/systemd/systemd /sbin/init
    systemctl enable kubelet.service containerd.service undo-mount-hacks.service
    systemctl mask systemd-binfmt.service'
}

if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  build_rootfs_image "$BASE_IMAGE-rootfs" \
    "systemd conntrack iptables nftables iproute2 ethtool util-linux mount kmod libseccomp2 pigz bash ca-certificates curl jq procps socat containerd runc containernetworking-plugins" \
    node_base_customize >&2
  docker_build_dir "$BASE_IMAGE" "FROM $BASE_IMAGE-rootfs
ENV container=docker
STOPSIGNAL SIGRTMIN+3
ENTRYPOINT [ \"/usr/local/bin/entrypoint\", \"/sbin/init\" ]" /dev/null
  docker rmi "$BASE_IMAGE-rootfs" >/dev/null
fi

proxy_base_customize() { :; }
build_rootfs_image "$PROXY_BASE" "iptables nftables conntrack iproute2 ipset kmod" proxy_base_customize >&2
[ "${BASES_ONLY:-0}" = 1 ] && exit 0

# --- 2. binaries ---------------------------------------------------------------------------------
"$KIND_SCRIPTS/build-binaries.sh" all >&2
K8S_BIN=$BIN_CACHE/kubernetes-$K8S_VERSION
ETCD_BIN=$BIN_CACHE/etcd-$ETCD_VERSION/etcd
COREDNS_BIN=$BIN_CACHE/coredns-$COREDNS_VERSION/coredns
CRICTL_BIN=$BIN_CACHE/crictl-$CRICTL_VERSION/crictl

# --- 3. component images -------------------------------------------------------------------------
component_image() {   # component_image IMAGE BINARY [FROM]
  local image=$1 bin=$2 from=${3:-scratch} name
  name=$(basename "$bin")
  if docker image inspect "$image" >/dev/null 2>&1 \
     && [ "$(docker image inspect -f '{{index .Config.Labels "distcache.kind.stamp"}}' "$image")" = "$STAMP" ]; then
    return
  fi
  log "component image $image"
  local dest=/usr/local/bin/$name
  case $name in coredns|pause) dest=/$name ;; esac
  docker_build_dir "$image" "FROM $from
COPY $name $dest
ENV PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
LABEL distcache.kind.stamp=$STAMP
ENTRYPOINT [\"$dest\"]" "$bin"
}


IMAGES=(
  "$REG/kube-apiserver:$K8S_VERSION"
  "$REG/kube-controller-manager:$K8S_VERSION"
  "$REG/kube-scheduler:$K8S_VERSION"
  "$REG/kube-proxy:$K8S_VERSION"
  "$REG/etcd:$ETCD_IMAGE_TAG"
  "$REG/coredns/coredns:$COREDNS_VERSION"
  "$REG/pause:$PAUSE_IMAGE_TAG"
  "$REG/pause:$KIND_SANDBOX_PAUSE_TAG"
)
for c in kube-apiserver kube-controller-manager kube-scheduler; do
  component_image "$REG/$c:$K8S_VERSION" "$K8S_BIN/$c"
done
component_image "$REG/kube-proxy:$K8S_VERSION" "$K8S_BIN/kube-proxy" "$PROXY_BASE"
component_image "$REG/etcd:$ETCD_IMAGE_TAG" "$ETCD_BIN"
component_image "$REG/coredns/coredns:$COREDNS_VERSION" "$COREDNS_BIN"
component_image "$REG/pause:$PAUSE_IMAGE_TAG" "$K8S_BIN/pause"
docker tag "$REG/pause:$PAUSE_IMAGE_TAG" "$REG/pause:$KIND_SANDBOX_PAUSE_TAG"
# The tags must be exactly what this kubeadm asks for.
wanted=$("$K8S_BIN/kubeadm" config images list --kubernetes-version "$K8S_VERSION" 2>/dev/null)
for w in $wanted; do
  printf '%s\n' "${IMAGES[@]}" | grep -qx "$w" || die "kubeadm wants $w, which is not built (update versions.env)"
done

# --- 4. node image -------------------------------------------------------------------------------
log "assembling $NODE_IMAGE"
cid=$(docker run -d --entrypoint=sleep "$BASE_IMAGE" infinity)
trap 'docker rm -f "$cid" >/dev/null 2>&1 || true' EXIT
for b in kubeadm kubelet kubectl; do docker cp "$K8S_BIN/$b" "$cid:/usr/bin/$b"; done
docker cp "$CRICTL_BIN" "$cid:/usr/local/bin/crictl"
docker exec "$cid" sh -c "echo $K8S_VERSION > /kind/version"
docker exec "$cid" sh -c 'mkdir -p /run/containerd; containerd > /tmp/containerd.log 2>&1 & echo $! > /tmp/containerd.pid'
for _ in $(seq 60); do docker exec "$cid" ctr version >/dev/null 2>&1 && break; sleep 0.5; done
for img in "${IMAGES[@]}"; do
  log "  import $img"
  docker save "$img" | docker exec -i "$cid" ctr -n k8s.io images import \
    --label=io.cri-containerd.pinned=pinned --all-platforms --no-unpack --digests - >/dev/null
done
docker exec "$cid" ctr -n k8s.io images ls -q | sort >&2
# containerd is a child of `sleep` (PID 1, which never reaps): done when gone or a zombie.
docker exec "$cid" sh -c 'pid=$(cat /tmp/containerd.pid); kill $pid
  for _ in $(seq 150); do grep -q "^State:[[:space:]]*[^Z]" /proc/$pid/status 2>/dev/null || break; sleep 0.2; done
  rm -rf /tmp/* /run/containerd'
docker commit "$cid" "$NODE_IMAGE-assembly" >/dev/null
docker rm -f "$cid" >/dev/null; trap - EXIT
# A Dockerfile ENTRYPOINT also clears the CMD that `sleep infinity` left behind.
docker_build_dir "$NODE_IMAGE" "FROM $NODE_IMAGE-assembly
ENV container=docker
STOPSIGNAL SIGRTMIN+3
ENTRYPOINT [ \"/usr/local/bin/entrypoint\", \"/sbin/init\" ]
CMD []" /dev/null
docker rmi "$NODE_IMAGE-assembly" >/dev/null
# Older stamps' images are dead weight (a few hundred MB each). Only those over a day old:
# another checkout (a CI clone, a salted experiment) may be building a newer one right now.
[ -n "${DISTCACHE_DEV_KIND_SALT:-}" ] ||   # a salted build is a side experiment: keep the rest
for repo in distcache/kind-node distcache/kind-base distcache/kind-proxy-base; do
  for img in $(docker image ls "$repo" --format '{{.Repository}}:{{.Tag}}' | grep -v -e "$STAMP\$"); do
    created=$(date -d "$(docker image inspect -f '{{.Created}}' "$img")" +%s 2>/dev/null || echo 0)
    [ $(( $(date +%s) - created )) -gt 86400 ] && docker rmi "$img" >/dev/null 2>&1 || true
  done
done
# The stamp file: which pins the current node image was built from.
{ echo "NODE_IMAGE=$NODE_IMAGE"; echo "BUILT=$(date -u +%FT%TZ)"; echo "GO=$(go version | awk '{ print $3 }')"
  grep -v '^#' "$KIND_SCRIPTS/versions.env"; } > "$KIND_CACHE/node-image.stamp"
log "node image $NODE_IMAGE ready"
echo "$NODE_IMAGE"
