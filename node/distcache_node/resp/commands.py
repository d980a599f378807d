"""The command table (name -> handler, arity, flags, as Redis's own) and the one way every
command runs: look-up, arity, authentication, rate limit, the handler, its error mapped
to a RESP error, and its metrics."""

from __future__ import annotations

import logging
import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from distcache_node.resp import admin, conn, replies, strings
from distcache_node.resp.errors import NO_AUTH, RespError, from_backend, wrong_arity
from distcache_node.resp.session import Session

log = logging.getLogger("distcache.resp")

Reply = bytes | Awaitable[bytes]
Handler = Callable[[Session, list[bytes]], Reply]
PROTOCOL = "resp"  # the metrics' protocol label


@dataclass(frozen=True)
class Command:
    name: bytes
    handler: Handler
    arity: int  # Redis's: n exactly n arguments (the name included), -n at least n
    flags: tuple[str, ...]  # Redis's flags, for COMMAND INFO
    keys: tuple[int, int, int]  # first key, last key (-1: the last argument), step
    group: str
    summary: str
    syntax: str = ""  # the arguments as Redis documents them, for redis-cli's hints

    @property
    def noauth(self) -> bool:
        """Allowed before AUTH (Redis's no-auth flag: AUTH, HELLO, PING, QUIT)."""
        return "no_auth" in self.flags

    @property
    def limited(self) -> bool:
        """Counted by the per-IP rate limiter: the data commands, as the HTTP data API."""
        return self.group in ("string", "keyspace", "generic")

    def info_reply(self) -> bytes:
        first, last, step = self.keys
        return replies.array([
            replies.bulk(self.name), replies.integer(self.arity),
            replies.array(b"+%b\r\n" % f.encode() for f in self.flags),
            replies.integer(first), replies.integer(last), replies.integer(step),
            replies.array([]), replies.array([]), replies.array([]), replies.array([]),
        ])

    def docs(self) -> dict[str, replies.Value]:
        """COMMAND DOCS: what redis-cli shows as a hint while one types. The arguments are
        one entry holding the syntax line (redis-cli prints an argument's name), not a
        full argument tree."""
        doc: dict[str, replies.Value] = {"summary": self.summary, "since": "1.0.0",
                                  "group": self.group}
        if self.syntax:
            doc["arguments"] = [{"name": self.syntax, "type": "string"}]
        return doc


def _c(name: str, handler: Handler, arity: int, flags: str, keys: tuple[int, int, int],
       group: str, summary: str) -> Command:
    return Command(name.encode(), handler, arity, tuple(flags.split()), keys, group, summary,
                   SYNTAX.get(name, ""))


_EXPIRY = "[EX seconds|PX milliseconds|EXAT unix-time-seconds|PXAT unix-time-milliseconds"
SYNTAX = {
    "get": "key", "set": f"key value [NX|XX] [GET] {_EXPIRY}|KEEPTTL]",
    "setex": "key seconds value", "psetex": "key milliseconds value", "getdel": "key",
    "getex": f"key {_EXPIRY}|PERSIST]", "mget": "key [key ...]",
    "mset": "key value [key value ...]", "msetnx": "key value [key value ...]",
    "append": "key value", "strlen": "key", "incr": "key", "decr": "key",
    "incrby": "key increment", "decrby": "key decrement", "del": "key [key ...]",
    "unlink": "key [key ...]", "exists": "key [key ...]",
    "expire": "key seconds [NX|XX|GT|LT]", "pexpire": "key milliseconds [NX|XX|GT|LT]",
    "expireat": "key unix-time-seconds [NX|XX|GT|LT]",
    "pexpireat": "key unix-time-milliseconds [NX|XX|GT|LT]", "persist": "key",
    "ttl": "key", "pttl": "key", "ping": "[message]", "echo": "message",
    "auth": "[username] password", "select": "index",
    "hello": "[protover [AUTH username password] [SETNAME clientname]]",
    "client": "SETNAME name|GETNAME|ID|SETINFO LIB-NAME|LIB-VER value|INFO|LIST",
    "info": "[section [section ...]]", "command": "[COUNT|INFO|DOCS|LIST [name ...]]",
    "config": "GET parameter [parameter ...]",
}


_K1, _KALL, _KPAIRS, _NOKEY = (1, 1, 1), (1, -1, 1), (1, -1, 2), (0, 0, 0)
_W, _R, _C = "write denyoom", "readonly fast", "fast"
TABLE: dict[bytes, Command] = {c.name: c for c in [
    _c("get", strings.get, 2, _R, _K1, "string", "Get the value of a key"),
    _c("set", strings.set_, -3, _W, _K1, "string", "Set the value of a key, with options"),
    _c("setex", strings.setex, 4, _W, _K1, "string", "Set a value that expires in seconds"),
    _c("psetex", strings.setex, 4, _W, _K1, "string", "Set a value that expires in ms"),
    _c("getdel", strings.getdel, 2, "write fast", _K1, "string", "Get a value, delete the key"),
    _c("getex", strings.getex, -2, "write fast", _K1, "string", "Get a value, change its TTL"),
    _c("mget", strings.mget, -2, "readonly fast", _KALL, "string", "Get the values of keys"),
    _c("mset", strings.mset, -3, _W, _KPAIRS, "string", "Set several keys"),
    _c("msetnx", strings.mset, -3, _W, _KPAIRS, "string", "Set keys only if none exists"),
    _c("append", strings.append, 3, _W, _K1, "string", "Append to a value"),
    _c("strlen", strings.strlen, 2, _R, _K1, "string", "Length of a value"),
    _c("incr", strings.incr, 2, _W, _K1, "string", "Add 1 to an integer"),
    _c("decr", strings.incr, 2, _W, _K1, "string", "Subtract 1 from an integer"),
    _c("incrby", strings.incr, 3, _W, _K1, "string", "Add to an integer"),
    _c("decrby", strings.incr, 3, _W, _K1, "string", "Subtract from an integer"),
    _c("del", strings.delete, -2, "write", _KALL, "keyspace", "Delete keys"),
    _c("unlink", strings.delete, -2, "write fast", _KALL, "keyspace", "Delete keys"),
    _c("exists", strings.exists, -2, "readonly fast", _KALL, "keyspace", "Count keys present"),
    _c("expire", strings.expire, -3, "write fast", _K1, "keyspace", "Set a TTL in seconds"),
    _c("pexpire", strings.expire, -3, "write fast", _K1, "keyspace", "Set a TTL in ms"),
    _c("expireat", strings.expire, -3, "write fast", _K1, "keyspace", "Expire at a Unix time"),
    _c("pexpireat", strings.expire, -3, "write fast", _K1, "keyspace",
       "Expire at a Unix time in ms"),
    _c("persist", strings.persist, 2, "write fast", _K1, "keyspace", "Remove a key's TTL"),
    _c("ttl", strings.ttl, 2, _R, _K1, "keyspace", "Seconds a key has left"),
    _c("pttl", strings.ttl, 2, _R, _K1, "keyspace", "Milliseconds a key has left"),
    _c("dbsize", admin.dbsize, 1, _R, _NOKEY, "server", "Keys held by this node"),
    _c("ping", conn.ping, -1, "fast no_auth", _NOKEY, "connection", "Ping the server"),
    _c("echo", conn.echo, 2, _C, _NOKEY, "connection", "Echo a message"),
    _c("auth", conn.auth, -2, "fast no_auth noscript loading stale", _NOKEY, "connection",
       "Authenticate with the API key"),
    _c("hello", conn.hello, -1, "fast no_auth noscript loading stale", _NOKEY, "connection",
       "Choose RESP2 or RESP3, authenticate, name the connection"),
    _c("quit", conn.quit_, -1, "fast no_auth", _NOKEY, "connection", "Close the connection"),
    _c("select", conn.select, 2, _C, _NOKEY, "connection", "Select database 0 (the only one)"),
    _c("client", conn.client, -2, "", _NOKEY, "connection", "Connection names and info"),
    _c("info", admin.info, -1, "", _NOKEY, "server", "Information about this node"),
    _c("command", admin.command, -1, "", _NOKEY, "server", "Describe the commands"),
    _c("config", admin.config, -2, "", _NOKEY, "server", "CONFIG GET of a few settings"),
]}


def _unknown(args: list[bytes]) -> bytes:
    name = args[0][:128].decode(errors="replace")
    shown = "".join(f"'{a[:128].decode(errors='replace')}' " for a in args[1:])[:128]
    return replies.error(f"ERR unknown command '{name}', with args beginning with: {shown}")


class Cells:
    """One command's metrics cells on a node: counts by outcome and a latency tally."""

    __slots__ = ("bounds", "counts", "error", "ok", "tally")

    def __init__(self, s: Session, name: str) -> None:
        metrics = s.svc.metrics
        self.bounds = metrics.BOUNDS
        self.counts = metrics.command_counts
        self.ok = metrics.command_cell(PROTOCOL, name, "ok")
        self.error = metrics.command_cell(PROTOCOL, name, "error")
        self.tally = metrics.command_tally(PROTOCOL, name)

    def done(self, start: float, ok: bool) -> None:
        self.counts[self.ok if ok else self.error] += 1
        elapsed = time.perf_counter() - start
        tally = self.tally
        tally[bisect_left(self.bounds, elapsed)] += 1  # le: the first bound >= elapsed
        tally[-1] += elapsed


def _cells(s: Session, name: bytes) -> Cells:
    cells = s.svc.cells.get(name)
    if cells is None:
        cells = s.svc.cells[name] = Cells(s, name.decode())
    return cells


def _failure(exc: Exception, args: list[bytes]) -> bytes:
    if isinstance(exc, RespError):
        return replies.error(exc.text)
    mapped = from_backend(exc)
    if mapped is not None:
        return replies.error(mapped.text)
    log.exception("internal error on RESP command %s", args[0][:32].decode(errors="replace"))
    return replies.error("ERR internal error; see the node's log")


def execute(s: Session, args: list[bytes]) -> Reply:
    """Run one command: its reply, or an awaitable of it when the answer is elsewhere."""
    svc = s.svc
    svc.commands_processed += 1
    name = args[0].lower()
    cmd = TABLE.get(name)
    if cmd is None:
        _cells(s, b"unknown").done(time.perf_counter(), False)  # no client-chosen labels
        return _unknown(args)
    s.last_command = name
    cells = _cells(s, name)
    start = time.perf_counter()
    n = len(args)
    if (n != cmd.arity) if cmd.arity > 0 else (n < -cmd.arity):
        cells.done(start, False)
        return replies.error(wrong_arity(name.decode()).text)
    if not s.authed and not cmd.noauth:
        cells.done(start, False)
        return replies.error(NO_AUTH.text)
    if svc.limiter is not None and cmd.limited:
        return _limited(s, cmd, args, cells, start)
    try:
        reply = cmd.handler(s, args)
    except Exception as exc:
        cells.done(start, False)
        return _failure(exc, args)
    if type(reply) is bytes:
        cells.done(start, True)
        return reply
    return _finish(reply, cells, start, args)  # type: ignore[arg-type]


async def _finish(reply: Awaitable[bytes], cells: Cells, start: float,
                  args: list[bytes]) -> bytes:
    try:
        result = await reply
    except Exception as exc:
        cells.done(start, False)
        return _failure(exc, args)
    cells.done(start, True)
    return result


async def _limited(s: Session, cmd: Command, args: list[bytes], cells: Cells,
                   start: float) -> bytes:
    """The per-IP rate limit, then the command. Like HTTP's, the limiter fails open when its
    counters cannot be reached (see pipeline._limit)."""
    svc = s.svc
    assert svc.limiter is not None
    try:
        decision = await svc.limiter.check(s.ip)
    except Exception as exc:
        if from_backend(exc) is None:
            raise
        log.warning("rate limiter unavailable, command let through: %s", exc)
    else:
        if not decision.allowed:
            svc.metrics.rate_limited.inc()
            cells.done(start, False)
            return replies.error(f"ERR too many requests: limit is {decision.limit} per "
                                 f"second; retry in {decision.retry_after} s")
    try:
        reply = cmd.handler(s, args)
        result = reply if isinstance(reply, bytes) else await reply
    except Exception as exc:
        cells.done(start, False)
        return _failure(exc, args)
    cells.done(start, True)
    return result
