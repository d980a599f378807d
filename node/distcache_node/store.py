"""The local store: an LRU bounded by bytes, with TTLs.

Values are kept as their encoded JSON bytes: the node never needs the decoded object (except
for /incr), responses can splice the bytes in as they are, and bytes are far smaller in memory
than the Python objects they encode.

Expiry is lazy (checked on every read) and active: a heap of deadlines lets
`expire_due()` free expired keys that nobody reads, without scanning the whole store.

Cluster mode also keeps tombstones: a delete at version v leaves the key behind as an
entry without a value, for TOMBSTONE_SECONDS, so that an older copy still in flight
(a late replication message, a migration batch, a refill) cannot bring the value back. A
tombstone is an ordinary entry for the byte bound: its key and overhead count in
`bytes_used`, it takes its place in the LRU order, and it is evicted like any other entry
when room is needed. Evicting a tombstone is exactly as safe as evicting a key: either way
this node forgets that it saw version v, and an older copy arriving afterwards is stored
(a deleted value comes back here, or an overwritten one does), the price any bounded store
pays. Its other replicas, and the next write of the key, still win over it. Tombstones are
invisible to reads, `len()`, `keys()`, `items()` and `entries()`.

Not thread-safe on purpose: the node runs one event loop and calls it from there only.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator

# Rough per-entry bookkeeping cost in CPython (str and bytes headers, the ordered dict's
# slot and link node). Counting it keeps --max-memory close to what the process really uses.
ENTRY_OVERHEAD = 160
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
TOMBSTONE_SECONDS = 300.0  # how long a delete outvotes an older copy still in flight
# A tombstone's value, told apart by identity: set() stores a fresh copy of every value, so
# no stored value is this object, whatever its content.
_TOMBSTONE = bytes(bytearray(b"<tombstone>"))


class EntryTooLarge(ValueError):
    """One entry alone would not fit in the store."""


class NotAnInteger(ValueError):
    """/incr on a value that is not a JSON integer, or a result outside int64."""


def entry_size(key: str, value: bytes) -> int:
    key_bytes = len(key) if key.isascii() else len(key.encode())
    return key_bytes + len(value) + ENTRY_OVERHEAD


class Store:
    def __init__(
        self, max_bytes: int, clock: Callable[[], float] = time.monotonic,
        track_versions: bool = False, tombstone_seconds: float = TOMBSTONE_SECONDS,
    ) -> None:
        self.max_bytes = max_bytes
        self.clock = clock
        # Values, and tombstones (value b""): one LRU order for both.
        self._data: OrderedDict[str, bytes] = OrderedDict()
        # Tombstone deadlines, in the order they were set: with one fixed lifetime that is
        # also deadline order, so expiry pops from the front.
        self._tombstones: OrderedDict[str, float] = OrderedDict()
        self.tombstone_seconds = tombstone_seconds
        self._deadlines: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []
        # Cluster mode: the write version of each key, so replicas and migrations apply
        # only newer data (last writer wins) whatever order the messages arrive in.
        self._versions: dict[str, int] | None = {} if track_versions else None
        self.bytes_used = 0
        self.evictions = 0
        self.expirations = 0
        # Called with each key the store drops on its own (eviction or expiry).
        self.on_drop: Callable[[str], None] | None = None

    def __len__(self) -> int:
        return len(self._data) - len(self._tombstones)

    def expiring(self, sample: int = 1000) -> tuple[int, float]:
        """Keys with a TTL, and their mean remaining seconds over up to `sample` of them
        (INFO keyspace's expires and avg_ttl; Redis estimates the mean by sampling too)."""
        count = len(self._deadlines)
        if not count:
            return 0, 0.0
        now = self.clock()
        left = [max(0.0, d - now) for d in itertools.islice(self._deadlines.values(), sample)]
        return count, sum(left) / len(left)

    @property
    def tombstones(self) -> int:
        """Tombstones held (unexpired or not yet collected)."""
        return len(self._tombstones)

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None

    def get(self, key: str) -> bytes | None:
        """The value, refreshing its LRU position; None when absent or expired."""
        value = self._data.get(key)
        if value is None or value is _TOMBSTONE:
            return None
        if self._deadlines:
            deadline = self._deadlines.get(key)
            if deadline is not None and deadline <= self.clock():
                self._remove(key)
                self.expirations += 1
                return None
        self._data.move_to_end(key)
        return value

    def ttl(self, key: str) -> float | None:
        """Remaining seconds to live of a present key, None when it never expires."""
        deadline = self._deadlines.get(key)
        if deadline is None:
            return None
        return max(0.0, deadline - self.clock())

    def get_with_ttl(self, key: str) -> tuple[bytes, float | None] | None:
        if self._deadlines:
            value = self.get(key)
            if value is None:
                return None
            return value, self.ttl(key)
        # No key has a TTL, so nothing can have expired: get() without its expiry check,
        # inlined because this is every GET's path.
        value = self._data.get(key)
        if value is None or value is _TOMBSTONE:
            return None
        self._data.move_to_end(key)
        return value, None

    def get_many(self, keys: list[str]) -> dict[str, tuple[bytes, float | None]]:
        """get_with_ttl of each key, for the present ones; one call for a whole /mget."""
        if self._deadlines:
            get = self.get_with_ttl
            return {key: entry for key in keys if (entry := get(key)) is not None}
        data = self._data
        touch = data.move_to_end
        found: dict[str, tuple[bytes, float | None]] = {}
        for key in keys:
            value = data.get(key)
            if value is not None and value is not _TOMBSTONE:
                touch(key)
                found[key] = (value, None)
        return found

    def set(
        self, key: str, value: bytes, ttl: float | None = None, version: int = 0
    ) -> None:
        """Store a value; ttl in seconds (None: no expiry). Evicts LRU entries to make room."""
        size = entry_size(key, value)
        if size > self.max_bytes:
            raise EntryTooLarge(f"entry of {size} bytes exceeds the store's {self.max_bytes}")
        old = self._data.get(key)
        if old is not None:
            self.bytes_used -= entry_size(key, old)
            self._data.move_to_end(key)
            if old is _TOMBSTONE:
                del self._tombstones[key]
        # A copy that is exactly as large as its content: orjson.dumps hands back bytes in a
        # buffer of at least 4 KiB whatever their length, ~4 KiB kept per small value.
        self._data[key] = bytes(memoryview(value))
        self.bytes_used += size
        if ttl is None:
            self._deadlines.pop(key, None)
        else:
            deadline = self.clock() + ttl
            self._deadlines[key] = deadline
            heapq.heappush(self._heap, (deadline, key))
        if self._versions is not None:
            self._versions[key] = version
        if self.bytes_used > self.max_bytes:
            self._evict()

    def version(self, key: str) -> int:
        """Write version of a present key (0 when untracked or absent)."""
        if self._versions is None or self.get(key) is None:
            return 0
        return self._versions.get(key, 0)

    def held_version(self, key: str) -> int:
        """Version of what this store knows of a key: its value's, or its unexpired
        tombstone's; 0 when it knows nothing (or does not track versions)."""
        if self._versions is None:
            return 0
        if key in self._tombstones:
            if self._tombstones[key] <= self.clock():
                self._remove(key)
                return 0
            return self._versions.get(key, 0)
        return self.version(key)

    def apply(self, key: str, value: bytes, ttl: float | None, version: int) -> bool:
        """Set only when `version` is newer than what is held, a tombstone included:
        replication and migration messages may arrive late or twice, and must never undo a
        newer write or delete."""
        if self.held_version(key) >= version and (key in self._data):
            return False
        self.set(key, value, ttl, version)
        return True

    def delete_version(self, key: str, version: int) -> bool:
        """A versioned delete (cluster mode): unless something newer is held, replace the
        key with a tombstone of `version` for `tombstone_seconds`. Returns whether a value
        was removed."""
        if version <= self.held_version(key) and key in self._data:
            return False
        removed = self.get(key) is not None
        old = self._data.get(key)
        if old is not None:
            self._remove(key)
        size = entry_size(key, _TOMBSTONE)
        if size > self.max_bytes:
            return removed
        self._data[key] = _TOMBSTONE
        self._tombstones[key] = self.clock() + self.tombstone_seconds
        if self._versions is not None:
            self._versions[key] = version
        self.bytes_used += size
        if self.bytes_used > self.max_bytes:
            self._evict()
        return removed

    def delete(self, key: str) -> bool:
        """Drop a key with no trace (a tombstone too); returns whether a value was there."""
        if key not in self._data:
            return False
        present = self.get(key) is not None
        if key in self._data:
            self._remove(key)
        return present

    def incr(
        self, key: str, delta: int, ttl: float | None = None, version: int = 0
    ) -> int:
        """Add delta to an integer value (absent counts as 0). ttl applies when the key is new;
        an existing key keeps its expiry, as Redis INCR does."""
        current = self.get(key)
        if current is None:
            number = delta
        else:
            try:
                old = int(current)
            except ValueError:
                raise NotAnInteger(f"value of {key!r} is not an integer") from None
            number = old + delta
            ttl = self.ttl(key)
        if not INT64_MIN <= number <= INT64_MAX:
            raise NotAnInteger("increment would overflow a 64-bit integer")
        self.set(key, str(number).encode(), ttl, version)
        return number

    def expire_due(self, limit: int = 10_000) -> int:
        """Drop up to `limit` keys whose deadline has passed; returns how many."""
        now = self.clock()
        heap, deadlines = self._heap, self._deadlines
        dropped = 0
        while heap and heap[0][0] <= now and dropped < limit:
            deadline, key = heapq.heappop(heap)
            if deadlines.get(key) == deadline:  # not a stale heap entry of an overwritten key
                self._remove(key)
                self.expirations += 1
                dropped += 1
                if self.on_drop is not None:
                    self.on_drop(key)
        tombstones = self._tombstones
        while tombstones and dropped < limit:
            key, deadline = next(iter(tombstones.items()))
            if deadline > now:
                break
            self._remove(key)
            dropped += 1
        # Overwrites leave stale heap entries behind; rebuild when they dominate.
        if len(heap) > 2 * len(deadlines) + 1024:
            self._heap = [(d, k) for k, d in deadlines.items()]
            heapq.heapify(self._heap)
        return dropped

    def items(self) -> Iterator[tuple[str, bytes, float | None]]:
        """Snapshot of live entries (key, value, remaining ttl), oldest first; safe to mutate
        the store while iterating."""
        now = self.clock()
        # Deadlines go into the snapshot too: a key deleted or overwritten while the caller
        # iterates must not come out with ttl None (never expires).
        deadlines = self._deadlines
        snapshot = [(key, value, deadlines.get(key)) for key, value in self._data.items()
                    if value is not _TOMBSTONE]
        for key, value, deadline in snapshot:
            if deadline is None:
                yield key, value, None
            elif deadline > now:
                yield key, value, deadline - now

    def entries(self) -> list[tuple[str, bytes, float | None, int]]:
        """Snapshot of live entries with their versions: what migration streams."""
        versions = self._versions or {}
        return [(k, v, ttl, versions.get(k, 0)) for k, v, ttl in self.items()]

    def deletes(self) -> list[tuple[str, int]]:
        """Snapshot of unexpired tombstones as (key, version): the deletes a refilling
        replica must learn too, or a copy it got earlier outlives the delete."""
        now, versions = self.clock(), self._versions or {}
        return [(k, versions.get(k, 0)) for k, deadline in self._tombstones.items()
                if deadline > now]

    def entry(self, key: str) -> tuple[str, bytes, float | None, int] | None:
        """One live entry as entries() has it, without touching its LRU position (migration
        reads keys to move them, not because anyone wants them)."""
        value = self._data.get(key)
        if value is None or value is _TOMBSTONE:
            return None
        deadline = self._deadlines.get(key)
        ttl = None
        if deadline is not None:
            ttl = deadline - self.clock()
            if ttl <= 0:
                return None
        return key, value, ttl, (self._versions or {}).get(key, 0)

    def keys(self) -> list[str]:
        """Keys with a value, least recently used first."""
        if not self._tombstones:
            return list(self._data)
        return [key for key, value in self._data.items() if value is not _TOMBSTONE]

    def clear(self) -> None:
        self._data.clear()
        self._deadlines.clear()
        self._heap.clear()
        self._tombstones.clear()
        if self._versions is not None:
            self._versions.clear()
        self.bytes_used = 0

    def _remove(self, key: str) -> None:
        value = self._data.pop(key)
        self._deadlines.pop(key, None)
        if value is _TOMBSTONE:
            del self._tombstones[key]
        if self._versions is not None:
            self._versions.pop(key, None)
        self.bytes_used -= entry_size(key, value)

    def _evict(self) -> None:
        while self.bytes_used > self.max_bytes and self._data:
            key, value = self._data.popitem(last=False)
            self._deadlines.pop(key, None)
            if self._versions is not None:
                self._versions.pop(key, None)
            self.bytes_used -= entry_size(key, value)
            if value is _TOMBSTONE:  # no key disappears from view
                del self._tombstones[key]
                continue
            self.evictions += 1
            if self.on_drop is not None:
                self.on_drop(key)
