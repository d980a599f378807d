"""The DistCache Kubernetes operator (kopf), a later stage.

Named distcache_operator so that it never shadows the standard library's `operator`.
"""
