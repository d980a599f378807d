"""Write versions and quorum fan-out.

Every write gets a version from the coordinating node's hybrid clock: wall-clock microseconds,
never going backwards, ties broken by node, in a signed 64-bit integer until about 2250.
Replicas apply a write only when it is newer than what they hold, so late or repeated
messages never undo a newer write (last writer wins).
"""

from __future__ import annotations

import time

from distcache_node.cluster.ring import hash64

NODE_BITS = 10  # low bits carry a per-node tie-breaker


class VersionClock:
    def __init__(self, node_id: str) -> None:
        self._node_bits = hash64(node_id) & ((1 << NODE_BITS) - 1)
        self._last = 0

    def next(self) -> int:
        now = ((time.time_ns() // 1000) << NODE_BITS) | self._node_bits
        self._last = max(now, self._last + (1 << NODE_BITS))
        return self._last


def required_acks(replication: int, write_quorum: int, live_owners: int) -> int:
    """Default quorum: every live owner, and at least 2 when R >= 2, so one node's death
    never loses an acknowledged write. An explicit --write-quorum overrides it."""
    if write_quorum > 0:
        return min(write_quorum, replication)
    return max(live_owners, min(2, replication))
