"""Prometheus metrics of a node's view of the cluster, read at scrape time."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from distcache_node.cluster.node import ClusterNode


class ClusterCollector(Collector):
    def __init__(self, node: ClusterNode) -> None:
        self.node = node

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        node = self.node
        yield GaugeMetricFamily("distcache_ring_version", "Ring version this node follows",
                                node.doc.version)
        members = GaugeMetricFamily("distcache_ring_members", "Ring members by state",
                                    labels=["state"])
        for state in ("joining", "active", "leaving"):
            members.add_metric([state], sum(1 for m in node.doc.members if m.state == state))
        yield members
        yield GaugeMetricFamily("distcache_ready", "1 when this node serves reads itself",
                                1 if node.ready else 0)
        up = GaugeMetricFamily("distcache_peer_up", "1 when the peer answers heartbeats",
                               labels=["peer"])
        forwarded = CounterMetricFamily("distcache_forwarded_reads",
                                        "Single-key reads forwarded to the peer",
                                        labels=["peer"])
        opened = CounterMetricFamily("distcache_peer_connections_opened",
                                     "Connections (TLS handshakes) opened to the peer for "
                                     "forwarded reads", labels=["peer"])
        for peer_id, peer in sorted(node.peers.items()):
            up.add_metric([peer_id], 1 if node.membership.is_alive(peer_id) else 0)
            stats = peer.forwarding_stats()
            forwarded.add_metric([peer_id], stats["forwarded_requests"])
            opened.add_metric([peer_id], stats["forwarding_connections_opened"])
        yield up
        yield forwarded
        yield opened
        migration = node.migration
        yield CounterMetricFamily("distcache_migration_keys_moved",
                                  "Keys this node has handed to other owners", migration.keys_moved)
        yield GaugeMetricFamily("distcache_migration_keys_remaining",
                                "Keys still to hand over in the running pass",
                                migration.keys_remaining)
        yield GaugeMetricFamily("distcache_migration_done",
                                "1 when this node's data is placed for its ring version",
                                1 if migration.progress()["done"] else 0)
