"""What the service layer refuses, in no protocol's terms: a stable code (the same word the
HTTP API's {"error": ...} and its OpenAPI document use) and a message saying what to fix.

Each protocol edge turns these into its own answers, in one place each: http_errors.py (a
status, a JSON body, Retry-After) and resp/errors.py (a RESP error reply). The kind of
refusal is the exception's class, so an edge maps classes, never parses codes or messages;
no HTTP status is decided here."""

from __future__ import annotations


class CacheError(Exception):
    """A request refused by the cache, the caller's to see; a subclass says which kind."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message  # settable: a batch prefixes the failing item's position

    def __str__(self) -> str:
        return self.message


class InvalidInput(CacheError):
    """The request itself is wrong (a malformed key, TTL, body...): resending it cannot help."""


class Unauthenticated(CacheError):
    """No credentials, or credentials the node does not accept."""


class Forbidden(CacheError):
    """Credentials accepted, but this caller may not do this here."""


class NotFound(CacheError):
    """The key (or the thing asked for) does not exist."""


class TimedOut(CacheError):
    """The caller did not send its request in time."""


class Conflict(CacheError):
    """The request collides with the current state (a value that is not an integer, a stale
    ring, a profile already running): it may succeed once that state changes."""


class TooLarge(CacheError):
    """A value, a batch or an entry over a limit."""


class Unavailable(CacheError):
    """Not now: no owner could answer, or a write cannot be ordered. Nothing changed, or
    the message says it may have; retrying after `retry_after` seconds is the remedy."""

    def __init__(self, message: str, retry_after: int = 1, code: str = "unavailable") -> None:
        super().__init__(code, message)
        self.retry_after = retry_after


def bad_request(message: str, code: str = "bad_request") -> InvalidInput:
    return InvalidInput(code, message)
