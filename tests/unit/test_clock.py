"""The hybrid logical clock that versions writes: packing, monotonicity, observe, overflow."""

from __future__ import annotations

import random

import pytest

from distcache_node.cluster.replication import (
    LOGICAL_MAX,
    NODE_MASK,
    VERSION_MAX,
    VersionClock,
    pack,
    unpack,
)

NOW_MS = 1_796_000_000_000  # December 2026


class WallClock:
    def __init__(self, now: int = NOW_MS) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def test_packing_orders_by_physical_then_logical_then_node() -> None:
    assert unpack(pack(NOW_MS, 5, 7)) == (NOW_MS, 5, 7)
    assert pack(NOW_MS, LOGICAL_MAX, NODE_MASK) < pack(NOW_MS + 1, 0, 0)
    assert pack(NOW_MS, 1, 0) > pack(NOW_MS, 0, NODE_MASK)
    assert pack(NOW_MS, 1, 3) > pack(NOW_MS, 1, 2)
    # Fits a signed 64-bit integer until 2109, and beats every version of the old layout
    # (wall-clock microseconds << 10), so data written before an upgrade never wins.
    assert pack((1 << 42) - 1, LOGICAL_MAX, NODE_MASK) == VERSION_MAX
    assert pack(NOW_MS, 0, 0) > (NOW_MS * 1000) << 10
    for bad in [(-1, 0, 0), (1 << 42, 0, 0), (NOW_MS, LOGICAL_MAX + 1, 0),
                (NOW_MS, 0, NODE_MASK + 1)]:
        with pytest.raises(ValueError):
            pack(*bad)


def test_versions_follow_the_wall_clock_with_a_counter_within_a_millisecond() -> None:
    wall = WallClock()
    clock = VersionClock("node-a", wall)
    first, second = clock.next(), clock.next()
    assert unpack(first)[:2] == (NOW_MS, 0)
    assert unpack(second)[:2] == (NOW_MS, 1)
    wall.now += 3
    assert unpack(clock.next())[:2] == (NOW_MS + 3, 0)
    assert unpack(first)[2] == unpack(second)[2] == clock.node  # the node tie-breaker


def test_never_goes_backwards_when_the_wall_clock_does() -> None:
    wall = WallClock()
    clock = VersionClock("node-a", wall)
    issued = [clock.next()]
    wall.now -= 10_000  # an NTP step back
    for _ in range(5):
        issued.append(clock.next())
    assert issued == sorted(issued) and len(set(issued)) == len(issued)
    assert all(unpack(v)[0] == NOW_MS for v in issued)  # l holds, c counts


def test_observe_moves_past_a_version_from_a_clock_that_is_ahead() -> None:
    wall = WallClock()
    behind = VersionClock("node-b", wall)
    ahead = VersionClock("node-a", WallClock(NOW_MS + 30_000))
    theirs = ahead.next()
    assert behind.next() < theirs  # the bug HLC fixes: a later write, an older version
    behind.observe(theirs)
    mine = behind.next()
    assert mine > theirs
    assert unpack(mine)[:2] == (NOW_MS + 30_000, 1)  # their l, the next counter
    # The wall clock catches up: versions follow it again, counter back to 0.
    wall.now = NOW_MS + 30_005
    assert unpack(behind.next())[:2] == (NOW_MS + 30_005, 0)


def test_observe_of_an_older_version_changes_nothing() -> None:
    clock = VersionClock("node-a", WallClock())
    before = clock.next()
    clock.observe(before - (1 << 30))
    clock.observe(0)
    assert unpack(clock.next())[:2] == (NOW_MS, 1)


def test_observe_same_millisecond_higher_counter() -> None:
    clock = VersionClock("node-a", WallClock())
    clock.next()
    theirs = pack(NOW_MS, 40, NODE_MASK)  # their node bits beat ours: the counter must move
    clock.observe(theirs)
    assert clock.next() > theirs
    assert unpack(clock.next())[1] == 42


def test_observe_ignores_versions_outside_the_layout() -> None:
    clock = VersionClock("node-a", WallClock())
    clock.observe(-5)
    clock.observe(VERSION_MAX + 1)
    assert unpack(clock.next())[:2] == (NOW_MS, 0)


def test_logical_counter_overflow_carries_into_the_next_millisecond() -> None:
    wall = WallClock()
    clock = VersionClock("node-a", wall)
    issued = [clock.next() for _ in range(LOGICAL_MAX + 3)]
    assert issued == sorted(issued) and len(set(issued)) == len(issued)
    assert unpack(issued[LOGICAL_MAX])[:2] == (NOW_MS, LOGICAL_MAX)
    assert unpack(issued[LOGICAL_MAX + 1])[:2] == (NOW_MS + 1, 0)  # ahead of the wall clock
    assert unpack(issued[LOGICAL_MAX + 2])[:2] == (NOW_MS + 1, 1)
    wall.now += 5  # the wall clock passes it: back in step
    assert unpack(clock.next())[:2] == (NOW_MS + 5, 0)


def test_observing_a_full_counter_carries_too() -> None:
    clock = VersionClock("node-a", WallClock())
    theirs = pack(NOW_MS + 7, LOGICAL_MAX, 0)
    clock.observe(theirs)
    mine = clock.next()
    assert mine > theirs
    assert unpack(mine)[:2] == (NOW_MS + 8, 0)


def test_random_interleaving_of_events_keeps_every_clock_above_what_it_saw() -> None:
    rng = random.Random(6)
    walls = [WallClock(NOW_MS + skew) for skew in (0, -40_000, 25_000)]
    clocks = [VersionClock(f"node-{i}", w) for i, w in enumerate(walls)]
    last = [0, 0, 0]
    for _ in range(5000):
        for wall in walls:
            wall.now += rng.choice([0, 0, 1, 2])
        i = rng.randrange(3)
        version = clocks[i].next()
        assert version > last[i]
        last[i] = version
        j = rng.randrange(3)
        clocks[j].observe(version)
        after = clocks[j].next()
        assert after > version and after > last[j]
        last[j] = after
    # Physical parts stay within the largest skew of the fastest wall clock.
    assert all(unpack(v)[0] <= walls[2].now + 2 for v in last)
