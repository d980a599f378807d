"""Failure detection by heartbeats.

Each node pings every peer about once a second, all pings concurrently so one slow peer
never delays the verdict on the others. A refused connection is proof of death (the port
is closed), so the peer is routed around at once; silence only counts after a suspicion
window, so a briefly slow node is not accused. Dead peers are probed with a capped backoff.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from distcache_node.cluster.peers import PeerClient, PeerError

log = logging.getLogger("distcache.membership")


@dataclass
class PeerHealth:
    alive: bool = True  # optimistic at start: a write to a dead peer fails over anyway
    ready: bool = True
    boot_id: str = ""
    ring_version: int = -1
    placed_version: int = -1  # the ring version its migration last finished placing
    last_ok: float = field(default_factory=time.monotonic)
    failures: int = 0
    next_probe: float = 0.0
    last_error: str = ""
    # Judged dead for a failure (not a SIGTERM) while it may have been up: writes went
    # around it. Said on the ping that finds it again, so it takes its share back.
    routed_around: bool = False


class Membership:
    def __init__(
        self,
        interval: float = 1.0,
        suspect_after: float = 5.0,
        on_change: Callable[[str, PeerHealth, PeerHealth], None] | None = None,
    ) -> None:
        self.interval = interval
        self.suspect_after = suspect_after
        self.health: dict[str, PeerHealth] = {}
        self.on_change = on_change

    def sync_peers(self, peer_ids: set[str]) -> None:
        for peer_id in list(self.health):
            if peer_id not in peer_ids:
                del self.health[peer_id]
        for peer_id in peer_ids:
            self.health.setdefault(peer_id, PeerHealth())

    def is_alive(self, peer_id: str) -> bool:
        health = self.health.get(peer_id)
        return health is None or health.alive

    def is_ready(self, peer_id: str) -> bool:
        health = self.health.get(peer_id)
        return health is None or (health.alive and health.ready)

    def placed_version(self, peer_id: str) -> int:
        """The ring version a peer last reported as fully placed (-1: not heard yet)."""
        health = self.health.get(peer_id)
        return -1 if health is None else health.placed_version

    def excuse(self) -> None:
        """This process was stopped (cluster/stall.py): the silence of its peers meanwhile
        was its own, so each gets a fresh silence window from now, and heartbeats that time
        out as it runs again do not take them for dead (which would leave it reading its
        own stale copies as the only live owner)."""
        now = time.monotonic()
        for health in self.health.values():
            health.last_ok = max(health.last_ok, now)

    def report_failure(self, peer_id: str, error: PeerError) -> None:
        """Called by the data path: a peer that refuses connections is routed around at
        once; other failures (a dropped connection, a timeout) are left to the heartbeat."""
        health = self.health.get(peer_id)
        if health is not None and error.refused:
            self._mark_dead(peer_id, health, str(error))

    def _mark_dead(self, peer_id: str, health: PeerHealth, reason: str,
                   stopped: bool = False) -> None:
        if not stopped and health.alive:
            health.routed_around = True
        health.failures += 1
        health.last_error = reason
        backoff = min(self.interval * 2 ** min(health.failures - 1, 4), 2.0)
        health.next_probe = time.monotonic() + backoff
        if health.alive:
            before = PeerHealth(**vars(health))
            health.alive = False
            log.warning("peer %s is down: %s", peer_id, reason)
            if self.on_change:
                self.on_change(peer_id, before, health)

    def heard_from(self, peer_id: str, boot_id: str, ready: bool) -> None:
        """A peer pinged us: it is up. A restarted peer announces itself this way so that
        writes include it before it takes its share back."""
        health = self.health.get(peer_id)
        if health is None or (health.alive and health.boot_id == boot_id):
            return
        before = PeerHealth(**vars(health))
        if boot_id != health.boot_id:
            health.routed_around = False  # a new process takes its whole share anyway
        health.alive, health.ready, health.boot_id = True, ready, boot_id
        health.last_ok, health.failures = time.monotonic(), 0
        if self.on_change:
            self.on_change(peer_id, before, health)

    def stopping(self, peer_id: str, boot_id: str) -> None:
        """A peer got SIGTERM and drains: route around it at once, as if its port were
        closed (its heartbeat answers keep saying so until it is)."""
        health = self.health.get(peer_id)
        if health is not None and (not health.boot_id or health.boot_id == boot_id):
            self._mark_dead(peer_id, health, "stopping (SIGTERM)", stopped=True)

    async def probe(self, peer: PeerClient) -> None:
        health = self.health.get(peer.id)
        if health is None:
            return
        now = time.monotonic()
        if not health.alive and now < health.next_probe:
            return
        try:
            # Generous: a late answer is still an answer; only silence past suspect_after
            # (or a refused connection) counts against the peer.
            info: dict[str, Any] = await peer.ping(
                timeout=max(2 * self.interval, 1.0),
                routed_around=health.boot_id if health.routed_around else "")
        except PeerError as exc:
            if exc.refused or time.monotonic() - health.last_ok > self.suspect_after:
                self._mark_dead(peer.id, health, str(exc))
            return
        if info.get("stopping"):
            self._mark_dead(peer.id, health, "stopping (SIGTERM)", stopped=True)
            return
        before = PeerHealth(**vars(health))
        health.routed_around = False  # said on this ping, which it answered
        health.alive = True
        health.ready = bool(info.get("ready"))
        health.boot_id = str(info.get("boot_id", ""))
        health.ring_version = int(info.get("ring_version", -1))
        health.placed_version = int(info.get("placed_version", -1))
        health.last_ok = time.monotonic()
        health.failures = 0
        if self.on_change and (before.alive, before.ready, before.boot_id) != (
            health.alive, health.ready, health.boot_id
        ):
            self.on_change(peer.id, before, health)

    async def run(self, peers: Callable[[], list[PeerClient]]) -> None:
        """Probe each peer on its own schedule: a slow answer from one never holds up the
        next round for the others."""
        in_flight: dict[str, asyncio.Task[None]] = {}
        try:
            while True:
                for peer in peers():
                    task = in_flight.get(peer.id)
                    if task is None or task.done():
                        in_flight[peer.id] = asyncio.create_task(self.probe(peer))
                await asyncio.sleep(self.interval)
        finally:
            for task in in_flight.values():
                task.cancel()
