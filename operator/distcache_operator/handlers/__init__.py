"""The operator's work, called from the thin kopf module (distcache_operator.kopf_main): one
module per concern of a step (secrets, tlsstep, ringload, owned, membership, report), the
step that calls them in order (step), and the loop each DistCache's daemon runs (daemon)."""

from distcache_operator.handlers import daemon
from distcache_operator.handlers.memory import DistCacheMemory, memory_of

__all__ = ["DistCacheMemory", "daemon", "memory_of"]
