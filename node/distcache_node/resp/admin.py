"""Server commands: INFO, DBSIZE, COMMAND, CONFIG GET. What they report is true of this
node; what DistCache does not have (persistence, replicas in Redis's sense) is left out or
answered as the nearest truth (no RDB saving, no AOF)."""

from __future__ import annotations

import fnmatch
import os
import time
from importlib import metadata

from distcache_node.resp import replies
from distcache_node.resp.conn import REDIS_VERSION
from distcache_node.resp.errors import RespError
from distcache_node.resp.session import Session

SECTIONS = ("server", "clients", "memory", "stats", "replication", "keyspace")
# What redis-benchmark and some clients ask for at start; DistCache keeps nothing on disk.
CONFIG = {"save": "", "appendonly": "no", "databases": "1"}


def _version() -> str:
    try:
        return metadata.version("distcache")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare tree
        return "unknown"


def _human(n: float) -> str:
    for unit in ("B", "K", "M", "G"):
        if n < 1024:
            return f"{n:.2f}{unit}"
        n /= 1024
    return f"{n:.2f}T"


def _section(s: Session, name: str) -> list[str]:
    svc, store, config = s.svc, s.svc.store, s.svc.config
    if name == "server":
        uptime = int(time.time() - svc.started)
        return [f"redis_version:{REDIS_VERSION}", f"distcache_version:{_version()}",
                "redis_mode:standalone", f"process_id:{os.getpid()}",
                f"run_id:{(svc.config.node_id or 'single').encode().hex()[:40]}",
                f"tcp_port:{config.resp_port}", f"uptime_in_seconds:{uptime}",
                f"uptime_in_days:{uptime // 86400}"]
    if name == "clients":
        return [f"connected_clients:{len(svc.sessions)}",
                f"maxclients:{config.max_connections}"]
    if name == "memory":
        return [f"used_memory:{store.bytes_used}", f"used_memory_human:{_human(store.bytes_used)}",
                f"maxmemory:{store.max_bytes}", f"maxmemory_human:{_human(store.max_bytes)}",
                "maxmemory_policy:allkeys-lru"]
    if name == "stats":
        m = svc.metrics
        return [f"total_connections_received:{svc.connections_received}",
                f"total_commands_processed:{svc.commands_processed}",
                f"rejected_connections:{svc.connections_rejected}",
                f"expired_keys:{store.expirations}", f"evicted_keys:{store.evictions}",
                f"keyspace_hits:{int(m.hits.value)}", f"keyspace_misses:{int(m.misses.value)}"]
    if name == "replication":
        # Every DistCache node takes writes and replicates them itself: no Redis replicas.
        lines = ["role:master", "connected_slaves:0"]
        cluster = svc.cluster
        if cluster is not None:
            lines += ["distcache_cluster:1", f"distcache_node_id:{cluster.id}",
                      f"distcache_replication_factor:{cluster.replication}",
                      f"distcache_ring_version:{cluster.doc.version}"]
        return lines
    if name == "keyspace":  # this node's store: on a cluster, its share and its replicas
        if not len(store):
            return []
        expires, avg_ttl = store.expiring()
        return [f"db0:keys={len(store)},expires={expires},avg_ttl={int(avg_ttl * 1000)}"]
    return []


def info(s: Session, args: list[bytes]) -> bytes:
    wanted = [a.decode(errors="replace").lower() for a in args[1:]]
    if not wanted or any(w in ("all", "everything", "default") for w in wanted):
        wanted = list(SECTIONS)
    parts = []
    for name in SECTIONS:
        if name in wanted:
            parts.append("# " + name.capitalize() + "\r\n"
                         + "".join(line + "\r\n" for line in _section(s, name)))
    return replies.bulk("\r\n".join(parts).encode())


def dbsize(s: Session, args: list[bytes]) -> bytes:
    return replies.integer(len(s.svc.store))


def config(s: Session, args: list[bytes]) -> bytes:
    if args[1].upper() != b"GET":
        raise RespError(f"ERR unknown subcommand '{args[1].decode(errors='replace')}'. "
                        "Try CONFIG HELP.")
    if len(args) < 3:
        raise RespError("ERR wrong number of arguments for 'config|get' command")
    found: dict[str, str] = {}
    for pattern in args[2:]:
        text = pattern.decode(errors="replace").lower()
        found.update({k: v for k, v in CONFIG.items() if fnmatch.fnmatchcase(k, text)})
    return replies.encode(found, s.resp3)


def command(s: Session, args: list[bytes]) -> bytes:
    from distcache_node.resp.commands import TABLE  # the table lists this very command

    sub = args[1].upper() if len(args) > 1 else b""
    if not sub:
        return replies.array(c.info_reply() for c in TABLE.values())
    if sub == b"COUNT":
        return replies.integer(len(TABLE))
    if sub == b"INFO":
        null = replies.null(s.resp3)
        return replies.array(
            TABLE[n.lower()].info_reply() if n.lower() in TABLE else null for n in args[2:])
    if sub == b"DOCS":
        names = [n.lower() for n in args[2:]] or list(TABLE)
        docs = {n.decode(): TABLE[n].docs() for n in names if n in TABLE}
        return replies.encode(docs, s.resp3)
    if sub == b"LIST":
        return replies.array(replies.bulk(n) for n in TABLE)
    raise RespError(f"ERR unknown subcommand '{args[1].decode(errors='replace')}'. "
                    "Try COMMAND HELP.")
