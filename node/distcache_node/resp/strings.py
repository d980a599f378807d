"""The string commands, on the node's Backend (get, set, delete, mget, mset, incr).

Atomicity: GET, SET (plain, EX/PX), MGET, MSET, DEL, INCR and its kin are one Backend call
each, as atomic as the HTTP API's. The others read, then write (SET NX/XX/GET/KEEPTTL,
GETDEL, GETEX, APPEND, EXPIRE, PERSIST, MSETNX): on a single node nothing runs between the
read and the write (LocalBackend never yields to the event loop), so they are atomic there;
on a cluster a write by another client between them can be lost or overwritten, as with any
read-modify-write over the HTTP API. A TTL change rewrites the value with the new TTL.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable

from distcache_node.backend import REMOTE, Entry, Item
from distcache_node.resp import replies
from distcache_node.resp.errors import (
    NOT_INTEGER,
    SYNTAX,
    RespError,
    is_not_integer,
    wrong_arity,
)
from distcache_node.resp.service import MAX_TTL
from distcache_node.resp.session import Session
from distcache_node.resp.values import canonical_int, to_resp, to_stored

Reply = bytes | Awaitable[bytes]
DELETES_AT_ONCE = 64


def _value(s: Session, entry: Entry | None) -> bytes:
    if entry is None:
        s.svc.metrics.misses.value += 1
        return replies.null(s.resp3)
    s.svc.metrics.hits.value += 1
    return replies.bulk(to_resp(entry[0]))


def _int(raw: bytes) -> int:
    number = canonical_int(raw)
    if number is None:
        raise NOT_INTEGER
    return number


def _ttl_of(amount: int, unit: bytes, command: str) -> float:
    """Seconds left for EX/PX (a duration) or EXAT/PXAT (a Unix time); over MAX_TTL or not
    positive for a duration is Redis's 'invalid expire time' (an EXAT in the past is not:
    the key just expires, as in Redis)."""
    at = unit in (b"EXAT", b"PXAT")
    seconds = amount / 1000 if unit in (b"PX", b"PXAT") else float(amount)
    if amount <= 0 or (seconds - time.time() if at else seconds) > MAX_TTL:
        raise RespError(f"ERR invalid expire time in '{command}' command")
    return seconds - time.time() if at else seconds


# --- reads --------------------------------------------------------------------------------
def get(s: Session, args: list[bytes]) -> Reply:
    svc = s.svc
    key = svc.key(args[1])
    entry = svc.lookup(key)
    if entry is REMOTE:
        return _get_remote(s, key)
    return _value(s, entry)


async def _get_remote(s: Session, key: str) -> bytes:
    return _value(s, await s.svc.backend.get(key))


def mget(s: Session, args: list[bytes]) -> Reply:
    svc = s.svc
    keys = svc.keys(args[1:])
    if svc.local is not None:
        return _mget_reply(s, keys, svc.local.get_many(list(dict.fromkeys(keys))))
    return _mget_remote(s, keys)


async def _mget_remote(s: Session, keys: list[str]) -> bytes:
    return _mget_reply(s, keys, await s.svc.backend.mget(list(dict.fromkeys(keys))))


def _mget_reply(s: Session, keys: list[str], found: dict[str, Entry]) -> bytes:
    null = replies.null(s.resp3)
    parts = [b"*%d\r\n" % len(keys)]
    append = parts.append
    hits = 0
    get = found.get
    for key in keys:
        entry = get(key)
        if entry is None:
            append(null)
            continue
        hits += 1
        value = entry[0]
        # A JSON string without escapes, inline: most values (to_resp's first case).
        text = value[1:-1] if value[:1] == b'"' and b"\\" not in value else to_resp(value)
        append(b"$%d\r\n%b\r\n" % (len(text), text))
    s.svc.count_read(hits, len(keys) - hits)
    return b"".join(parts)


async def exists(s: Session, args: list[bytes]) -> bytes:
    svc = s.svc
    keys = svc.keys(args[1:])
    found = await svc.backend.mget(list(dict.fromkeys(keys)))
    return replies.integer(sum(k in found for k in keys))  # a repeated key counts each time


async def strlen(s: Session, args: list[bytes]) -> bytes:
    entry = await s.svc.get(s.svc.key(args[1]))
    return replies.integer(0 if entry is None else len(to_resp(entry[0])))


async def ttl(s: Session, args: list[bytes]) -> bytes:
    entry = await s.svc.get(s.svc.key(args[1]))
    if entry is None:
        return replies.integer(-2)
    if entry[1] is None:
        return replies.integer(-1)
    ms = int(entry[1] * 1000)
    return replies.integer(ms if args[0].upper() == b"PTTL" else (ms + 500) // 1000)


# --- writes -------------------------------------------------------------------------------
def set_(s: Session, args: list[bytes]) -> Reply:
    svc = s.svc
    key, value = svc.key(args[1]), svc.value(args[2])
    condition = expiry = None
    want_old = False
    ttl: float | None = None
    i = 3
    while i < len(args):
        option = args[i].upper()
        if option in (b"NX", b"XX") and condition is None:
            condition = option
        elif option == b"GET" and not want_old:
            want_old = True
        elif option == b"KEEPTTL" and expiry is None:
            expiry = option
        elif option in (b"EX", b"PX", b"EXAT", b"PXAT") and expiry is None and i + 1 < len(args):
            expiry = option
            i += 1
            ttl = _ttl_of(_int(args[i]), option, "set")
        else:
            raise SYNTAX
        i += 1
    if condition is None and not want_old and expiry != b"KEEPTTL":
        if svc.local is not None:
            if ttl is not None and ttl <= 0:
                svc.local.delete(key)
            else:
                svc.local.set(key, value, ttl)
            return replies.OK
        return _set_plain(s, key, value, ttl)
    return _set_with_options(s, key, value, ttl, condition, expiry, want_old)


async def _set_plain(s: Session, key: str, value: bytes, ttl: float | None) -> bytes:
    if ttl is not None and ttl <= 0:
        await s.svc.backend.delete(key)
    else:
        await s.svc.backend.set(key, value, ttl)
    return replies.OK


async def _set_with_options(s: Session, key: str, value: bytes, ttl: float | None,
                            condition: bytes | None, expiry: bytes | None,
                            want_old: bool) -> bytes:
    svc = s.svc
    old = await svc.get(key)
    if (condition == b"NX" and old is not None) or (condition == b"XX" and old is None):
        done = False
    else:
        if expiry == b"KEEPTTL" and old is not None:
            ttl = old[1]
        if ttl is not None and ttl <= 0:
            await svc.backend.delete(key)
        else:
            await svc.backend.set(key, value, ttl)
        done = True
    if want_old:
        return replies.null(s.resp3) if old is None else replies.bulk(to_resp(old[0]))
    return replies.OK if done else replies.null(s.resp3)


async def setex(s: Session, args: list[bytes]) -> bytes:
    svc = s.svc
    command = args[0].decode().lower()
    key, value = svc.key(args[1]), svc.value(args[3])
    ttl = _ttl_of(_int(args[2]), b"PX" if command == "psetex" else b"EX", command)
    await svc.backend.set(key, value, ttl)
    return replies.OK


async def mset(s: Session, args: list[bytes]) -> bytes:
    if len(args) % 2 == 0:
        raise wrong_arity(args[0].decode().lower())
    svc = s.svc
    # Every pair checked before anything is stored: all or nothing, like /mset.
    items: list[Item] = [(svc.key(args[i]), svc.value(args[i + 1]), None)
                         for i in range(1, len(args), 2)]
    if args[0].upper() == b"MSETNX":
        found = await svc.backend.mget(list(dict.fromkeys(k for k, _, _ in items)))
        if found:
            return replies.ZERO
        await svc.backend.mset(items)
        return replies.ONE
    await svc.backend.mset(items)
    return replies.OK


async def delete(s: Session, args: list[bytes]) -> bytes:
    svc = s.svc
    keys = list(dict.fromkeys(svc.keys(args[1:])))
    count = 0
    # The Backend deletes one key a call: at most DELETES_AT_ONCE in flight, so a DEL of
    # 10,000 keys on a cluster is not 10,000 concurrent replications.
    for i in range(0, len(keys), DELETES_AT_ONCE):
        batch = keys[i:i + DELETES_AT_ONCE]
        count += sum(await asyncio.gather(*(svc.backend.delete(k) for k in batch)))
    return replies.integer(count)


async def getdel(s: Session, args: list[bytes]) -> bytes:
    svc = s.svc
    key = svc.key(args[1])
    entry = await svc.get(key)
    if entry is not None:
        await svc.backend.delete(key)
    return _value(s, entry)


async def getex(s: Session, args: list[bytes]) -> bytes:
    svc = s.svc
    key = svc.key(args[1])
    change: tuple[bool, float | None] | None = None  # (whether to change, new ttl)
    if len(args) > 2:
        option = args[2].upper()
        if option == b"PERSIST" and len(args) == 3:
            change = (True, None)
        elif option in (b"EX", b"PX", b"EXAT", b"PXAT") and len(args) == 4:
            change = (True, _ttl_of(_int(args[3]), option, "getex"))
        else:
            raise SYNTAX
    entry = await svc.get(key)
    if entry is not None and change is not None:
        ttl = change[1]
        if ttl is not None and ttl <= 0:
            await svc.backend.delete(key)
        elif ttl is not None or entry[1] is not None:
            await svc.backend.set(key, entry[0], ttl)
    return _value(s, entry)


async def append(s: Session, args: list[bytes]) -> bytes:
    svc = s.svc
    key = svc.key(args[1])
    entry = await svc.get(key)
    text = (b"" if entry is None else to_resp(entry[0])) + args[2]
    await svc.backend.set(key, svc.value(text), None if entry is None else entry[1])
    return replies.integer(len(text))


async def expire(s: Session, args: list[bytes]) -> bytes:
    svc = s.svc
    command = args[0].decode().lower()
    key = svc.key(args[1])
    amount = _int(args[2])
    unit = {"expire": b"EX", "pexpire": b"PX", "expireat": b"EXAT", "pexpireat": b"PXAT"}[command]
    seconds = amount / 1000 if unit in (b"PX", b"PXAT") else float(amount)
    new_ttl = seconds - time.time() if unit in (b"EXAT", b"PXAT") else seconds
    if new_ttl > MAX_TTL:
        raise RespError(f"ERR invalid expire time in '{command}' command")
    flags = {a.upper() for a in args[3:]}
    for flag in args[3:]:
        if flag.upper() not in (b"NX", b"XX", b"GT", b"LT"):
            raise RespError(f"ERR Unsupported option {flag.decode(errors='replace')}")
    if b"NX" in flags and flags & {b"XX", b"GT", b"LT"}:
        raise RespError("ERR NX and XX, GT or LT options at the same time are not compatible")
    if b"GT" in flags and b"LT" in flags:
        raise RespError("ERR GT and LT options at the same time are not compatible")
    entry = await svc.get(key)
    if entry is None:
        return replies.ZERO
    current = entry[1]  # None: no TTL, which GT/LT treat as infinite
    if ((b"NX" in flags and current is not None) or (b"XX" in flags and current is None)
            or (b"GT" in flags and (current is None or new_ttl <= current))
            or (b"LT" in flags and current is not None and new_ttl >= current)):
        return replies.ZERO
    if new_ttl <= 0:
        await svc.backend.delete(key)
    else:
        await svc.backend.set(key, entry[0], new_ttl)
    return replies.ONE


async def persist(s: Session, args: list[bytes]) -> bytes:
    svc = s.svc
    key = svc.key(args[1])
    entry = await svc.get(key)
    if entry is None or entry[1] is None:
        return replies.ZERO
    await svc.backend.set(key, entry[0], None)
    return replies.ONE


async def incr(s: Session, args: list[bytes]) -> bytes:
    svc = s.svc
    command = args[0].upper()
    key = svc.key(args[1])
    delta = 1 if command in (b"INCR", b"DECR") else _int(args[2])
    if command in (b"DECR", b"DECRBY"):
        if delta == -(2**63):
            raise RespError("ERR decrement would overflow")
        delta = -delta
    try:
        return replies.integer(await svc.backend.incr(key, delta, None))
    except Exception as exc:
        if not is_not_integer(exc):
            raise
    # HTTP may have stored the counter as a JSON string ("10"): Redis counts on any
    # integer text, so turn it into the JSON integer once and count again (a read, then a
    # write: see the module docstring for what that means on a cluster).
    entry = await svc.get(key)
    if entry is None or entry[0][:1] != b'"' or canonical_int(to_resp(entry[0])) is None:
        raise NOT_INTEGER
    await svc.backend.set(key, to_stored(to_resp(entry[0])), entry[1])
    return replies.integer(await svc.backend.incr(key, delta, None))
