"""Membership: a refused connection convicts a peer at once, silence only after
`suspect_after`; a dead peer is probed again on a capped backoff and comes back when it
answers or announces itself. Real Membership.probe against fake peers whose ping answers,
refuses or stays silent, on a fake monotonic clock: no sockets, no sleeping."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from distcache_node.cluster import membership as membership_module
from distcache_node.cluster.membership import Membership, PeerHealth
from distcache_node.cluster.peers import PeerError


class FakeTime:
    """Stands in for the `time` module inside membership.py: monotonic() moves only when
    the test says so."""

    def __init__(self) -> None:
        # A whole number of seconds: the test's steps (0.25 s) then add up exactly.
        self.now = float(int(time.monotonic()) + 1)

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakePeer:
    """A PeerClient's ping: 'up' answers, 'refused' is a closed port, 'silent' a timeout."""

    def __init__(self, peer_id: str, mode: str = "up", ready: bool = True,
                 boot_id: str = "boot-1") -> None:
        self.id = peer_id
        self.mode = mode
        self.ready = ready
        self.boot_id = boot_id
        self.pings = 0
        self.timeouts: list[float] = []
        self.told: list[str] = []  # routed_around of each ping

    async def ping(self, timeout: float, announce: str = "",
                   routed_around: str = "") -> dict[str, Any]:
        self.pings += 1
        self.timeouts.append(timeout)
        self.told.append(routed_around)
        if self.mode == "refused":
            raise PeerError(self.id, "GET /cluster/ping: connection refused", refused=True)
        if self.mode == "silent":
            raise PeerError(self.id, "GET /cluster/ping: TimeoutError()")
        if self.mode == "error":  # it answered, with a 500: alive, if unwell
            raise PeerError(self.id, "GET /cluster/ping -> 500", unreachable=False)
        return {"ready": self.ready, "boot_id": self.boot_id, "ring_version": 3,
                "placed_version": 3}


Changes = list[tuple[str, bool, bool]]  # verdicts that flipped: (peer, alive before, after)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeTime:
    fake = FakeTime()
    monkeypatch.setattr(membership_module, "time", fake)
    return fake


def watched(suspect_after: float = 5.0, interval: float = 1.0,
            peers: tuple[str, ...] = ("p1",)) -> tuple[Membership, Changes]:
    changes: Changes = []

    def on_change(peer: str, before: PeerHealth, after: PeerHealth) -> None:
        if before.alive != after.alive:  # (a first answer also reports its boot id)
            changes.append((peer, before.alive, after.alive))

    membership = Membership(interval=interval, suspect_after=suspect_after, on_change=on_change)
    membership.sync_peers(set(peers))
    return membership, changes


async def test_a_refused_ping_convicts_at_once(clock: FakeTime) -> None:
    membership, changes = watched()
    peer = FakePeer("p1")
    await membership.probe(peer)
    assert membership.is_alive("p1")
    peer.mode = "refused"
    await membership.probe(peer)  # no time has passed
    assert not membership.is_alive("p1") and not membership.is_ready("p1")
    assert changes == [("p1", True, False)]


async def test_a_peer_convicted_while_up_is_told_on_the_ping_that_finds_it(
        clock: FakeTime) -> None:
    """Writes went around it: the ping that finds it again says so (with the boot id judged
    dead, so only that process takes its share back), once."""
    membership, _ = watched()
    peer = FakePeer("p1")
    await membership.probe(peer)
    peer.mode = "refused"
    await membership.probe(peer)
    peer.mode = "up"
    clock.advance(5)
    await membership.probe(peer)
    clock.advance(1)
    await membership.probe(peer)
    assert membership.is_alive("p1")
    assert peer.told == ["", "", "boot-1", ""]


async def test_a_peer_that_said_it_stops_is_not_told(clock: FakeTime) -> None:
    membership, _ = watched()
    peer = FakePeer("p1")
    await membership.probe(peer)
    membership.stopping("p1", "boot-1")
    assert not membership.is_alive("p1")
    peer.boot_id = "boot-2"  # the next process with its name
    clock.advance(5)
    await membership.probe(peer)
    assert membership.is_alive("p1") and peer.told == ["", ""]


async def test_silence_convicts_only_after_suspect_after(clock: FakeTime) -> None:
    membership, changes = watched(suspect_after=5.0)
    peer = FakePeer("p1")
    await membership.probe(peer)  # last heard from now
    peer.mode = "silent"
    for _ in range(4):
        clock.advance(1.2)  # 4.8 s of silence, pinged every 1.2 s
        await membership.probe(peer)
        assert membership.is_alive("p1"), "a slow peer must not be accused early"
    assert peer.pings == 5 and changes == []
    clock.advance(0.3)  # 5.1 s
    await membership.probe(peer)
    assert not membership.is_alive("p1")
    assert changes == [("p1", True, False)]


async def test_an_error_answer_is_judged_like_silence(clock: FakeTime) -> None:
    membership, _ = watched(suspect_after=5.0)
    peer = FakePeer("p1")
    await membership.probe(peer)
    peer.mode = "error"
    clock.advance(4.0)
    await membership.probe(peer)
    assert membership.is_alive("p1")
    clock.advance(1.5)
    await membership.probe(peer)
    assert not membership.is_alive("p1")


async def test_an_answer_resets_the_silence_window(clock: FakeTime) -> None:
    membership, changes = watched(suspect_after=5.0)
    peer = FakePeer("p1")
    await membership.probe(peer)
    for _ in range(5):  # 4 s silent, then one answer, again and again: never 5 s of silence
        peer.mode = "silent"
        clock.advance(4.0)
        await membership.probe(peer)
        peer.mode = "up"
        clock.advance(0.5)
        await membership.probe(peer)
    assert membership.is_alive("p1") and changes == []


async def test_the_ping_waits_long_enough_for_a_late_answer(clock: FakeTime) -> None:
    membership, _ = watched(interval=1.0)
    peer = FakePeer("p1")
    await membership.probe(peer)
    # A late answer still counts: the ping is not cut off at the heartbeat interval.
    assert peer.timeouts == [2.0]


async def test_data_path_failures_convict_only_when_refused(clock: FakeTime) -> None:
    membership, changes = watched(peers=("p1", "p2"))
    membership.report_failure("p1", PeerError("p1", "read timed out"))
    membership.report_failure("p1", PeerError("p1", "500", unreachable=False))
    assert membership.is_alive("p1")
    membership.report_failure("p2", PeerError("p2", "connection refused", refused=True))
    assert not membership.is_alive("p2")
    assert changes == [("p2", True, False)]
    membership.report_failure("unknown", PeerError("unknown", "refused", refused=True))
    assert membership.is_alive("unknown")  # not a member: nothing to judge


async def test_a_dead_peer_is_probed_on_a_capped_backoff_and_recovers(clock: FakeTime) -> None:
    membership, changes = watched(interval=1.0)
    peer = FakePeer("p1", mode="refused")
    await membership.probe(peer)
    assert not membership.is_alive("p1") and peer.pings == 1
    await membership.probe(peer)  # within the backoff: not pinged again
    assert peer.pings == 1
    gaps = []
    for _ in range(8):  # keeps refusing: each failure doubles the wait, up to 2 s
        waited = 0.0
        while True:
            clock.advance(0.25)
            waited += 0.25
            before = peer.pings
            await membership.probe(peer)
            if peer.pings > before:
                break
        gaps.append(waited)
    assert gaps[0] == 1.0 and gaps[1] == 2.0 and max(gaps) == 2.0, gaps
    peer.mode = "up"
    clock.advance(2.0)
    await membership.probe(peer)
    assert membership.is_alive("p1") and membership.is_ready("p1")
    assert changes == [("p1", True, False), ("p1", False, True)]
    # Back to normal: a refusal convicts it again at once.
    peer.mode = "refused"
    await membership.probe(peer)
    assert not membership.is_alive("p1")


async def test_a_restarted_peer_that_announces_itself_is_alive_but_not_ready(
    clock: FakeTime,
) -> None:
    membership, changes = watched()
    peer = FakePeer("p1", mode="refused")
    await membership.probe(peer)
    membership.heard_from("p1", "boot-2", ready=False)  # before any probe of ours
    assert membership.is_alive("p1") and not membership.is_ready("p1")
    assert changes == [("p1", True, False), ("p1", False, True)]
    peer.mode, peer.boot_id = "up", "boot-2"
    await membership.probe(peer)  # its heartbeat answer says ready
    assert membership.is_ready("p1")


async def test_hearing_again_from_a_live_peer_changes_nothing(clock: FakeTime) -> None:
    membership, changes = watched()
    peer = FakePeer("p1")
    await membership.probe(peer)
    membership.heard_from("p1", "boot-1", ready=False)  # same boot: old news
    assert membership.is_ready("p1") and changes == []


async def test_one_silent_peer_does_not_hold_up_heartbeats_to_the_others() -> None:
    """run() probes each peer on its own schedule (real time: lower bounds only)."""

    class HangingPeer(FakePeer):
        async def ping(self, timeout: float, announce: str = "",
                       routed_around: str = "") -> dict[str, Any]:
            self.pings += 1
            await asyncio.Event().wait()  # never answers
            raise AssertionError("unreachable")

    membership, _ = watched(interval=0.02, peers=("hung", "ok"))
    hung, ok = HangingPeer("hung"), FakePeer("ok")
    runner = asyncio.create_task(membership.run(lambda: [hung, ok]))
    try:
        deadline = time.monotonic() + 30  # generous: a busy machine only makes this slower
        while ok.pings < 5:
            assert time.monotonic() < deadline, ok.pings
            await asyncio.sleep(0.01)
    finally:
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner
    assert hung.pings == 1  # still waiting on its first ping, never started twice
    assert membership.is_alive("ok")
