"""Per-client rate limiting with a sliding-window counter kept in the cache itself.

Each client has one counter per one-second window, bumped through the backend's atomic incr
(so on a cluster the limit is cluster-wide with no extra code). The estimate weighs the
previous window by how much of it still overlaps the sliding second, as Cloudflare's
limiter does: smooth at window edges, two small counters per client.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from distcache_node.backend import Backend

KEY_PREFIX = "__ratelimit__:"
WINDOW = 1.0


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    retry_after: int  # seconds; 0 when allowed

    def headers(self) -> dict[str, str]:
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.retry_after)
        return headers


class RateLimiter:
    def __init__(
        self, backend: Backend, rate: float, burst: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        # A sustained `rate` per second, plus `burst` extra requests within any one second.
        self.backend = backend
        self.limit = max(1, math.floor(rate) + burst)
        self.clock = clock

    async def check(self, client: str) -> Decision:
        now = self.clock()
        window = int(now // WINDOW)
        into_window = (now % WINDOW) / WINDOW
        current = await self.backend.incr(f"{KEY_PREFIX}{client}:{window}", 1, 2 * WINDOW)
        previous_entry = await self.backend.get(f"{KEY_PREFIX}{client}:{window - 1}")
        previous = int(previous_entry[0]) if previous_entry is not None else 0
        estimate = previous * (1.0 - into_window) + current
        remaining = max(0, math.floor(self.limit - estimate))
        if estimate <= self.limit:
            return Decision(True, self.limit, remaining, 0)
        retry_after = max(1, math.ceil((1.0 - into_window) * WINDOW))
        return Decision(False, self.limit, 0, retry_after)
