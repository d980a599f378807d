"""The node's report of itself in the cluster (GET /cluster/status, and the basis of the
people's view GET /status): ring, readiness, memory, peers, migration progress, and what
certificates and keys are loaded."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from distcache_node.cluster.node import ClusterNode


def node_status(node: ClusterNode) -> dict[str, object]:
    peers = {
        peer_id: {
            "url": node.peers[peer_id].url,
            "alive": h.alive, "ready": h.ready, "ring_version": h.ring_version,
            "seconds_since_ok": round(time.monotonic() - h.last_ok, 2),
            "last_error": h.last_error,
            **node.peers[peer_id].forwarding_stats(),
        }
        for peer_id, h in node.membership.health.items() if peer_id in node.peers
    }
    me = node.doc.member(node.id)
    return {
        "id": node.id, "url": node.url, "state": me.state if me else "detached",
        "ready": node.ready, "reason": node.ready_state["reason"],
        "ring_version": node.doc.version, "replication": node.doc.replication,
        "keys": len(node.store), "bytes_used": node.store.bytes_used,
        "max_memory": node.store.max_bytes,
        "peers": peers, "migration": node.migration.progress(),
        "tls": node.tls.report() if node.tls is not None else None,
        # Fingerprints of the keys loaded, never the keys: the operator compares them with
        # the Secret's to tell when every pod has taken a rotated key in.
        "credentials": {"api_key": node.api_keys.report(),
                        "cluster_secret": node.peer_keys.report()},
    }
