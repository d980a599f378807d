"""Noticing that this process was stopped: a paused container, a SIGSTOP, a VM frozen for a
live migration, a long swap stall. Peers that heard nothing for `--suspect-after` seconds
wrote around this node meanwhile, so its copies may be behind; until it has taken its share
back it must not answer reads from them.

A peer tells it so on its next heartbeat (`routed_around`), but that can be a second or two
after the process runs again, and requests queued in its sockets are served first. So the
node watches its own clock: a timer callback every TICK seconds measures the time since the
last one; a gap longer than the silence peers wait out means it was stopped, and it goes not
ready and re-syncs at once. A timer callback, not a task: after a stop the overdue timer runs
in the same event-loop turn that reads the queued requests off the sockets, before any of
their handlers does (the handlers are tasks, stepped in the next turn)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

log = logging.getLogger("distcache.cluster")

TICK = 0.25  # seconds between looks at the clock


class StallWatch:
    def __init__(self, threshold: float, on_stall: Callable[[float], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.threshold = threshold  # a gap over this is a stop
        self.on_stall = on_stall  # called with the gap, in seconds
        self.clock = clock
        self._last = clock()
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._last = self.clock()
        self._handle = asyncio.get_running_loop().call_later(TICK, self._tick)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _tick(self) -> None:
        now = self.clock()
        gap, self._last = now - self._last, now
        if gap > self.threshold:
            log.warning("this process was stopped for %.1f s: peers may have written around "
                        "it; not ready until it has taken its share back", gap)
            self.on_stall(gap)
        self._handle = asyncio.get_running_loop().call_later(TICK, self._tick)
