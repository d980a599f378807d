"""cluster/stall.py: a gap between two looks at the clock longer than the threshold is a stop,
said once with its length; ordinary scheduling delays are not."""

from __future__ import annotations

import asyncio

from distcache_node.cluster import stall
from distcache_node.cluster.stall import StallWatch


async def test_a_gap_over_the_threshold_is_a_stop_and_short_ones_are_not() -> None:
    now = [100.0]
    seen: list[float] = []
    watch = StallWatch(5.0, seen.append, clock=lambda: now[0])
    watch.start()
    try:
        for step in (0.25, 0.3, 4.9, 0.25):  # late ticks, but under 5 s: nothing
            now[0] += step
            await asyncio.sleep(stall.TICK * 1.5)
        assert seen == []
        now[0] += 70.0  # the process was stopped for 70 s
        await asyncio.sleep(stall.TICK * 1.5)
        assert len(seen) == 1 and 69.9 < seen[0] < 71.0
        now[0] += 0.25
        await asyncio.sleep(stall.TICK * 1.5)
        assert len(seen) == 1  # said once, and it goes on watching
    finally:
        watch.stop()
