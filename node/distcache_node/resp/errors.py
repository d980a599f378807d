"""Errors a RESP client reads: Redis's own wording where Redis has one."""

from __future__ import annotations

from distcache_node.errors import CacheError, Unavailable
from distcache_node.store import EntryTooLarge, NotAnInteger


class RespError(Exception):
    """A command's error reply; `text` is what follows the '-' (its first word the code)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


class FrameError(Exception):
    """The byte stream cannot be read as commands: reply with it, then close the connection
    (what follows the bad frame cannot be told apart from garbage)."""

    commands: list[list[bytes]] = []  # the whole commands read before the break
    at = 0  # parser.scan_frames: where the frames before the break end


SYNTAX = RespError("ERR syntax error")
NOT_INTEGER = RespError("ERR value is not an integer or out of range")
NO_AUTH = RespError("NOAUTH Authentication required.")
WRONG_PASS = RespError("WRONGPASS invalid username-password pair or user is disabled.")


def wrong_arity(name: str) -> RespError:
    return RespError(f"ERR wrong number of arguments for '{name}' command")


def from_backend(exc: Exception) -> RespError | None:
    """What the service layer raised, as a RESP error; None for what is not the client's
    to see (a bug: logged by the caller). The one place that knows the Backend's error types
    (errors.py's kinds, no protocol's)."""
    if isinstance(exc, CacheError):
        if isinstance(exc, Unavailable):
            # Redis Cluster's word for "not now, retry": clients that know it back off.
            return RespError(f"TRYAGAIN {exc.message}")
        if exc.code == "not_an_integer":
            return _not_integer(exc.message)
        return RespError(f"ERR {exc.message}")
    if isinstance(exc, NotAnInteger):
        return _not_integer(str(exc))
    if isinstance(exc, EntryTooLarge):
        return RespError(f"OOM {exc}")
    return None


def is_not_integer(exc: Exception) -> bool:
    """Whether the Backend refused an increment because the value is not an integer (not
    because the result would overflow)."""
    error = from_backend(exc)
    return error is NOT_INTEGER


def _not_integer(message: str) -> RespError:
    if "overflow" in message:
        return RespError("ERR increment or decrement would overflow")
    return NOT_INTEGER
