"""Typed keys for what the application holds."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from distcache_node.backend import Backend
from distcache_node.config import NodeConfig
from distcache_node.keyfile import KeySet
from distcache_node.metrics import NodeMetrics
from distcache_node.ratelimit import RateLimiter
from distcache_node.store import Store
from distcache_node.tlsreload import CertReloader

if TYPE_CHECKING:
    from distcache_node.cluster.node import ClusterNode

CONFIG = web.AppKey("config", NodeConfig)
STORE = web.AppKey("store", Store)
BACKEND: web.AppKey[Backend] = web.AppKey("backend")
METRICS = web.AppKey("metrics", NodeMetrics)
RATE_LIMITER: web.AppKey[RateLimiter | None] = web.AppKey("rate_limiter")
# The node's view of the cluster when a ring is configured, else None.
CLUSTER: web.AppKey[ClusterNode | None] = web.AppKey("cluster")
READY: web.AppKey[dict[str, Any]] = web.AppKey("ready")  # {"ready": bool, "reason": str}
# Authorises calls to /cluster/* endpoints; raises errors.Forbidden when the caller is not a peer.
PEER_CHECK: web.AppKey[Callable[[web.Request], None]] = web.AppKey("peer_check")
# Keeps the SSL contexts on the certificate files and says what they hold (TLS only).
TLS: web.AppKey[CertReloader | None] = web.AppKey("tls")
# The keys accepted for the data API and from peers (a setting, or files re-read on change).
API_KEYS = web.AppKey("api_keys", KeySet)
PEER_KEYS = web.AppKey("peer_keys", KeySet)

__all__ = ["API_KEYS", "BACKEND", "CLUSTER", "CONFIG", "METRICS", "PEER_CHECK", "PEER_KEYS",
           "RATE_LIMITER", "READY", "STORE", "TLS"]
