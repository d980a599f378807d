"""Credential comparison shared by the data API and the peer check."""

from __future__ import annotations

import hmac


def keys_match(given: str, expected: str) -> bool:
    """Constant-time comparison. Plain ASCII compares as str; header values that are not
    UTF-8 arrive surrogate-escaped, so anything else compares as raw bytes."""
    if given.isascii() and expected.isascii():
        return hmac.compare_digest(given, expected)
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode())
