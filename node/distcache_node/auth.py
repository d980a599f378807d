"""Credential comparison shared by the data API and the peer check."""

from __future__ import annotations

import hmac
from collections.abc import Iterable


def keys_match(given: str, expected: str) -> bool:
    """Constant-time comparison. Plain ASCII compares as str; header values that are not
    UTF-8 arrive surrogate-escaped, so anything else compares as raw bytes."""
    if given.isascii() and expected.isascii():
        return hmac.compare_digest(given, expected)
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode())


def encode_key(key: str) -> bytes:
    """A key as the bytes `matches_any` compares: header values that are not UTF-8 arrive
    surrogate-escaped, and a key file is read the same way, so both give back their bytes."""
    try:
        return key.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate no decoder made: matches no key read from bytes
        return key.encode("utf-8", "surrogatepass")


def matches_any(given: str, expected: Iterable[bytes]) -> bool:
    """Whether `given` is one of the `expected` keys (encode_key's bytes). Every key is
    compared, each in constant time, so the time taken tells neither which key matched nor
    how much of one did (only how many keys there are, which is no secret)."""
    raw = encode_key(given)
    found = False
    for key in expected:
        found |= hmac.compare_digest(raw, key)
    return found
