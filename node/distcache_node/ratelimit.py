"""Per-client rate limiting with a sliding-window counter kept in the cache itself.

Clients are told apart by IP address: the TCP peer's, or behind a trusted reverse proxy
(--trusted-proxies) the one X-Forwarded-For names (client_address). Each client has one
counter per one-second window, bumped through the backend's atomic incr (so on a cluster
the limit is cluster-wide with no extra code). The estimate weighs the previous window by
how much of it still overlaps the sliding second, as Cloudflare's limiter does: smooth at
window edges, two small counters per client.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from distcache_node.backend import Backend
from distcache_node.config import IPNetwork

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

KEY_PREFIX = "__ratelimit__:"
WINDOW = 1.0


def _address(text: str) -> IPAddress | None:
    """An address from X-Forwarded-For: bare, or with a port ('1.2.3.4:5', '[::1]:5')."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # a dual-stack socket's view of an IPv4 peer
    return address


def client_address(
    remote: str | None, forwarded_for: Sequence[str], trusted: Sequence[IPNetwork]
) -> str:
    """Whom to count a request against. The TCP peer, unless the peer is a trusted proxy:
    then X-Forwarded-For from the right (each proxy appends the address it saw), skipping
    trusted proxies, up to the first address that is not one. Entries left of that are
    whatever the client chose to send, so never believed."""
    peer = _address(remote) if remote else None
    if peer is None:
        return remote or "unknown"
    if not trusted or not any(peer in net for net in trusted):
        return str(peer)
    hops = [hop for value in forwarded_for for hop in value.split(",")]
    client = peer
    for hop in reversed(hops):
        address = _address(hop)
        if address is None:
            break  # garbage from a trusted proxy: count the last proxy that we can name
        client = address
        if not any(address in net for net in trusted):
            break
    return str(client)


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
