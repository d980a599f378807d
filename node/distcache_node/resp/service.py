"""What every RESP connection shares: the node's service layer (the same Backend, API key
set, rate limiter and metrics objects the HTTP edge uses), the bounds, and the checks on
keys and values that HTTP's handlers also make."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from distcache_node import validate
from distcache_node.backend import REMOTE, Backend, Entry, LocalBackend
from distcache_node.config import NodeConfig
from distcache_node.keyfile import KeySet
from distcache_node.metrics import NodeMetrics
from distcache_node.ratelimit import KEY_PREFIX as RESERVED_PREFIX
from distcache_node.ratelimit import RateLimiter
from distcache_node.resp.errors import RespError
from distcache_node.resp.values import to_stored
from distcache_node.store import Store

if TYPE_CHECKING:
    from distcache_node.cluster.node import ClusterNode
    from distcache_node.resp.session import Session

# The HTTP API's bounds, the same objects: ten years is a mistake, not a TTL; a batch
# (MGET, MSET, DEL...) of at most MAX_BATCH keys.
MAX_TTL = validate.MAX_TTL
MAX_BATCH = validate.MAX_BATCH
_RESERVED = RESERVED_PREFIX.encode()


@dataclass
class Service:
    config: NodeConfig
    backend: Backend
    store: Store
    metrics: NodeMetrics
    api_keys: KeySet
    limiter: RateLimiter | None = None
    cluster: ClusterNode | None = None
    started: float = field(default_factory=time.time)
    sessions: dict[int, Session] = field(default_factory=dict)
    ids: Callable[[], int] = field(default_factory=lambda: itertools.count(1).__next__)
    connections_received: int = 0
    connections_rejected: int = 0
    commands_processed: int = 0
    cells: dict[bytes, Any] = field(default_factory=dict)  # commands.Cells by name
    # key -> entry, None or REMOTE: this node's own answer when it settles the read
    lookup: Callable[[str], Any] = field(init=False)
    # A LocalBackend's store: its calls never wait, so the hot commands (SET, MGET) make
    # them without a coroutine and a task each, as handlers.get_handler does for GET.
    local: Store | None = field(init=False)

    def __post_init__(self) -> None:
        backend = self.backend
        if isinstance(backend, LocalBackend):
            self.lookup = backend.store.get_with_ttl
            self.local = backend.store
        else:
            self.lookup = getattr(backend, "read_local", lambda key: REMOTE)
            self.local = None

    @property
    def max_args(self) -> int:
        return 2 * MAX_BATCH + 1  # MSET of a full batch

    def key(self, raw: bytes) -> str:
        """A RESP key as the Backend's str key, with HTTP's rules (validate_key)."""
        limit = self.config.max_key_size
        if len(raw) > limit:
            raise RespError(f"ERR invalid key: {len(raw)} bytes, over the {limit}-byte limit")
        if not raw:
            raise RespError("ERR invalid key: empty")
        try:
            key = raw.decode()
        except UnicodeDecodeError:
            raise RespError("ERR invalid key: DistCache keys are UTF-8 text") from None
        if key.startswith(RESERVED_PREFIX):
            # The rate limiter's counters live here: a client must not reset or poison them.
            raise RespError(f"ERR invalid key: keys starting with {RESERVED_PREFIX!r} "
                            "are reserved")
        return key

    def keys(self, raws: list[bytes]) -> list[str]:
        """key() of each; the common key (plain ASCII within the limit, not reserved)
        checked inline, any other by key() with its messages."""
        limit = self.config.max_key_size
        reserved = _RESERVED
        out = []
        for raw in raws:
            if 0 < len(raw) <= limit and raw.isascii() and not raw.startswith(reserved):
                out.append(raw.decode())
            else:
                out.append(self.key(raw))
        return out

    def value(self, raw: bytes) -> bytes:
        """A RESP value as the stored JSON (values.py), within --max-value-size."""
        stored = to_stored(raw)
        limit = self.config.max_value_size
        if len(stored) > limit:
            raise RespError(f"ERR string exceeds maximum allowed size ({len(stored)} bytes "
                            f"stored, over the {limit}-byte --max-value-size)")
        return stored

    def count_read(self, found: int, missing: int) -> None:
        self.metrics.hits.value += found
        self.metrics.misses.value += missing

    async def get(self, key: str) -> Entry | None:
        entry = self.lookup(key)
        if entry is REMOTE:
            return await self.backend.get(key)
        return entry  # type: ignore[no-any-return]
