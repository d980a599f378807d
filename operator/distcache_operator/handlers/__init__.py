"""The operator's work, called from the thin kopf module (distcache_operator.kopf_main)."""

from distcache_operator.handlers.reconcile import Reconciler, forget, poke

__all__ = ["Reconciler", "forget", "poke"]
