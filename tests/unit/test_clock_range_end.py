"""The hybrid logical clock at the end of its range: a version it cannot go past (one a
peer with a far-off clock, or a forged replicated write, can carry) refuses new writes
with a documented 503 instead of raising an internal error on every write."""

from __future__ import annotations

import pytest

from distcache_node.cluster.replication import VERSION_MAX, VersionClock, pack, unpack
from distcache_node.errors import Unavailable
from distcache_node.http_errors import error_response


def test_a_version_at_the_end_of_the_range_refuses_new_versions_with_a_503() -> None:
    clock = VersionClock("n1", now_ms=lambda: 1_700_000_000_000)
    clock.observe(VERSION_MAX)
    with pytest.raises(Unavailable) as refused:
        clock.next()
    assert refused.value.code == "unavailable" and refused.value.retry_after == 1
    answer = error_response(refused.value)  # what an HTTP client reads
    assert answer.status == 503 and answer.headers["Retry-After"] == "1"


def test_the_last_millisecond_still_counts_up_until_the_counter_is_full() -> None:
    clock = VersionClock("n1", now_ms=lambda: 1_700_000_000_000)
    last_ms = (1 << 42) - 1
    clock.observe(pack(last_ms, 2045, 0))
    issued = [clock.next(), clock.next()]
    assert [unpack(v)[:2] for v in issued] == [(last_ms, 2046), (last_ms, 2047)]
    with pytest.raises(Unavailable):
        clock.next()


def test_an_ordinary_clock_is_unaffected() -> None:
    clock = VersionClock("n1", now_ms=lambda: 1_700_000_000_000)
    first, second = clock.next(), clock.next()
    assert 0 < first < second <= VERSION_MAX
