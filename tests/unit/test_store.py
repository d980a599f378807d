"""The local store: LRU order, the byte bound, TTLs on an injected clock, incr, snapshots."""

from __future__ import annotations

import random
import tracemalloc
from collections import OrderedDict

import pytest

from distcache_node.store import (
    ENTRY_OVERHEAD,
    INT64_MAX,
    INT64_MIN,
    EntryTooLarge,
    NotAnInteger,
    Store,
    entry_size,
)


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def size_of(n: int) -> int:
    """bytes an entry with a one-character key and an n-byte value costs."""
    return entry_size("k", b"x" * n)


# --- LRU order -----------------------------------------------------------------------------


def test_eviction_drops_least_recently_used() -> None:
    store = Store(max_bytes=3 * size_of(10))
    for key in "abc":
        store.set(key, b"x" * 10)
    assert store.keys() == ["a", "b", "c"]
    store.set("d", b"x" * 10)
    assert store.keys() == ["b", "c", "d"]
    assert store.get("a") is None
    assert store.evictions == 1


def test_read_refreshes_recency() -> None:
    store = Store(max_bytes=3 * size_of(10))
    for key in "abc":
        store.set(key, b"x" * 10)
    assert store.get("a") == b"x" * 10  # a becomes the most recently used
    store.set("d", b"x" * 10)
    assert store.keys() == ["c", "a", "d"]  # b, not a, was the least recently used
    assert store.get("a") is not None


def test_overwrite_refreshes_recency() -> None:
    store = Store(max_bytes=3 * size_of(10))
    for key in "abc":
        store.set(key, b"x" * 10)
    store.set("a", b"y" * 10)
    store.set("d", b"x" * 10)
    assert store.keys() == ["c", "a", "d"]
    assert store.get("a") == b"y" * 10


def test_one_big_entry_evicts_as_many_as_needed() -> None:
    store = Store(max_bytes=4 * size_of(10))
    for key in "abcd":
        store.set(key, b"x" * 10)
    store.set("e", b"x" * (2 * size_of(10)))  # needs room of three small entries
    assert store.keys() == ["d", "e"]
    assert store.evictions == 3
    assert store.bytes_used <= store.max_bytes


# --- byte bound ----------------------------------------------------------------------------


def test_entry_larger_than_store_is_refused_without_side_effects() -> None:
    store = Store(max_bytes=1000)
    store.set("keep", b"1")
    before = store.bytes_used
    with pytest.raises(EntryTooLarge):
        store.set("big", b"x" * 1000)
    with pytest.raises(EntryTooLarge):
        store.set("keep", b"x" * 1000)  # a too-large overwrite leaves the old value
    assert store.get("keep") == b"1"
    assert store.bytes_used == before
    assert store.evictions == 0


def test_entry_exactly_the_store_size_fits() -> None:
    store = Store(max_bytes=size_of(100))
    store.set("a", b"1")
    store.set("k", b"x" * 100)
    assert store.keys() == ["k"]
    assert store.bytes_used == store.max_bytes


def test_entry_size_counts_utf8_bytes_of_key() -> None:
    assert entry_size("é", b"12") == 2 + 2 + ENTRY_OVERHEAD
    assert entry_size("ab", b"12") == 2 + 2 + ENTRY_OVERHEAD


def test_overwrite_accounting() -> None:
    store = Store(max_bytes=100_000)
    store.set("k", b"x" * 100)
    assert store.bytes_used == entry_size("k", b"x" * 100)
    store.set("k", b"x" * 10)
    assert store.bytes_used == entry_size("k", b"x" * 10)
    store.set("k", b"x" * 5000)
    assert store.bytes_used == entry_size("k", b"x" * 5000)
    assert len(store) == 1
    assert store.delete("k")
    assert store.bytes_used == 0
    assert len(store) == 0


def test_byte_bound_holds_across_random_sets_and_matches_an_lru_model() -> None:
    """Random sets of varied sizes, deletes and reads, checked against a plain LRU model:
    same keys in the same order, exact byte accounting, never over the bound."""
    rng = random.Random(20240601)
    max_bytes = 20_000
    store = Store(max_bytes=max_bytes)
    model: OrderedDict[str, bytes] = OrderedDict()
    model_evictions = 0
    for _ in range(5000):
        key = f"key-{rng.randrange(150)}"
        action = rng.random()
        if action < 0.65:
            value = b"v" * rng.choice([0, 1, 10, 100, 500, 1500, 4000, 9000])
            store.set(key, value)
            model.pop(key, None)
            model[key] = value
            while sum(entry_size(k, v) for k, v in model.items()) > max_bytes:
                model.popitem(last=False)
                model_evictions += 1
        elif action < 0.85:
            expected = model.get(key)
            if expected is not None:
                model.move_to_end(key)
            assert store.get(key) == expected
        else:
            assert store.delete(key) == (model.pop(key, None) is not None)
        assert store.bytes_used <= max_bytes
        assert store.bytes_used == sum(entry_size(k, v) for k, v in model.items())
        assert store.keys() == list(model)
    assert store.evictions == model_evictions
    assert store.evictions > 100  # the bound really was pressed


def test_on_drop_reports_evictions() -> None:
    store = Store(max_bytes=2 * size_of(10))
    dropped: list[str] = []
    store.on_drop = dropped.append
    for key in "abcd":
        store.set(key, b"x" * 10)
    assert dropped == ["a", "b"]


# --- TTL -----------------------------------------------------------------------------------


def test_lazy_expiry_on_get(clock: FakeClock) -> None:
    store = Store(max_bytes=10_000, clock=clock)
    store.set("k", b"1", ttl=10)
    clock.advance(9.999)
    assert store.get("k") == b"1"
    clock.advance(0.001)
    assert store.get("k") is None
    assert store.expirations == 1
    assert len(store) == 0
    assert store.bytes_used == 0


def test_ttl_remaining(clock: FakeClock) -> None:
    store = Store(max_bytes=10_000, clock=clock)
    store.set("k", b"1", ttl=10)
    store.set("forever", b"1")
    clock.advance(3.5)
    assert store.ttl("k") == pytest.approx(6.5)
    assert store.ttl("forever") is None
    assert store.ttl("absent") is None
    assert store.get_with_ttl("k") == (b"1", pytest.approx(6.5))
    assert store.get_with_ttl("forever") == (b"1", None)
    assert store.get_with_ttl("absent") is None


def test_overwrite_without_ttl_clears_the_deadline(clock: FakeClock) -> None:
    store = Store(max_bytes=10_000, clock=clock)
    store.set("k", b"1", ttl=1)
    store.set("k", b"2")
    clock.advance(5)
    assert store.get("k") == b"2"
    assert store.expire_due() == 0
    assert store.get("k") == b"2"


def test_expire_due_frees_keys_nobody_reads(clock: FakeClock) -> None:
    store = Store(max_bytes=100_000, clock=clock)
    dropped: list[str] = []
    store.on_drop = dropped.append
    for i in range(10):
        store.set(f"short-{i}", b"x" * 50, ttl=1)
    store.set("long", b"x", ttl=100)
    store.set("forever", b"x")
    assert store.expire_due() == 0
    clock.advance(1)
    assert store.expire_due() == 10
    assert store.expirations == 10
    assert sorted(store.keys()) == ["forever", "long"]
    assert store.bytes_used == entry_size("long", b"x") + entry_size("forever", b"x")
    assert sorted(dropped) == sorted(f"short-{i}" for i in range(10))


def test_expire_due_respects_its_batch_limit(clock: FakeClock) -> None:
    store = Store(max_bytes=100_000, clock=clock)
    for i in range(25):
        store.set(f"k{i}", b"x", ttl=1)
    clock.advance(2)
    assert store.expire_due(limit=10) == 10
    assert store.expire_due(limit=10) == 10
    assert store.expire_due(limit=10) == 5
    assert len(store) == 0


def test_stale_heap_entry_does_not_drop_the_new_value(clock: FakeClock) -> None:
    store = Store(max_bytes=10_000, clock=clock)
    store.set("k", b"old", ttl=1)
    clock.advance(0.5)
    store.set("k", b"new", ttl=10)  # the deadline at t+1 stays in the heap, stale
    clock.advance(1)
    assert store.expire_due() == 0
    assert store.get("k") == b"new"
    assert store.expirations == 0
    clock.advance(10)
    assert store.expire_due() == 1
    assert store.get("k") is None


def test_deleted_or_evicted_key_set_again_is_not_dropped_by_old_deadline(
    clock: FakeClock,
) -> None:
    store = Store(max_bytes=10_000, clock=clock)
    store.set("k", b"1", ttl=1)
    store.delete("k")
    store.set("k", b"2")
    clock.advance(2)
    assert store.expire_due() == 0
    assert store.get("k") == b"2"


def test_heap_compaction_after_many_overwrites(clock: FakeClock) -> None:
    store = Store(max_bytes=100_000, clock=clock)
    tracemalloc.start()
    try:
        for _ in range(5000):
            store.set("k", b"1", ttl=100)
        store.set("other", b"1", ttl=50)
        held = tracemalloc.get_traced_memory()[0]
        assert store.expire_due() == 0
        freed = held - tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    # The 4999 superseded deadlines (a heap entry each, 50+ bytes) are dropped: the
    # memory a key's overwrites cost does not grow with their number.
    assert freed > 4999 * 40, freed
    clock.advance(60)
    assert store.expire_due() == 1
    assert store.keys() == ["k"]
    clock.advance(50)
    assert store.expire_due() == 1
    assert len(store) == 0


def test_delete_of_expired_key_reports_false(clock: FakeClock) -> None:
    store = Store(max_bytes=10_000, clock=clock)
    store.set("k", b"1", ttl=1)
    clock.advance(1)
    assert store.delete("k") is False
    assert store.delete("never") is False
    assert len(store) == 0
    assert "k" not in store


# --- incr ----------------------------------------------------------------------------------


def test_incr_absent_starts_at_zero(clock: FakeClock) -> None:
    store = Store(max_bytes=10_000, clock=clock)
    assert store.incr("n", 1) == 1
    assert store.incr("n", 41) == 42
    assert store.incr("m", -5) == -5
    assert store.get("n") == b"42"
    assert store.ttl("n") is None


def test_incr_new_key_takes_ttl(clock: FakeClock) -> None:
    store = Store(max_bytes=10_000, clock=clock)
    store.incr("n", 1, ttl=5)
    assert store.ttl("n") == pytest.approx(5)


def test_incr_keeps_existing_ttl(clock: FakeClock) -> None:
    store = Store(max_bytes=10_000, clock=clock)
    store.set("n", b"10", ttl=10)
    clock.advance(4)
    assert store.incr("n", 1, ttl=1000) == 11  # the given ttl is for new keys only
    assert store.ttl("n") == pytest.approx(6)
    clock.advance(6)
    assert store.get("n") is None
    assert store.incr("n", 1) == 1  # expired counts as absent


def test_incr_existing_key_without_ttl_stays_without(clock: FakeClock) -> None:
    store = Store(max_bytes=10_000, clock=clock)
    store.set("n", b"1")
    store.incr("n", 1, ttl=3)
    assert store.ttl("n") is None


@pytest.mark.parametrize("value", [b'"5"', b"5.0", b"1e3", b"true", b"null", b"[1]", b'{"a":1}'])
def test_incr_non_integer_raises(value: bytes) -> None:
    store = Store(max_bytes=10_000)
    store.set("k", value)
    with pytest.raises(NotAnInteger):
        store.incr("k", 1)
    assert store.get("k") == value


def test_incr_int64_overflow_raises() -> None:
    store = Store(max_bytes=10_000)
    store.set("max", str(INT64_MAX).encode())
    with pytest.raises(NotAnInteger, match="overflow"):
        store.incr("max", 1)
    assert store.get("max") == str(INT64_MAX).encode()
    store.set("min", str(INT64_MIN).encode())
    with pytest.raises(NotAnInteger, match="overflow"):
        store.incr("min", -1)
    assert store.incr("edge", INT64_MAX) == INT64_MAX
    assert store.incr("edge", INT64_MIN) == -1
    with pytest.raises(NotAnInteger):
        store.incr("fresh", INT64_MAX + 1)
    assert store.get("fresh") is None


# --- items() -------------------------------------------------------------------------------


def test_items_snapshot_skips_expired_and_tolerates_mutation(clock: FakeClock) -> None:
    store = Store(max_bytes=10_000, clock=clock)
    store.set("a", b"1")
    store.set("b", b"2", ttl=1)
    store.set("c", b"3", ttl=10)
    clock.advance(2)
    seen = []
    for key, value, ttl in store.items():
        seen.append((key, value, ttl))
        store.set(f"new-{key}", b"x")  # mutating while iterating is allowed
        store.delete("c")
    assert seen[0] == ("a", b"1", None)
    assert seen[1] == ("c", b"3", pytest.approx(8))
    assert len(seen) == 2
    assert all(key != "b" for key, _, _ in seen)


def test_clear_resets_everything(clock: FakeClock) -> None:
    store = Store(max_bytes=10_000, clock=clock)
    store.set("a", b"1", ttl=1)
    store.set("b", b"2")
    store.clear()
    assert len(store) == 0
    assert store.bytes_used == 0
    clock.advance(5)
    assert store.expire_due() == 0


# --- versions and tombstones (cluster mode) -------------------------------------------------


def versioned(clock: FakeClock, max_bytes: int = 100_000, tombstone_seconds: float = 300.0
              ) -> Store:
    return Store(max_bytes=max_bytes, clock=clock, track_versions=True,
                 tombstone_seconds=tombstone_seconds)


def test_apply_keeps_only_the_newest_version(clock: FakeClock) -> None:
    store = versioned(clock)
    assert store.apply("k", b"2", None, 20)
    assert not store.apply("k", b"1", None, 10)  # late and older: ignored
    assert not store.apply("k", b"2", None, 20)  # repeated: nothing to do
    assert store.get("k") == b"2" and store.held_version("k") == 20
    assert store.apply("k", b"3", None, 30)
    assert store.get("k") == b"3"


def test_tombstone_hides_the_key_but_counts_in_the_byte_bound(clock: FakeClock) -> None:
    store = versioned(clock)
    store.apply("k", b"value", None, 10)
    store.apply("other", b"1", None, 10)
    assert store.delete_version("k", 20)  # a value was removed
    assert store.get("k") is None and "k" not in store
    assert len(store) == 1 and store.keys() == ["other"]
    assert [e[0] for e in store.entries()] == ["other"]
    assert store.tombstones == 1
    assert store.bytes_used == entry_size("other", b"1") + entry_size("k", b"<tombstone>")
    assert store.version("k") == 0 and store.held_version("k") == 20


def test_tombstone_outvotes_older_copies_and_yields_to_newer_writes(clock: FakeClock) -> None:
    store = versioned(clock)
    store.apply("k", b"old", None, 10)
    store.delete_version("k", 20)
    assert not store.apply("k", b"old", None, 10)  # a late copy, e.g. still in migration
    assert not store.apply("k", b"older", None, 19)
    assert store.get("k") is None
    assert not store.delete_version("k", 15)  # an older delete changes nothing
    assert store.held_version("k") == 20
    assert store.apply("k", b"new", None, 21)  # a newer write replaces the tombstone
    assert store.get("k") == b"new" and store.tombstones == 0 and len(store) == 1
    assert store.bytes_used == entry_size("k", b"new")


def test_delete_of_a_newer_value_changes_nothing(clock: FakeClock) -> None:
    store = versioned(clock)
    store.apply("k", b"v", None, 30)
    assert not store.delete_version("k", 20)
    assert store.get("k") == b"v" and store.held_version("k") == 30 and store.tombstones == 0


def test_delete_of_an_absent_key_leaves_a_tombstone(clock: FakeClock) -> None:
    store = versioned(clock)
    assert not store.delete_version("k", 20)  # nothing removed...
    assert store.held_version("k") == 20  # ...but the delete is remembered
    assert not store.apply("k", b"late", None, 10)


def test_tombstones_expire_after_their_window(clock: FakeClock) -> None:
    store = versioned(clock, tombstone_seconds=300)
    store.apply("a", b"1", None, 10)
    store.delete_version("a", 20)
    clock.advance(100)
    store.delete_version("b", 20)
    clock.advance(199)
    assert store.expire_due() == 0 and store.tombstones == 2
    assert not store.apply("a", b"late", None, 10)  # still inside the window
    clock.advance(2)
    assert store.expire_due() == 1  # a's window is over, b's is not
    assert store.tombstones == 1 and store.held_version("a") == 0
    assert store.bytes_used == entry_size("b", b"<tombstone>")
    # Lazily too: past b's window an old copy is stored, the tombstone long gone.
    clock.advance(100)
    assert store.apply("b", b"late", None, 10)
    assert store.tombstones == 0 and store.get("b") == b"late"
    assert store.bytes_used == entry_size("b", b"late")


def test_tombstones_take_their_place_in_lru_eviction(clock: FakeClock) -> None:
    size = entry_size("k0", b"x" * 100)
    store = versioned(clock, max_bytes=3 * size)
    for i in range(3):
        store.apply(f"k{i}", b"x" * 100, None, 10)
    store.delete_version("k0", 20)  # k0 becomes a tombstone, the newest entry
    assert store.bytes_used == 2 * size + entry_size("k0", b"<tombstone>")
    store.apply("k3", b"x" * 100, None, 10)
    store.apply("k4", b"x" * 100, None, 10)
    # k1 and k2, older than the tombstone, made room; the tombstone still protects k0.
    assert store.keys() == ["k3", "k4"] and store.tombstones == 1
    assert not store.apply("k0", b"x" * 100, None, 10)
    assert store.evictions == 2
    store.apply("k5", b"x" * 100, None, 10)
    # Now the tombstone was the least recently used: evicted like a key (not counted as an
    # eviction: no key disappeared from view). From here on k0 is unknown, as an evicted
    # key would be, and an old copy is taken.
    assert store.tombstones == 0 and store.keys() == ["k3", "k4", "k5"]
    assert store.bytes_used == 3 * size == store.max_bytes
    assert store.evictions == 2
    assert store.held_version("k0") == 0


def test_many_deletes_stay_within_the_byte_bound(clock: FakeClock) -> None:
    store = versioned(clock, max_bytes=20_000)
    for i in range(1000):
        store.delete_version(f"deleted-key-{i}", 10)
        assert store.bytes_used <= 20_000
    assert store.tombstones < 1000 and len(store) == 0
    store.clear()
    assert store.tombstones == 0 and store.bytes_used == 0


def test_plain_delete_leaves_no_tombstone(clock: FakeClock) -> None:
    store = versioned(clock)
    store.apply("k", b"v", None, 10)
    assert store.delete("k")
    assert store.tombstones == 0 and store.held_version("k") == 0 and store.bytes_used == 0
    store.delete_version("t", 10)
    assert not store.delete("t")  # a tombstone is not a value...
    assert store.tombstones == 0 and store.bytes_used == 0  # ...but goes too


def test_incr_over_a_tombstone_starts_from_zero(clock: FakeClock) -> None:
    store = versioned(clock)
    store.apply("n", b"41", None, 10)
    store.delete_version("n", 20)
    assert store.incr("n", 1, None, 30) == 1
    assert store.tombstones == 0 and store.held_version("n") == 30


def test_versions_and_tombstones_match_a_model_over_random_operations(clock: FakeClock) -> None:
    """Random versioned writes, deletes, plain deletes, reads and time passing, without
    eviction, against a model of last-writer-wins with expiring tombstones."""
    rng = random.Random(6)
    store = versioned(clock, max_bytes=10**9, tombstone_seconds=50)
    # key -> (value or None for a tombstone, version, tombstone deadline)
    model: dict[str, tuple[bytes | None, int, float]] = {}

    def held(key: str) -> int:
        entry = model.get(key)
        if entry is None:
            return 0
        value, version, until = entry
        if value is None and until <= clock.now:
            del model[key]
            return 0
        return version

    for _ in range(20_000):
        key = f"k{rng.randrange(40)}"
        version = rng.randrange(1, 1000)
        action = rng.random()
        if action < 0.4:
            value = b"%d" % rng.randrange(10**6)
            expect = held(key) < version or key not in model
            assert store.apply(key, value, None, version) == expect
            if expect:
                model[key] = (value, version, 0.0)
        elif action < 0.6:
            had = model.get(key)
            newer = held(key) < version or key not in model
            removed = newer and had is not None and had[0] is not None
            assert store.delete_version(key, version) == removed
            if newer:
                model[key] = (None, version, clock.now + 50)
        elif action < 0.65:
            had = model.pop(key, None)
            assert store.delete(key) == (had is not None and had[0] is not None)
        elif action < 0.9:
            entry = model.get(key)
            assert store.get(key) == (entry[0] if entry else None)
        else:
            clock.advance(rng.choice([1, 5, 20]))
            store.expire_due()
            for k in list(model):
                held(k)
        assert store.held_version(key) == held(key)
        live = {k: v for k, (v, _, _) in model.items() if v is not None}
        assert len(store) == len(live) and set(store.keys()) == set(live)
        assert store.tombstones == len(model) - len(live)
        assert store.bytes_used == sum(
            entry_size(k, b"<tombstone>" if v is None else v) for k, (v, _, _) in model.items())
