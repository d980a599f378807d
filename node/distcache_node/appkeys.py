"""Typed keys for what the application holds."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from distcache_node.backend import Backend
from distcache_node.config import NodeConfig
from distcache_node.metrics import NodeMetrics
from distcache_node.ratelimit import RateLimiter
from distcache_node.store import Store

if TYPE_CHECKING:
    from distcache_node.cluster.node import ClusterNode

CONFIG = web.AppKey("config", NodeConfig)
STORE = web.AppKey("store", Store)
BACKEND = web.AppKey("backend", Backend)  # type: ignore[type-abstract]
METRICS = web.AppKey("metrics", NodeMetrics)
RATE_LIMITER = web.AppKey("rate_limiter", RateLimiter | None)  # type: ignore[arg-type]
CLUSTER = web.AppKey("cluster", Any)  # ClusterNode when a ring is configured, else None
READY = web.AppKey("ready", dict)  # {"ready": bool, "reason": str}
# Authorises calls to /cluster/* endpoints; raises ApiError when the caller is not a peer.
PEER_CHECK = web.AppKey("peer_check", Callable[[web.Request], None])  # type: ignore[arg-type]

__all__ = ["BACKEND", "CLUSTER", "CONFIG", "METRICS", "PEER_CHECK", "RATE_LIMITER", "READY", "STORE"]
if TYPE_CHECKING:
    __all__ += ["ClusterNode"]
