#!/usr/bin/env bash
# kind-up.sh: a running kind cluster with the project's images loaded, from whatever this
# machine has. NODES=1 (the default) is one node; NODES=4 is a control plane and three workers
# in two zones (topology.kubernetes.io/zone: zone-a holds two workers, zone-b one), with pod
# networking across them (pod-network.sh). It starts dockerd if needed, builds what is missing (binaries, node image,
# project images; all cached outside the clone), creates the cluster unless it already runs
# on the current node image, loads the images, waits for CoreDNS. Last line of stdout:
#   export KUBECONFIG=...
set -euo pipefail
. "$(dirname "$0")/common.sh"
t0=$(date +%s)

"$KIND_SCRIPTS/preflight.sh" --start-docker >&2 || die "the kind test bed cannot run here (see above)"
"$KIND_SCRIPTS/ensure-docker.sh"
"$KIND_SCRIPTS/build-binaries.sh" kind >&2
KIND=$BIN_CACHE/kind-$KIND_VERSION/kind
KUBECTL=$BIN_CACHE/kubernetes-$K8S_VERSION/kubectl
# The node image: kind's own (kind $KIND_VERSION's default, read from its module source) when
# an image registry answers, which saves the 20-35 min offline build; the offline build
# otherwise. DISTCACHE_DEV_KIND_NODE=offline|stock forces one (stock fails without a registry).
# The log says which path ran.
NODES=${NODES:-1}
[[ "$NODES" =~ ^[1-9]$ ]] || die "NODES must be 1 to 9, got '$NODES'"
KIND_CONFIG=$KIND_SCRIPTS/kind-config.yaml
if [ "$NODES" -gt 1 ]; then
  # Workers take turns over two zones, so one zone holds more than one node: zone-aware
  # placement then matters (with a zone per node, host spreading alone would do).
  KIND_CONFIG=$KIND_CACHE/kind-config-$CLUSTER_NAME.yaml
  { cat "$KIND_SCRIPTS/kind-config.yaml"
    for ((i = 1; i < NODES; i++)); do
      printf '  - role: worker\n    labels:\n      topology.kubernetes.io/zone: zone-%s\n' \
        "$( ((i % 2)) && echo a || echo b)"
    done; } > "$KIND_CONFIG"
fi
stock_node_image() {
  local src
  src=$(cd "$REPO_ROOT" && go mod download -json "sigs.k8s.io/kind@$KIND_VERSION" 2>/dev/null \
        | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  sed -n 's/^const Image = "\(.*\)"$/\1/p' "$src/pkg/apis/config/defaults/image.go" 2>/dev/null
}
node_path=${DISTCACHE_DEV_KIND_NODE:-auto}
NODE_IMAGE=
stock=
if [ "$node_path" != offline ]; then
  stock=$(stock_node_image || true)
  if [ -n "$stock" ] && pull_err=$(timeout 600 docker pull -q "$stock" 2>&1); then
    NODE_IMAGE=$stock
    # kind's node image brings kindnetd: the default CNI, so not the offline image's static one.
    grep -v '^[[:space:]]*disableDefaultCNI:' "$KIND_CONFIG" > "$KIND_CACHE/kind-config-stock.yaml"
    KIND_CONFIG=$KIND_CACHE/kind-config-stock.yaml
    log "node image: kind's own $stock (pulled from its registry)"
  elif [ "$node_path" = stock ]; then
    die "DISTCACHE_DEV_KIND_NODE=stock, but kind's node image ${stock:-?} cannot be pulled: ${pull_err:-no image name}"
  else
    log "node image: no registry answers (${pull_err:-the image name of kind was not found}): the offline build"
  fi
fi
[ -n "$NODE_IMAGE" ] || NODE_IMAGE=$("$KIND_SCRIPTS/build-node-image.sh")
"$REPO_ROOT/scripts/images.sh" all >&2
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$REPO_ROOT/pyproject.toml" | head -1)
PROJECT_IMAGES=("distcache/node:$VERSION" "distcache/operator:$VERSION")

node=$CLUSTER_NAME-control-plane
if "$KIND" get clusters 2>/dev/null | grep -qx "$CLUSTER_NAME"; then
  running_image=$(docker inspect -f '{{.Config.Image}}' "$node" 2>/dev/null || true)
  if [ "$(docker inspect -f '{{.State.Running}}' "$node" 2>/dev/null)" != true ]; then
    log "cluster $CLUSTER_NAME is stopped: recreating it"
    "$KIND" delete cluster --name "$CLUSTER_NAME" >&2
  elif [ "$running_image" = "$NODE_IMAGE" ]; then
    log "cluster $CLUSTER_NAME already runs on $NODE_IMAGE: reusing it"
    have_nodes=$("$KIND" get nodes --name "$CLUSTER_NAME" | wc -l)
    [ "$have_nodes" -eq "$NODES" ] || log "it has $have_nodes node(s), not NODES=$NODES: reusing it as it is (make kind-down first for $NODES)"
  else
    # Someone may be working on it: never delete a running cluster behind their back.
    log "cluster $CLUSTER_NAME runs on ${running_image:-?}, not the current $NODE_IMAGE: reusing it (make kind-down && make kind-up to move on)"
  fi
fi
if ! "$KIND" get clusters 2>/dev/null | grep -qx "$CLUSTER_NAME"; then
  log "kind create cluster --name $CLUSTER_NAME --image $NODE_IMAGE"
  "$KIND" create cluster --name "$CLUSTER_NAME" --image "$NODE_IMAGE" \
    --config "$KIND_CONFIG" --kubeconfig "$KUBECONFIG_PATH" --wait 180s >&2
else
  "$KIND" export kubeconfig --name "$CLUSTER_NAME" --kubeconfig "$KUBECONFIG_PATH" >&2
fi
export KUBECONFIG=$KUBECONFIG_PATH
# Offline image: its static CNI config is one node's; more nodes need theirs and routes.
if [ "$NODE_IMAGE" != "$stock" ] && [ "$NODES" -gt 1 ]; then
  KUBECTL=$KUBECTL "$KIND_SCRIPTS/pod-network.sh"
fi
if [ "$NODES" -gt 1 ]; then
  # The cluster's DNS on the control plane, out of the way of the worker faults the nodes tier
  # stages: a CoreDNS replica frozen on a stopped worker stalls one name lookup in two for 5 s
  # until the node is NotReady (~50 s), for every program in the cluster, which would measure
  # CoreDNS, not DistCache. (On a real cluster: CoreDNS spread over zones, NodeLocal DNSCache.)
  "$KUBECTL" -n kube-system patch deployment coredns --type=merge -p \
    '{"spec":{"template":{"spec":{"nodeSelector":{"node-role.kubernetes.io/control-plane":""}}}}}' >&2
fi

mapfile -t nodes < <("$KIND" get nodes --name "$CLUSTER_NAME")
for img in "${PROJECT_IMAGES[@]}"; do
  want=$(docker image inspect -f '{{.Id}}' "$img")
  missing=()
  for n in "${nodes[@]}"; do
    have=$(docker exec "$n" crictl inspecti -o go-template --template '{{.status.id}}' "$img" 2>/dev/null || true)
    [ "$have" = "$want" ] || missing+=("$n")
  done
  if [ "${#missing[@]}" -eq 0 ]; then log "$img already loaded"; continue; fi
  log "kind load docker-image $img (${missing[*]})"
  if ! "$KIND" load docker-image "$img" --name "$CLUSTER_NAME" --nodes "$(IFS=,; echo "${missing[*]}")" >&2; then
    log "kind load failed; importing with ctr directly"
    for n in "${missing[@]}"; do
      docker save "$img" | docker exec -i "$n" ctr -n k8s.io images import --digests - >&2
    done
  fi
done

log "waiting for the node and CoreDNS"
"$KUBECTL" wait --for=condition=Ready node --all --timeout=180s >&2
"$KUBECTL" -n kube-system rollout status deployment/coredns --timeout=180s >&2
# The operator stage: CRD, RBAC and the operator Deployment (SKIP_OPERATOR=1 leaves them out).
[ -n "${SKIP_OPERATOR:-}" ] || KUBECTL=$KUBECTL "$KIND_SCRIPTS/install-operator.sh"
log "cluster $CLUSTER_NAME up in $(( $(date +%s) - t0 )) s"
echo "export KUBECONFIG=$KUBECONFIG_PATH PATH=$(dirname "$KUBECTL"):\$PATH"
