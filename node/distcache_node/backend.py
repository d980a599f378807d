"""The seam between the HTTP layer and where keys live.

Handlers parse and validate, then call a Backend. A single node's backend is its local store;
the cluster's router implements the same protocol by placing keys on the ring.
"""

from __future__ import annotations

from typing import Protocol

from distcache_node.store import Store

Entry = tuple[bytes, float | None]  # encoded JSON value, remaining ttl seconds
Item = tuple[str, bytes, float | None]  # key, encoded JSON value, ttl seconds


class Backend(Protocol):
    async def get(self, key: str) -> Entry | None: ...
    async def set(self, key: str, value: bytes, ttl: float | None) -> None: ...
    async def delete(self, key: str) -> bool: ...
    async def mget(self, keys: list[str]) -> dict[str, Entry]: ...
    async def mset(self, items: list[Item]) -> int: ...
    async def incr(self, key: str, delta: int, ttl: float | None) -> int: ...


class LocalBackend:
    """Every key on this node's own store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def get(self, key: str) -> Entry | None:
        return self.store.get_with_ttl(key)

    async def set(self, key: str, value: bytes, ttl: float | None) -> None:
        self.store.set(key, value, ttl)

    async def delete(self, key: str) -> bool:
        return self.store.delete(key)

    async def mget(self, keys: list[str]) -> dict[str, Entry]:
        return self.store.get_many(keys)

    async def mset(self, items: list[Item]) -> int:
        for key, value, ttl in items:
            self.store.set(key, value, ttl)
        return len(items)

    async def incr(self, key: str, delta: int, ttl: float | None) -> int:
        return self.store.incr(key, delta, ttl)


# A Backend's read_local answer: this node cannot answer alone, ask the owners.
REMOTE = object()
