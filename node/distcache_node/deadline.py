"""The deadline of the client request being served, where the edge that read it (the HTTP
X-DistCache-Deadline header) put it: a ContextVar, so the core can honour it without knowing
the protocol. Each request is its own task, and so its own context."""

from __future__ import annotations

import time
from contextvars import ContextVar

CURRENT: ContextVar[float | None] = ContextVar("distcache_deadline", default=None)


def late() -> float | None:
    """Seconds past the current request's deadline (<= 0: not yet); None without one."""
    deadline = CURRENT.get()
    return None if deadline is None else time.time() - deadline
