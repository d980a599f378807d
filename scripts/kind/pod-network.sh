#!/usr/bin/env bash
# pod-network.sh: pod networking across the nodes of a multi-node kind cluster, done the way
# kindnetd does it (kindnetd is not on the Go module proxy): each node's CNI config takes the
# node's own podCIDR (the node image carries kind's first subnet, right for one node only),
# every node routes every other node's podCIDR to that node's address on Docker's `kind`
# network, and traffic from pods to anything outside the pod network is masqueraded (the CNI's
# own masquerading would also hide pod addresses from pods on other nodes). Idempotent: run it
# again after a node joined. Pods that started before their node's config was written (CoreDNS)
# are restarted. Needs KUBECTL and KUBECONFIG; the node containers are found by cluster label.
#
# What it does not survive: a node container restarted (`docker stop`/`start`) loses its
# routes and may come back at another address; run the script again then (`docker pause` keeps
# both, and is what the fault tests use).
set -euo pipefail
. "$(dirname "$0")/common.sh"
: "${KUBECTL:?}"
POD_NETWORK=10.244.0.0/16  # kind's default podSubnet

# name podCIDR address, one line per node (the node's InternalIP is its address on `kind`).
mapfile -t rows < <("$KUBECTL" get nodes -o jsonpath='{range .items[*]}{.metadata.name} {.spec.podCIDR} {.status.addresses[?(@.type=="InternalIP")].address}{"\n"}{end}')
[ "${#rows[@]}" -gt 1 ] || { log "one node: the node image's static CNI config serves it"; exit 0; }
changed=()
for row in "${rows[@]}"; do
  read -r node cidr _ <<<"$row"
  [ -n "$cidr" ] || die "node $node has no podCIDR (the controller manager allocates them)"
  conf=$(cat <<CNI
{
  "cniVersion": "0.4.0",
  "name": "kind-ptp",
  "plugins": [
    {
      "type": "ptp",
      "ipMasq": false,
      "mtu": 1500,
      "ipam": {
        "type": "host-local",
        "dataDir": "/run/cni-ipam-state",
        "ranges": [[{ "subnet": "$cidr" }]],
        "routes": [{ "dst": "0.0.0.0/0" }]
      }
    },
    { "type": "portmap", "capabilities": { "portMappings": true } }
  ]
}
CNI
)
  if [ "$(docker exec "$node" cat /etc/cni/net.d/10-ptp.conflist)" != "$conf" ]; then
    printf '%s\n' "$conf" | docker exec -i "$node" sh -c 'cat > /etc/cni/net.d/10-ptp.conflist'
    changed+=("$node")
  fi
  docker exec "$node" sh -ec "
    iptables -t nat -C POSTROUTING -s $POD_NETWORK ! -d $POD_NETWORK -j MASQUERADE 2>/dev/null \
      || iptables -t nat -A POSTROUTING -s $POD_NETWORK ! -d $POD_NETWORK -j MASQUERADE"
  for other in "${rows[@]}"; do
    read -r peer peer_cidr peer_ip <<<"$other"
    [ "$peer" = "$node" ] || docker exec "$node" ip route replace "$peer_cidr" via "$peer_ip"
  done
  log "pod network: $node has $cidr"
done
if [ "${#changed[@]}" -gt 0 ]; then
  # Pods that got an address from the image's config before this ran: started again.
  for node in "${changed[@]}"; do
    "$KUBECTL" delete pods -A --field-selector "spec.nodeName=$node" \
      --selector 'k8s-app=kube-dns' --wait=false >&2 || true
  done
fi
