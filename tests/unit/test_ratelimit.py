"""The sliding-window rate limiter, on a fake clock and a LocalBackend over a real Store."""

from __future__ import annotations

import pytest

from distcache_node.backend import LocalBackend
from distcache_node.config import IPNetwork, parse_cidrs
from distcache_node.ratelimit import KEY_PREFIX, Decision, RateLimiter, client_address
from distcache_node.store import Store


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


WINDOW_START = 1_700_000_000.0  # a whole second: the start of a window


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(WINDOW_START)


@pytest.fixture
def store(clock: FakeClock) -> Store:
    # The store runs on the same fake clock, so the counters' TTLs pass with it.
    return Store(max_bytes=1024**2, clock=clock)


def limiter(store: Store, clock: FakeClock, rate: float = 5, burst: int = 0) -> RateLimiter:
    return RateLimiter(LocalBackend(store), rate, burst, clock=clock)


async def decisions(rl: RateLimiter, n: int, client: str = "10.0.0.1") -> list[Decision]:
    return [await rl.check(client) for _ in range(n)]


async def test_allows_limit_requests_then_refuses(store: Store, clock: FakeClock) -> None:
    rl = limiter(store, clock, rate=5)
    allowed = await decisions(rl, 5)
    assert [d.allowed for d in allowed] == [True] * 5
    assert [d.remaining for d in allowed] == [4, 3, 2, 1, 0]
    assert all(d.limit == 5 and d.retry_after == 0 for d in allowed)
    assert allowed[0].headers() == {"X-RateLimit-Limit": "5", "X-RateLimit-Remaining": "4"}

    refused = await rl.check("10.0.0.1")
    assert not refused.allowed
    assert refused.remaining == 0
    assert refused.retry_after == 1
    assert refused.headers() == {
        "X-RateLimit-Limit": "5", "X-RateLimit-Remaining": "0", "Retry-After": "1",
    }


async def test_retry_after_is_at_least_one_second(store: Store, clock: FakeClock) -> None:
    rl = limiter(store, clock, rate=1)
    clock.now = WINDOW_START + 0.999
    assert (await rl.check("c")).allowed
    refused = await rl.check("c")
    assert not refused.allowed
    assert refused.retry_after == 1


async def test_clients_are_counted_apart(store: Store, clock: FakeClock) -> None:
    rl = limiter(store, clock, rate=2)
    assert [d.allowed for d in await decisions(rl, 3, "a")] == [True, True, False]
    assert [d.allowed for d in await decisions(rl, 2, "b")] == [True, True]


async def test_burst_adds_to_the_rate(store: Store, clock: FakeClock) -> None:
    rl = limiter(store, clock, rate=5, burst=3)
    assert rl.limit == 8
    assert [d.allowed for d in await decisions(rl, 9)] == [True] * 8 + [False]


def test_fractional_rate_still_allows_one(store: Store, clock: FakeClock) -> None:
    assert limiter(store, clock, rate=0.5).limit == 1
    assert limiter(store, clock, rate=2.9).limit == 2


async def test_previous_window_is_weighted_by_its_overlap(
    store: Store, clock: FakeClock
) -> None:
    rl = limiter(store, clock, rate=5)
    assert all(d.allowed for d in await decisions(rl, 5))
    # Halfway into the next window the previous 5 weigh 2.5: two more fit, not a third.
    clock.now = WINDOW_START + 1.5
    allowed_next = await decisions(rl, 3)
    assert [d.allowed for d in allowed_next] == [True, True, False]
    assert allowed_next[0].remaining == 1  # floor(5 - (2.5 + 1))
    assert allowed_next[2].retry_after == 1


async def test_late_in_the_next_window_the_previous_counts_little(
    store: Store, clock: FakeClock
) -> None:
    rl = limiter(store, clock, rate=10)
    assert all(d.allowed for d in await decisions(rl, 10))
    clock.now = WINDOW_START + 1.9  # previous 10 weigh 1.0 -> nine more fit
    assert [d.allowed for d in await decisions(rl, 10)] == [True] * 9 + [False]


async def test_no_carry_over_after_two_windows(store: Store, clock: FakeClock) -> None:
    rl = limiter(store, clock, rate=3)
    await decisions(rl, 10)  # hammered: refused requests count too
    clock.now = WINDOW_START + 1.0  # right at the boundary the whole previous window weighs
    assert not (await rl.check("10.0.0.1")).allowed
    clock.now = WINDOW_START + 2.0
    # The previous window (WINDOW_START+1) saw a single request.
    assert [d.allowed for d in await decisions(rl, 3)] == [True, True, False]
    clock.now = WINDOW_START + 10.0
    assert [d.allowed for d in await decisions(rl, 4)] == [True] * 3 + [False]


async def test_counters_live_in_the_cache(store: Store, clock: FakeClock) -> None:
    rl = limiter(store, clock, rate=5)
    await decisions(rl, 3, "192.0.2.7")
    window = int(WINDOW_START)
    key = f"{KEY_PREFIX}192.0.2.7:{window}"
    assert KEY_PREFIX == "__ratelimit__:"
    assert store.keys() == [key]
    assert store.get(key) == b"3"
    assert store.ttl(key) == pytest.approx(2.0)  # two windows: long enough to be 'previous'
    clock.now = WINDOW_START + 1.25
    await rl.check("192.0.2.7")
    assert store.get(f"{KEY_PREFIX}192.0.2.7:{window + 1}") == b"1"
    # The counters expire with the store's own TTLs: nothing is left after a quiet spell.
    clock.now = WINDOW_START + 5
    store.expire_due()
    assert len(store) == 0


async def test_previous_window_counter_read_from_the_store(
    store: Store, clock: FakeClock
) -> None:
    """The limiter holds no state of its own: a counter put in the store (as another node
    of a cluster would) is honoured."""
    window = int(WINDOW_START)
    store.set(f"{KEY_PREFIX}203.0.113.9:{window - 1}", b"4", ttl=2)
    rl = limiter(store, clock, rate=4)
    clock.now = WINDOW_START + 0.5  # previous 4 weigh 2
    assert [d.allowed for d in await decisions(rl, 3, "203.0.113.9")] == [True, True, False]


# --- whom a request counts against ---------------------------------------------------------

TRUSTED = parse_cidrs("127.0.0.1/32, 10.0.0.0/8, fd00::/8")


@pytest.mark.parametrize(("remote", "forwarded", "trusted", "expected"), [
    # No trusted proxies: the header is never read.
    ("203.0.113.9", ["198.51.100.1"], (), "203.0.113.9"),
    # The TCP peer is not a trusted proxy: its X-Forwarded-For is the client's own claim.
    ("203.0.113.9", ["198.51.100.1"], TRUSTED, "203.0.113.9"),
    # Behind a trusted proxy: the address it appended.
    ("127.0.0.1", ["198.51.100.1"], TRUSTED, "198.51.100.1"),
    # The rightmost untrusted hop; what the client wrote on the left is ignored.
    ("127.0.0.1", ["6.6.6.6, 198.51.100.1, 10.1.2.3"], TRUSTED, "198.51.100.1"),
    ("127.0.0.1", ["6.6.6.6", "198.51.100.1 , 10.1.2.3"], TRUSTED, "198.51.100.1"),
    # Only trusted proxies in the chain: the first of them.
    ("127.0.0.1", ["10.0.0.5, 10.0.0.6"], TRUSTED, "10.0.0.5"),
    # No header: the proxy itself.
    ("127.0.0.1", [], TRUSTED, "127.0.0.1"),
    # Ports and brackets, IPv6, and an IPv4 peer seen by a dual-stack socket.
    ("127.0.0.1", ["198.51.100.1:5555"], TRUSTED, "198.51.100.1"),
    ("127.0.0.1", ["[2001:db8::1]:443"], TRUSTED, "2001:db8::1"),
    ("fd00::1", ["2001:db8::2"], TRUSTED, "2001:db8::2"),
    ("::ffff:10.0.0.1", ["198.51.100.1"], TRUSTED, "198.51.100.1"),
    # Garbage written by a trusted proxy: count the last hop we can name.
    ("127.0.0.1", ["unknown, 10.0.0.7"], TRUSTED, "10.0.0.7"),
    (None, ["198.51.100.1"], TRUSTED, "unknown"),
])
def test_client_address(
    remote: str | None, forwarded: list[str], trusted: tuple[IPNetwork, ...], expected: str,
) -> None:
    assert client_address(remote, forwarded, trusted) == expected
