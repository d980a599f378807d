"""Write versions and quorum fan-out.

Every write gets a version from the coordinating node's hybrid logical clock (HLC, Kulkarni
et al., "Logical Physical Clocks", 2014). Replicas keep only the newest version of a key
(last writer wins), so late or repeated messages never undo a newer write.

A version is one non-negative signed 64-bit integer, compared as a plain integer:

    bit 63      0 (sign)
    bits 62..21 l: physical time, milliseconds since the Unix epoch (42 bits, to year 2109)
    bits 20..10 c: logical counter (11 bits, 0..2047)
    bits  9..0  node: a per-node tie-breaker (hash of the node id)

so versions order by (l, c, node). `l` is the largest wall-clock time this node has seen, its
own or in any version it received; `c` orders events that share an `l`. Unlike a bare wall
clock, the clock never issues a version at or below one it has observed: a node whose wall
clock is behind a peer's still writes after what it has seen from that peer, and `l` stays
within the cluster's clock skew of real time.

Counter overflow (more than 2048 events in one millisecond, or observing a version whose
counter is at its maximum) carries into `l`: the clock then runs up to a millisecond ahead
of the wall clock per 2048 events, still monotonic, and falls back in step once the wall
clock passes it.

Versions written by the previous layout (wall-clock microseconds << 10) are all smaller than
any version from this clock, so data written before an upgrade never beats a write after it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import NamedTuple

from distcache_node.cluster.ring import hash64
from distcache_node.errors import Unavailable

log = logging.getLogger("distcache.clock")

NODE_BITS = 10
LOGICAL_BITS = 11
PHYSICAL_BITS = 42
NODE_MASK = (1 << NODE_BITS) - 1
LOGICAL_MAX = (1 << LOGICAL_BITS) - 1
LOGICAL_SHIFT = NODE_BITS
PHYSICAL_SHIFT = NODE_BITS + LOGICAL_BITS
PHYSICAL_MAX = (1 << PHYSICAL_BITS) - 1
VERSION_MAX = (1 << 63) - 1
# A version from further ahead than this is still observed (a later write must win over it),
# but logged: it means a peer's wall clock is badly off.
SKEW_WARNING_MS = 60_000


def pack(physical_ms: int, logical: int, node: int) -> int:
    """The version of (l, c, node); raises ValueError outside the layout."""
    if not (0 <= physical_ms < 1 << PHYSICAL_BITS and 0 <= logical <= LOGICAL_MAX
            and 0 <= node <= NODE_MASK):
        raise ValueError(f"out of range: l={physical_ms} c={logical} node={node}")
    return (physical_ms << PHYSICAL_SHIFT) | (logical << LOGICAL_SHIFT) | node


def unpack(version: int) -> tuple[int, int, int]:
    """(l in ms, c, node) of a version."""
    return (version >> PHYSICAL_SHIFT, (version >> LOGICAL_SHIFT) & LOGICAL_MAX,
            version & NODE_MASK)


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class VersionClock:
    """A hybrid logical clock issuing write versions (see the module docstring)."""

    def __init__(self, node_id: str, now_ms: Callable[[], int] = wall_ms) -> None:
        self.node = hash64(node_id) & NODE_MASK
        self._now_ms = now_ms
        self._l = 0  # largest physical time seen (ms)
        self._c = 0  # logical counter within _l
        self._warned_at = 0

    def _tick(self, physical: int, logical: int) -> int:
        if logical > LOGICAL_MAX:  # the counter is full: borrow the next millisecond
            physical, logical = physical + 1, 0
        if physical > PHYSICAL_MAX:
            # Only after observing a version from the layout's last millisecond (year 2109):
            # a forged version or a wildly wrong clock. No version is left above it, so the
            # write is refused as one that cannot be ordered (a 503), not an internal error.
            raise Unavailable("this node has observed a write version from the end of the "
                              "version range (a peer's clock is far off): it cannot order "
                              "new writes", retry_after=1)
        self._l, self._c = physical, logical
        return pack(physical, logical, self.node)

    def next(self) -> int:
        """A version above every version issued or observed so far (send / local event)."""
        pt = self._now_ms()
        if pt > self._l:
            return self._tick(pt, 0)
        return self._tick(self._l, self._c + 1)

    def observe(self, version: int) -> None:
        """Take in a version received from elsewhere (receive event): every later next() is
        above it. Versions outside the layout (negative, or past 2^63) are ignored."""
        if not 0 <= version <= VERSION_MAX:
            return
        l_msg, c_msg, _ = unpack(version)
        if l_msg < self._l or (l_msg == self._l and c_msg <= self._c):
            return  # already past it: the common case, no wall-clock read
        ahead = l_msg - self._now_ms()
        if ahead > SKEW_WARNING_MS and l_msg - self._warned_at > SKEW_WARNING_MS:
            self._warned_at = l_msg
            log.warning("observed a version %.1fs ahead of this node's wall clock: "
                        "a peer's clock is off", ahead / 1000)
        # Adopt the message's position; the next event takes the counter after it (its node
        # bits may be above ours). A full counter carries into the next millisecond.
        if c_msg == LOGICAL_MAX:
            self._l, self._c = l_msg + 1, -1  # next() issues (l_msg + 1, 0) at the least
        else:
            self._l, self._c = l_msg, c_msg


class ApplyResult(NamedTuple):
    """What a replica did with a batch of writes (Replica.apply)."""

    applied: int  # entries stored
    deleted: list[str]  # keys whose value a delete removed
    not_held: list[str]  # keys not held at the sent version or newer: no ack for them
    newer: list[tuple[str, int]]  # keys held at a newer version than sent, and that version


def required_acks(replication: int, write_quorum: int, live_owners: int) -> int:
    """Default quorum: every live owner, and at least 2 when R >= 2, so one node's death
    never loses an acknowledged write. An explicit --write-quorum overrides it."""
    if write_quorum > 0:
        return min(write_quorum, replication)
    return max(live_owners, min(2, replication))
