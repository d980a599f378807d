"""The rules every key and TTL meets, whichever protocol brought it: one place, so the HTTP
edge and the cluster's peer endpoints cannot drift apart. Refusals are errors.InvalidInput,
in no protocol's terms."""

from __future__ import annotations

from typing import Any

from distcache_node.errors import bad_request
from distcache_node.ratelimit import KEY_PREFIX as RESERVED_PREFIX

MAX_TTL = 10 * 365 * 24 * 3600.0  # ten years: anything longer is a mistake, not a TTL
MAX_BATCH = 10_000


def validate_key(
    key: Any, max_size: int, field: str = "key", allow_reserved: bool = False
) -> str:
    """`key` as a stored key: a non-empty string of valid UTF-8 within `max_size` bytes,
    outside the reserved prefix unless `allow_reserved` (peers pass the rate limiter's
    counters between them)."""
    if key is None:
        raise bad_request(f"missing {field!r}", "missing_key")
    if not isinstance(key, str):
        raise bad_request(f"{field!r} must be a string", "invalid_key")
    if not key:
        raise bad_request(f"{field!r} must not be empty", "invalid_key")
    ascii_key = key.isascii()  # the common case: valid UTF-8, one byte a character
    size = len(key) if ascii_key else len(key.encode("utf-8", "surrogatepass"))
    if size > max_size:
        raise bad_request(f"{field!r} is {size} bytes, over the {max_size}-byte limit",
                          "key_too_long")
    if not ascii_key:
        try:
            key.encode()
        except UnicodeEncodeError:
            raise bad_request(f"{field!r} is not valid UTF-8", "invalid_key") from None
    if not allow_reserved and key.startswith(RESERVED_PREFIX):
        # The rate limiter's counters live here: a client must not reset or poison them.
        raise bad_request(f"{field!r}: keys starting with {RESERVED_PREFIX!r} are reserved",
                          "invalid_key")
    return key


def validate_ttl(ttl: Any) -> float | None:
    """A TTL in seconds, None for none; a bool is not a number here."""
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, int | float):
        raise bad_request("'ttl' must be a number of seconds", "invalid_ttl")
    if not 0 < ttl <= MAX_TTL:
        raise bad_request(f"'ttl' must be > 0 and <= {MAX_TTL:.0f} seconds", "invalid_ttl")
    return float(ttl)
