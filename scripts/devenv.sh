# Settings of the build and test tooling (sourced by scripts/*.sh, not run).
#
# One namespace per purpose: the node reads DISTCACHE_* as its configuration (DISTCACHE_PORT,
# DISTCACHE_API_KEY, ...), so the tooling's own settings live under DISTCACHE_DEV_*, which the
# node never reads (node/distcache_node/config.py), and the operator's under DISTCACHE_OPERATOR_*.
#   DISTCACHE_DEV_CACHE   build outputs kept outside the clone (default /var/cache/distcache).
#                         DISTCACHE_CACHE, its old name, is still honoured here.
DISTCACHE_DEV_CACHE=${DISTCACHE_DEV_CACHE:-${DISTCACHE_CACHE:-/var/cache/distcache}}
export DISTCACHE_DEV_CACHE
# Every script may write below it straight away (log and lock files): on a fresh machine
# nothing has created it yet.
mkdir -p "$DISTCACHE_DEV_CACHE"
